"""Channel groups traced from torch.fx graphs: the hand-written plans re-derived from torchvision's
models, concatenations, SE gates, grouped convs, what is fixed and why, the report, bad input."""
import copy
import json

import pytest
import torch
import torch.nn as nn
import torchvision
from torch.utils.flop_counter import FlopCounterMode

import slimnet
from slimnet.nn import SlimConv2d, SlimLinear
from slimnet.nn.refs import PerGroup, ref_groups, resolve
from slimnet.trace.macs import macs

SIZE = 64


def tv(name, **kw):
    torch.manual_seed(0)
    return getattr(torchvision.models, name)(weights=None, **kw)


def canonical(pairs, describe):
    """(input, output) refs of the conv / linear layers in order, each group renamed by its first
    appearance (with its channel count), fixed channels as ("fixed", count): equal lists mean the same
    layers share the same groups. ``describe(name) -> (slimmable, channels)``."""
    order, rows = {}, []
    for refs in pairs:
        row = []
        for ref in refs:
            names = ref_groups(ref)
            info = [describe(n) for n in names]
            if isinstance(ref, int) or not all(free for free, _ in info):
                row.append(("fixed", ref if isinstance(ref, int) else sum(c for _, c in info)))
            else:
                row.append(tuple(order.setdefault(n, (len(order), c)) for n, (_, c) in zip(names, info)))
        rows.append(tuple(row))
    return rows, len(order)


def hand_written_structure(name):
    net = slimnet.build(name)
    pairs = [tuple(m.channel_refs()) for m in net.modules() if isinstance(m, (SlimConv2d, SlimLinear))]
    return canonical(pairs, lambda n: (True, net.space[n].max))


def traced_structure(traced):
    pairs = [(layer.input, layer.output) for layer in traced.layers if layer.kind != "norm"]
    return canonical(pairs, lambda n: (traced.groups[n].slimmable, traced.groups[n].channels))


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "mobilenet_v2"])
def test_torchvision_models_derive_the_hand_written_groups(name):
    traced = slimnet.trace_groups(tv(name), input_size=SIZE)
    (want, n_want), (got, n_got) = hand_written_structure(name), traced_structure(traced)
    assert n_got == n_want == len(slimnet.build(name).space) == len(traced.slimmable())
    assert got == want                     # the same layers share groups, with the same channel counts
    assert [g.name for g in traced.fixed()] == ["input", traced.layers[-1].name]


def check_refs_match_modules(model, traced):
    """Every traced ref has the channel count of the module it belongs to."""
    counts = {g.name: g.channels for g in traced.groups.values()}
    modules = dict(model.named_modules())
    for layer in traced.layers:
        m = modules[layer.name]
        n_in, n_out = resolve(layer.input, counts), resolve(layer.output, counts)
        if isinstance(m, nn.Conv2d):
            assert (n_in, n_out) == (m.in_channels, m.out_channels), layer
        elif isinstance(m, nn.Linear):
            assert (n_in * layer.features_per_channel, n_out) == (m.in_features, m.out_features), layer
        else:
            assert n_in == n_out == m.num_features, layer


def test_densenet_concatenations_are_tuple_refs():
    model = tv("densenet121")
    traced = slimnet.trace_groups(model, input_size=SIZE)
    check_refs_match_modules(model, traced)
    assert len(traced.fixed()) == 2 and len(traced.slimmable()) == 120        # every conv's output is a group
    norm1 = traced.layer("features.denseblock1.denselayer3.norm1")
    assert norm1.input == ("features.conv0", "features.denseblock1.denselayer1.conv2",
                           "features.denseblock1.denselayer2.conv2")
    assert traced.layer("features.denseblock1.denselayer3.conv1").input == norm1.input
    assert traced.layer("features.transition1.conv").input[-1] == "features.denseblock1.denselayer6.conv2"


def test_mobilenet_v3_squeeze_excitation_gates_tie_to_their_block():
    model = tv("mobilenet_v3_small")
    traced = slimnet.trace_groups(model, input_size=SIZE)
    check_refs_match_modules(model, traced)
    se = [n for n, m in model.named_modules() if type(m).__name__ == "SqueezeExcitation"]
    assert len(se) == 9
    for name in se:
        fc1, fc2 = traced.layer(f"{name}.fc1"), traced.layer(f"{name}.fc2")
        assert fc2.output == fc1.input                    # the gate's channels are the block's
        hidden = traced.groups[fc1.output]
        assert hidden.slimmable and hidden.producers == (f"{name}.fc1",) and hidden.consumers == (f"{name}.fc2",)
    assert len(traced.fixed()) == 2


def test_resnext_grouped_convs_read_per_group():
    model = tv("resnext50_32x4d")
    traced = slimnet.trace_groups(model, input_size=SIZE)
    check_refs_match_modules(model, traced)
    grouped = [layer for layer in traced.layers if layer.kind == "grouped"]
    assert len(grouped) == 16
    for layer in grouped:
        assert isinstance(layer.input, PerGroup) and layer.input.groups == layer.groups == 32
        assert isinstance(layer.output, PerGroup) and layer.output.groups == 32
        for name in ref_groups(layer.input) + ref_groups(layer.output):
            assert traced.groups[name].multiple_of == 32 and traced.groups[name].slimmable
    # the conv writing a grouped conv's input and the BN after it use the same per-group layout
    assert traced.layer("layer1.0.conv1").output == traced.layer("layer1.0.conv2").input
    assert traced.layer("layer1.0.bn2").input == traced.layer("layer1.0.conv2").output
    assert traced_structure(traced)[1] == len(slimnet.build("resnet50").space)


def test_shufflenet_v2_split_and_shuffle_are_fixed_with_reasons():
    model = tv("shufflenet_v2_x1_0")
    report = slimnet.trace_report(model, input_size=SIZE)
    check_refs_match_modules(model, report.traced)
    reasons = [r for g in report.fixed for _, r in g.fixed]
    assert ("a part of 'chunk' (channel split .chunk() cuts through a channel group (sizes (116,) split into "
            "[58, 58]))") in reasons
    assert ".view() reshapes the channel dim ((1, 116, 8, 8) -> (1, 2, 58, 8, 8))" in reasons  # the shuffle
    # each unit's inner width (branch2's 1x1 -> depthwise -> 1x1) stays slimmable
    inner = report.traced.layer("stage2.0.branch2.0").output
    assert report.traced.groups[inner].slimmable
    assert len(report.slimmable) == 18
    assert "stage2.0.branch2.5" in {g.name for g in report.fixed}


class Gate(nn.Module):
    def forward(self, x):
        if x.sum() > 0:                     # data-dependent control flow: fx cannot trace it
            return x
        return -x


class Small(nn.Module):
    def __init__(self, head_in=2 * 2 * 16):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.gate = Gate()
        self.conv2 = nn.Conv2d(8, 16, 3, stride=4, padding=1)
        self.fc = nn.Linear(head_in, 10)

    def forward(self, x):
        x = self.gate(torch.relu(self.bn1(self.conv1(x))))
        return self.fc(self.conv2(x).flatten(1))


def test_untraceable_control_flow_names_the_module_and_suggests_a_leaf_or_fixed():
    with pytest.raises(slimnet.TraceError) as err:
        slimnet.trace_groups(Small(), input_size=8)
    msg = str(err.value)
    assert "module 'gate' (Gate)" in msg and "x.sum() > 0" in msg and "after graph node 'gt'" in msg
    assert "leaf_modules=['gate']" in msg and "fixed=[...]" in msg
    traced = slimnet.trace_groups(Small(), input_size=8, leaf_modules=["gate"])
    conv1 = traced.groups[traced.layer("conv1").output]
    assert conv1.fixed == (("gate", "module Gate ('gate') is not known to the tracer"),)
    assert traced.layer("conv2").input != "conv1"                        # the leaf's output: its own, fixed
    fc = traced.layer("fc")                                              # flatten of 16 x 2 x 2, channel-major
    assert fc.input == "conv2" and fc.features_per_channel == 4 and traced.groups["conv2"].slimmable
    with pytest.raises(slimnet.TraceError, match="has no module 'gat'"):
        slimnet.trace_groups(Small(), input_size=8, leaf_modules=["gat"])


def test_users_pin_groups_by_layer_or_group_name():
    model = tv("resnet18")
    traced = slimnet.trace_groups(model, input_size=32, fixed=["layer1.0.conv1", "layer2.0.conv2"])
    assert not traced.groups["layer1.0.conv1"].slimmable
    stage2 = traced.groups[traced.layer("layer2.0.conv2").output]
    assert stage2.fixed == (("fixed=", "pinned by the user (fixed=['layer2.0.conv2'])"),)
    assert "layer2.0.downsample.0" in stage2.producers       # the whole residual-tied group is pinned
    assert len(traced.slimmable()) == 10
    with pytest.raises(slimnet.TraceError, match="did you mean 'layer1.0.conv1'"):
        slimnet.trace_groups(model, input_size=32, fixed=["layer1.0.cnv1"])


class Odd(nn.Module):
    """Channel ops the tracer must refuse to slim: a split, a reshape and an unknown function."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 1), nn.Conv2d(4, 8, 1)
        self.c, self.d = nn.Conv2d(8, 6, 1), nn.Conv2d(6, 6, 1)
        self.fc = nn.Linear(6, 2)
        self.scale = nn.Parameter(torch.ones(1, 6, 1, 1))

    def forward(self, x):
        left, _ = self.a(x).split(4, dim=1)                 # cuts the group of a
        y = torch.cumsum(self.b(left), dim=1)
        z = self.c(y) * self.scale
        return self.fc(self.d(z).mean((2, 3)))


def test_unknown_channel_ops_fix_what_they_touch():
    traced = slimnet.trace_groups(Odd(), input_size=4)
    reasons = {n: [r for _, r in g.fixed] for n, g in traced.groups.items()}
    assert reasons["a"] == ["channel split .split() cuts through a channel group (sizes (8,) split into [4, 4])"]
    assert reasons["b"] == ["torch.cumsum is not known to the tracer"]
    assert reasons["c"] == ["combined elementwise with 'scale', whose channels are not a traced feature map's"]
    assert traced.groups["d"].slimmable and traced.layer("fc").input == "d"        # mean over (2, 3) keeps them


def test_report_table_and_dict():
    model = tv("mobilenet_v2").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = slimnet.trace_report(model, input_size=SIZE)
    assert model.training and all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    text = str(report)
    assert text.startswith("MobileNetV2 traced at 64x64: 25 slimmable channel groups, 2 fixed")
    assert "features.18.0" in text and "at 'output': the model's output" in text
    data = json.loads(json.dumps(report.to_dict()))
    assert len(data["slimmable"]) == 25 and data["fixed"][0]["fixed"] == [{"node": "x", "reason": "the model's input"}]
    last = next(g for g in data["slimmable"] if g["name"] == "features.18.0")
    assert last["channels"] == 1280 and last["consumers"] == ["features.18.1", "classifier.1"]
    assert report.fixed_layers == []


def test_a_model_without_convs_is_refused():
    with pytest.raises(slimnet.TraceError, match="no conv or linear layer"):
        slimnet.trace_groups(nn.Sequential(nn.ReLU(), nn.Flatten()), input_size=4)


class Pieces(nn.Module):
    """Splits and slices between the parts of a concatenation (sizes held as constants in the graph),
    and a slice ``[:, :n]`` with ``n`` >= the channels (GhostNet's), which is the whole tensor."""

    def __init__(self, split=True):
        super().__init__()
        self.split = split
        self.a, self.b, self.c = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 6, 1), nn.Conv2d(3, 2, 1)
        self.p, self.q, self.r = nn.Conv2d(4, 4, 1), nn.Conv2d(8, 4, 1), nn.Conv2d(6, 4, 1)
        self.s, self.t = nn.Conv2d(3, 16, 1), nn.Conv2d(32, 4, 1)

    def forward(self, x):
        whole = torch.cat([self.s(x), self.s(x).neg()], 1)[:, :32]
        out = self.t(whole)
        if self.split:
            y = torch.cat([self.a(x), self.b(x), self.c(x)], 1)
            first, rest = torch.split(y, [4, 8], dim=1)
            out = out + self.p(first) + self.q(rest) + self.r(y[:, 4:10])
        return out


def test_splits_and_slices_of_concatenations_fix_the_groups_a_whole_slice_keeps_them():
    """A narrower config would break the constant sizes [4, 8] and 4:10 (the supernet crashed at
    its min config): the concatenated groups are fixed with the reason; the whole-tensor slice is not."""
    traced = slimnet.trace_groups(Pieces(), input_size=4)
    assert traced.layer("q").input != ("b", "c")
    reasons = {r for n in "abc" for _, r in traced.groups[n].fixed}
    assert reasons == {"channel split torch.functional.split into [4, 8] at concatenation boundaries: the traced "
                       "supernet keeps split and slice sizes as traced, so the concatenated groups keep their channels",
                       "slices channels 4:10 at concatenation boundaries: the traced supernet keeps split and slice "
                       "sizes as traced, so the concatenated groups keep their channels"}
    assert traced.layer("t").input == ("s", "s") and traced.groups["s"].slimmable
    torch.manual_seed(0)
    model = Pieces().eval()
    net = slimnet.slimmable(model, 4, min_width=0.5).eval()
    x = torch.randn(2, 3, 4, 4)
    cfg = net.set_channels(net.space.min())
    assert cfg["s"] == 8 and cfg["b"] == 6
    with torch.no_grad():
        assert (net.export(cfg)(x) - net(x)).abs().max().item() <= 1e-6
    assert slimnet.trace_groups(Pieces(split=False), input_size=4).layer("t").input == ("s", "s")


@pytest.mark.parametrize("name, slimmable", [("efficientnet_b0", 40), ("regnet_y_400mf", 53), ("vgg11_bn", 10),
                                             ("squeezenet1_1", 25)])
def test_more_torchvision_models_trace_with_only_input_and_output_fixed(name, slimmable):
    """efficientnet_b0: stem, 7 stage outputs, 15 expand and 16 SE groups, the last conv; regnet_y_400mf:
    SE gates and grouped convs; vgg11_bn: a 7x7 map flattened into the first linear; squeezenet: fire concatenations."""
    model = tv(name)
    traced = slimnet.trace_groups(model, input_size=SIZE)
    check_refs_match_modules(model, traced)
    assert len(traced.slimmable()) == slimmable and len(traced.fixed()) == 2


@pytest.mark.parametrize("name", ["resnext50_32x4d", "mobilenet_v3_small", "densenet121", "shufflenet_v2_x1_0",
                                  "regnet_y_400mf"])
def test_macs_as_traced_are_flop_counter_flops_over_two(name):
    model = tv(name).eval()
    report = slimnet.trace_report(model, input_size=SIZE, min_width=0.5)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, SIZE, SIZE))
    low, high = report.macs
    assert high == counter.get_total_flops() // 2 and 0 < low < high


def test_uniform_width_macs_equal_the_hand_written_resnet18():
    traced = slimnet.trace_groups(tv("resnet18"), input_size=128)
    net = slimnet.build("resnet18", input_size=128)
    for width in (1.0, 0.5, 0.25):
        assert macs(traced, width) == slimnet.profile(net.space, net.space.uniform(width), input_size=128).macs


def test_a_model_that_fails_on_the_example_input_names_the_node():
    with pytest.raises(slimnet.TraceError, match=r"on a \(1, 1, 32, 32\) input failed at node 'conv1' "
                                                 r"\(call_module conv1\): RuntimeError: Given groups=1"):
        slimnet.trace_groups(tv("resnet18"), input_size=32, in_channels=1)
    with pytest.raises(slimnet.TraceError, match="input_size must be a positive int or"):
        slimnet.trace_groups(tv("resnet18"), input_size=0)


def test_report_min_macs_are_the_supernets_uniform_min_width():
    """Groups whose channels are not a multiple of 8 (efficientnet's 10-channel SE squeeze) round
    by the divisor the supernet's space uses, so the report's range is the supernet's."""
    model = tv("efficientnet_b0").eval()
    report = slimnet.trace_report(model, input_size=32, min_width=0.25)
    assert any(g.channels % 8 for g in report.slimmable)
    net = slimnet.slimmable(model, 32, min_width=0.25)
    assert report.macs == (slimnet.profile(net.space, net.space.uniform(0.25)).macs, slimnet.profile(net.space).macs)


class Drops(nn.Module):
    """Stochastic depth as torchvision and timm write it: modules reading ``self.training``."""

    def __init__(self, drop):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.drop = drop
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = self.bn(self.conv(x))
        x = x + self.drop(torch.relu(x))
        return self.fc(x.mean((2, 3)))


def test_stochastic_depth_is_kept_whole_so_it_follows_the_mode():
    """fx would freeze ``self.training`` at tracing: a model traced in train mode would drop samples in
    eval. Kept whole, the supernet of a train-mode model is deterministic in eval and equals the model."""
    from torchvision.ops import StochasticDepth
    torch.manual_seed(0)
    model = Drops(StochasticDepth(0.9, "row")).train()
    with torch.no_grad():          # statistics as if trained (fresh ones are not the max config's)
        model.bn.running_mean.uniform_(-1, 1)
        model.bn.running_var.uniform_(0.5, 2)
    traced = slimnet.trace_groups(model, input_size=8)
    assert traced.groups["conv"].slimmable
    net = slimnet.slimmable(model, 8).eval()
    assert [n.target for n in net.graph.nodes if n.op == "call_module"] == ["conv", "bn", "drop", "fc"]
    x = torch.randn(16, 3, 8, 8)
    with torch.no_grad():
        assert (net(x) - model.eval()(x)).abs().max().item() <= 1e-5


def test_timm_bn_act_and_linear_are_traced_as_standard_layers():
    """timm's BatchNormAct2d (BN, then drop and act) and Linear would be inlined as F.batch_norm /
    F.linear on the parameters (unknown: every group fixed, and the BN frozen in the traced mode):
    they are traced as nn.BatchNorm2d / nn.Linear sharing the parameters, then the children."""
    layers = pytest.importorskip("timm.layers")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), layers.BatchNormAct2d(16, act_layer=nn.ReLU),
                          nn.Conv2d(16, 8, 3, padding=1), layers.BatchNormAct2d(8, act_layer=nn.SiLU),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), layers.Linear(8, 4))
    with torch.no_grad():
        for bn in (model[1], model[3]):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
    traced = slimnet.trace_groups(model, input_size=8)
    assert [g.name for g in traced.slimmable()] == ["0", "2"]
    assert [(u.name, u.kind) for u in traced.layers] == [("0", "conv"), ("1", "norm"), ("2", "conv"), ("3", "norm"),
                                                        ("6", "linear")]
    assert type(model[1]) is layers.BatchNormAct2d and type(model[6]) is layers.Linear     # the model is left alone
    net = slimnet.slimmable(model, 8, min_width=0.5)
    assert {k for k, _ in net.named_parameters()} == {k for k, _ in model.named_parameters()}
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        assert (net.eval()(x) - model.eval()(x)).abs().max().item() <= 1e-5
        twin = copy.deepcopy(model).train()
        assert (net.train()(x) - twin(x)).abs().max().item() <= 1e-5          # batch statistics in train mode
    assert macs(traced) == 8 * 8 * (16 * 3 * 9 + 8 * 16 * 9) + 8 * 4
