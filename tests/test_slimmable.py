"""``slimnet.slimmable``: traced torchvision models as supernets holding their own weights: the max
config reproduces the model, MACs match FlopCounterMode, exported children equal the supernet at
random per-layer configs, a sandwich training step runs; grouped convs and unsupported layers."""
import copy
import random

import pytest
import torch
import torch.nn as nn
import torchvision
from torch.utils.flop_counter import FlopCounterMode

import slimnet
from slimnet.export import check_export
from slimnet.nn import SlimBatchNorm2d, SlimConv2d, SlimLinear
from slimnet.trace.layers import SlimFlattenLinear

SIZE = 32
MODELS = ["resnet18", "mobilenet_v2", "densenet121"]
SMALL = ["grouped", "flatten"]


def tv(name):
    """A torchvision model with random BN statistics, as if trained (a fresh model's are its
    initialisation's, which a supernet does not take as the max config's)."""
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None).eval()
    with torch.no_grad():
        for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
    return model


def images(n=4, size=SIZE, seed=1):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


class GroupedNet(nn.Module):
    """A conv, a grouped conv (4 groups: per-group layout), BN with biased statistics, a classifier."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
        self.grouped = nn.Conv2d(32, 64, 3, stride=2, padding=1, groups=4, bias=True)
        self.bn = nn.BatchNorm2d(64)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = torch.relu(self.bn(self.grouped(self.stem(x))))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class FlattenNet(nn.Module):
    """VGG's head in small: a 2x2 feature map flattened into a linear (4 features per channel); the
    map is a concatenation (``side`` after ``features``), so the linear gathers its columns."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                      nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU())
        self.side = nn.Conv2d(3, 16, 5, stride=4, padding=2)
        self.classifier = nn.Sequential(nn.Linear(192, 24), nn.ReLU(), nn.Linear(24, 10))

    def forward(self, x):
        x = torch.cat([self.features(x), self.side(x)], 1)
        return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 2), 1))


def small_net(name):
    torch.manual_seed(0)
    model = GroupedNet() if name == "grouped" else FlattenNet()
    with torch.no_grad():
        for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.running_mean.uniform_(-1, 1)     # non-trivial statistics, so copying them is tested
            bn.running_var.uniform_(0.5, 2)
    return model.eval()


_CACHE = {}


def pair(name):
    """(original model, its supernet), made once per test module run."""
    if name not in _CACHE:
        model = small_net(name) if name in SMALL else tv(name)
        _CACHE[name] = (model, slimnet.slimmable(model, SIZE, min_width=0.25).eval())
    return _CACHE[name]


@pytest.mark.parametrize("name", MODELS + SMALL)
def test_max_config_reproduces_the_model(name):
    model, net = pair(name)
    x = images()
    assert net.active_config == net.space.max()
    with torch.no_grad():
        assert (net(x) - model(x)).abs().max().item() <= 1e-5
        child = net.export(net.space.max())
        assert (child(x) - model(x)).abs().max().item() <= 1e-5
    # the original keeps its own modules; the supernet's keys are the model's
    assert not any(isinstance(m, (SlimConv2d, SlimLinear, SlimBatchNorm2d)) for m in model.modules())
    params = {k for k, _ in model.named_parameters()}
    assert {k for k, _ in net.named_parameters()} == params
    assert set(child.state_dict()) == set(model.state_dict())


@pytest.mark.parametrize("name", MODELS + SMALL)
def test_profile_at_max_is_flop_counter_half(name):
    model, net = pair(name)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(images(1))
    cost = slimnet.profile(net.space)
    assert cost.macs == counter.get_total_flops() // 2
    assert cost.params == sum(p.numel() for p in model.parameters())
    small = slimnet.profile(net.space, net.space.min())
    assert 0 < small.macs < cost.macs
    assert slimnet.profile(net.space, net.space.uniform(0.25)) == small
    assert slimnet.trace_report(model, SIZE).macs == (small.macs, cost.macs)    # the report's range


@pytest.mark.parametrize("name", MODELS + SMALL)
def test_exported_child_equals_supernet_at_random_configs(name):
    _, net = pair(name)
    x = images(8)
    rng = random.Random(0)
    for cfg in (net.space.random(rng), net.space.random(rng), net.space.min()):
        slimnet.calibrate_bn(net, cfg, x)
        child = net.export(cfg)
        with torch.no_grad():
            out = net.eval()(x)
            assert (child(x) - out).abs().max().item() <= 1e-5
        assert sum(p.numel() for p in child.parameters()) == slimnet.profile(net.space, cfg).params
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            child(images(1))
        assert counter.get_total_flops() // 2 == slimnet.profile(net.space, cfg).macs
    net.set_channels(net.space.max())


@pytest.mark.parametrize("name", MODELS + SMALL)
def test_sandwich_training_step(name):
    model, _ = pair(name)
    net = slimnet.slimmable(model, SIZE)      # a fresh one: this test changes the weights
    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x, y = images(4), torch.randint(0, 10, (4,))
    opt.zero_grad()
    for cfg in (net.space.max(), net.space.min(), net.space.random(random.Random(1))):
        net.set_channels(cfg)
        loss = nn.functional.cross_entropy(net(x), y)
        loss.backward()
        assert torch.isfinite(loss)
    opt.step()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    net.set_width(0.5)
    assert torch.isfinite(net(x)).all()


def test_space_fixed_groups_and_widths():
    _, net = pair("resnet18")
    space = net.space
    assert space["input"].min == space["input"].max == 3
    assert space["fc"].min == space["fc"].max == 1000
    assert space["conv1"].max == 64 and space["conv1"].min == 16
    assert space.uniform(1.0) == space.max()
    half = space.uniform(0.5)
    assert half["layer4.0.conv1"] == 256 and half["fc"] == 1000
    assert net.arch["input_size"] == SIZE and net.arch["max_width"] == 1.0
    _, grouped = pair("grouped")
    assert grouped.space["grouped"].multiple_of == 4
    rng = random.Random(3)
    assert all(grouped.space.random(rng)["grouped"] % 4 == 0 for _ in range(20))
    _, flat = pair("flatten")
    assert flat.traced.layer("classifier.0").features_per_channel == 4
    assert isinstance(flat.get_submodule("classifier.0"), SlimFlattenLinear)
    assert flat.space["features.3"].min == 8 < flat.space["features.3"].max == 32
    assert flat.get_submodule("classifier.0").in_ref == ("features.3", "side")


def test_unsupported_layer_is_named_and_fixed_makes_it_work():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(16, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 10)).eval()
    with pytest.raises(slimnet.TraceError, match=r"'5' \(BatchNorm1d.*fixed=\['5'\]"):
        slimnet.slimmable(model, SIZE)
    net = slimnet.slimmable(model, SIZE, fixed=["4"]).eval()
    assert isinstance(net.get_submodule("5"), nn.BatchNorm1d)     # kept as it is
    x = images()
    with torch.no_grad():
        assert (net(x) - model(x)).abs().max().item() <= 1e-5
    with pytest.raises(ValueError, match="max_width must be >= 1.0"):
        slimnet.slimmable(model, SIZE, max_width=0.75, fixed=["4"])


def test_deepcopy_is_an_independent_supernet():
    _, net = pair("grouped")
    twin = copy.deepcopy(net)
    assert isinstance(twin, slimnet.TracedSupernet) and twin.space is not net.space
    assert twin.space._builder.__self__ is twin and twin.graph.owning_module is twin
    x = images()
    cfg = net.space.random(random.Random(5))
    net.set_channels(cfg)
    twin.set_channels(cfg.channels)
    slimnet.calibrate_bn(net, cfg, x)
    slimnet.calibrate_bn(twin, cfg.channels, x)
    with torch.no_grad():
        assert torch.equal(net(x), twin(x))
        twin.get_submodule("fc").weight.add_(1)
        assert not torch.equal(net(x), twin(x))
    assert slimnet.profile(twin.space) == slimnet.profile(net.space)
    net.set_channels(net.space.max())


class ChannelsLastMLP(nn.Module):
    """ConvNeXt's block in small: linears on the last dim of a permuted (N, H, W, C) map."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.up, self.down = nn.Linear(16, 48), nn.Linear(48, 16)
        self.conv = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = self.stem(x)
        y = self.down(torch.relu(self.up(x.permute(0, 2, 3, 1)))).permute(0, 3, 1, 2)
        x = torch.relu(self.conv(x + y))
        return self.fc(x.mean((2, 3)))


def test_linear_on_channels_last_is_fixed_with_its_own_counts():
    torch.manual_seed(0)
    model = ChannelsLastMLP().eval()
    traced = slimnet.trace_groups(model, SIZE)
    up = traced.layer("up")
    assert all(not traced.groups[g].slimmable for g in (up.input, up.output))
    assert (traced.groups[up.input].channels, traced.groups[up.output].channels) == (16, 48)
    net = slimnet.slimmable(model, SIZE).eval()
    x = images()
    with torch.no_grad():
        assert (net(x) - model(x)).abs().max().item() <= 1e-5
        with FlopCounterMode(display=False) as counter:
            model(images(1))
    assert slimnet.profile(net.space).macs == counter.get_total_flops() // 2
    cfg = net.set_channels(net.space.min())      # no BN: nothing to calibrate
    assert cfg["conv"] == 8 and cfg["stem"] == 16     # the stem is tied to the fixed MLP output
    with torch.no_grad():
        assert (net.export(cfg)(x) - net(x)).abs().max().item() <= 1e-5


class LeafNet(nn.Module):
    """A module kept whole (leaf_modules) and a conv the supernet cannot slim (reflect padding,
    pinned with fixed=): their MACs and parameters are in the profile too."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16))
        self.keep = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1))
        self.reflect = nn.Conv2d(16, 16, 3, padding=1, padding_mode="reflect")
        self.last = nn.Sequential(nn.Conv2d(16, 32, 1), nn.BatchNorm2d(32), nn.ReLU())
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        return self.fc(self.last(self.reflect(self.keep(self.stem(x)))).mean((2, 3)))


def flop_macs(model, x):
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return counter.get_total_flops() // 2


def test_layers_outside_slimmable_ones_are_profiled():
    model = LeafNet().eval()
    net = slimnet.slimmable(model, SIZE, leaf_modules=["keep"], fixed=["reflect"])
    assert slimnet.profile(net.space).macs == flop_macs(model, images(1))
    assert slimnet.profile(net.space).params == sum(p.numel() for p in model.parameters())
    half = net.space.uniform(0.5)
    assert slimnet.profile(net.space, half).macs < slimnet.profile(net.space).macs


def test_a_submodule_named_like_a_supernet_attribute_is_refused():
    model = nn.Sequential()
    model.add_module("space", nn.Conv2d(3, 8, 3))
    model.add_module("pool", nn.AdaptiveAvgPool2d(1))
    model.add_module("flat", nn.Flatten())
    model.add_module("fc", nn.Linear(8, 10))
    with pytest.raises(slimnet.TraceError, match="has a submodule named 'space'"):
        slimnet.slimmable(model, SIZE)


def test_fresh_statistics_are_not_the_max_configs():
    """A model's BN statistics as initialised (mean 0, var 1, no batch seen) describe no data: the
    supernet does not take them as calibrated (eval needs calibration, as for any supernet)."""
    torch.manual_seed(0)
    net = slimnet.slimmable(torchvision.models.resnet18(weights=None), SIZE)
    assert net.calibrated_configs() == []
    with pytest.raises(RuntimeError, match="no BN statistics"):
        net.eval()(images(2))
    assert slimnet.slimmable(tv("resnet18"), SIZE).calibrated_configs() == [net.space.max().key]


def test_state_dict_round_trip_and_slimnet_export():
    model, net = pair("grouped")
    x = images(8)
    cfg = net.space.random(random.Random(7))
    slimnet.calibrate_bn(net, cfg, x)
    fresh = slimnet.slimmable(model, SIZE)
    fresh.load_state_dict(net.state_dict())
    assert fresh.calibrated_configs() == net.calibrated_configs()
    fresh.set_channels(cfg.channels)
    with torch.no_grad():
        assert torch.equal(fresh.eval()(x), net.eval()(x))
    child = slimnet.export(net, cfg)                   # the package's export hands over to net.export
    assert check_export(net, child, cfg, x) <= 1e-5
    net.set_channels(net.space.max())


@pytest.mark.parametrize("name", MODELS + SMALL)
def test_stages_compose_to_the_forward_and_share_the_layers(name):
    _, net = pair(name)
    stages = net.search_stages()
    assert len(stages) > 1
    x = images(2)
    cfg = net.space.random(random.Random(3))
    net.set_channels(cfg)
    with torch.no_grad():
        net.train()           # batch statistics: no calibration needed, and every config runs
        torch.manual_seed(0)  # the same dropout masks
        y = x
        for s in stages:
            y = s(y)
        torch.manual_seed(0)
        assert torch.equal(y, net(x))
    net.eval().set_channels(net.space.max())
    slim_ids = {id(m) for s in stages for m in s.modules() if isinstance(m, SlimConv2d)}
    assert slim_ids == {id(m) for m in net.modules() if isinstance(m, SlimConv2d)}   # the supernet's own


def test_greedy_search_runs_on_a_traced_supernet():
    import warnings

    from slimnet.search.greedy import greedy_slim
    _, net = pair("grouped")
    x, y = images(16), torch.randint(0, 10, (16,))
    budget = slimnet.profile(net.space).macs // 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")      # stages that compose: prefix reuse, no warning
        result = greedy_slim(net, x, y, macs=[budget], prescreen=None, log=lambda *a, **k: None)
    (cfg,) = result.configs.values()
    assert result.finished and slimnet.profile(net.space, cfg).macs <= budget
    assert net.active_config == net.space.max()


class InplaceNet(nn.Module):
    """conv -> BN, then an in-place non-idempotent activation (hardswish) on a tensor that a later
    conv reads too (so no cut falls between them): two convs whose groups start in that stage."""

    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16))
        self.b = nn.Sequential(nn.Conv2d(16, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16))
        self.c = nn.Sequential(nn.Conv2d(16, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16))
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = self.a(x)
        x = torch.cat([self.b(nn.functional.hardswish(x, inplace=True)), self.c(x)], 1)
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class AliasNet(nn.Module):
    """An in-place activation writing through an alias (dropout is the identity in eval) into a
    tensor the residual reads later."""

    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16))
        self.drop, self.act = nn.Dropout(0.1), nn.SiLU(inplace=True)
        self.b = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.Conv2d(32, 16, 3, padding=1),
                               nn.BatchNorm2d(16))
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.a(x)
        x = self.b(self.act(self.drop(x))) + x
        return self.fc(x.mean((2, 3)))


@pytest.mark.parametrize("name", ["inplace", "alias", "mobilenet_v3_small", "resnet18", "shufflenet_v2_x0_5"])
def test_prefix_reuse_scores_equal_full_forwards(name):
    """The search feeds a stage's cached input to every candidate: no stage may write into its
    input in place (``hardswish(x, inplace=True)``, or through an alias), and no stage may end in
    a tuple (ShuffleNet v2's ``chunk``)."""
    from slimnet.search.scorer import CandidateScorer
    torch.manual_seed(0)
    small = {"inplace": InplaceNet, "alias": AliasNet}
    model = small[name]().eval() if name in small else tv(name)
    net = slimnet.slimmable(model, SIZE, min_width=0.25)
    classes = 10 if name in small else 1000
    x, y = images(16), torch.randint(0, classes, (16,), generator=torch.Generator().manual_seed(5))
    fast = CandidateScorer(net, x, y, bn="batch", batch_size=8)
    slow = CandidateScorer(net, x, y, bn="batch", batch_size=8, reuse_prefix=False)
    assert len(fast.stages) > 1
    cur = net.space.max()
    cands = [c for _, c in net.space.slim_candidates(cur)]
    for a, b in zip(fast.score(cur, cands), slow.score(cur, cands)):
        assert a.correct == b.correct and a.loss == pytest.approx(b.loss, rel=1e-5)


def test_the_scorer_refuses_stages_that_write_into_their_input(monkeypatch):
    """The scorer's own check, for any model's stages: with the tracer's in-place rule switched off,
    AliasNet's stages write into a cached input; the search warns and runs full forwards."""
    from slimnet.search.scorer import CandidateScorer
    from slimnet.trace import stages
    monkeypatch.setattr(stages, "_written_in_place", lambda value, modules: False)
    torch.manual_seed(0)
    net = slimnet.slimmable(AliasNet().eval(), SIZE, min_width=0.25)
    x, y = images(8), torch.randint(0, 10, (8,))
    with pytest.warns(UserWarning, match="writes into its input in place"):
        scorer = CandidateScorer(net, x, y, bn="batch", batch_size=8)
    assert scorer.stages == [net]


@pytest.mark.parametrize("name", MODELS + SMALL)
def test_a_wider_supernet_holds_the_model_at_width_one(name):
    """max_width 1.5 (an AutoSlim-style supernet from a model): uniform(1.0) is the model (its
    weights at their places in the wider tensors, its BN statistics as that config's), the extra
    channels train, children export exactly."""
    model = small_net(name) if name in SMALL else tv(name)
    net = slimnet.slimmable(model, SIZE, max_width=1.5, min_width=0.25).eval()
    x = images(4)
    net.set_width(1.0)
    with torch.no_grad():
        assert (net(x) - model(x)).abs().max().item() <= 1e-5
    assert slimnet.profile(net.space).macs > 1.5 * slimnet.profile(net.space, net.space.uniform(1.0)).macs
    cfg = net.space.max()
    slimnet.calibrate_bn(net, cfg, images(8, seed=3))
    assert check_export(net, net.export(cfg), cfg, x) <= 1e-5
    net.train().set_channels(cfg)
    net(x).sum().backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)
