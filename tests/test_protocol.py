"""The SlimModule protocol: every slimmable layer kind knows its channel refs, its cost, its plain
counterpart and its weight-decay roles, and profile / export / Layers rely on nothing else (a layer
kind defined outside slimnet works end to end)."""
import inspect
import math
import random
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

import slimnet
from slimnet.calibrate import calibrate_bn
from slimnet.models.base import SlimNet
from slimnet.nn import (
    DECAY_ROLES,
    LayerCost,
    LayerRefs,
    SlimAdaptiveAvgPool2d,
    SlimAvgPool2d,
    SlimBatchNorm2d,
    SlimConv2d,
    SlimLinear,
    SlimModule,
    SwitchableBatchNorm2d,
    decay_roles_of,
    groups_used,
    parameters_with_decay_roles,
    resolve,
)
from slimnet.space import ChannelGroup, make_divisible

MODELS = sorted(slimnet.MODELS)
KNOWN_KINDS = {SlimConv2d, SlimLinear, SlimAdaptiveAvgPool2d, SlimAvgPool2d, SlimBatchNorm2d, SwitchableBatchNorm2d}


def all_subclasses(cls):
    found = set()
    for sub in cls.__subclasses__():
        found |= {sub} | all_subclasses(sub)
    return found


def slim_layers(net):
    return [(name, m) for name, m in net.named_modules() if isinstance(m, SlimModule)]


def test_every_slim_layer_kind_implements_the_protocol():
    kinds = {k for k in all_subclasses(SlimModule) if not k.__name__.startswith("_")}
    assert KNOWN_KINDS <= kinds
    for kind in kinds:
        assert not inspect.isabstract(kind), f"{kind.__name__} misses {sorted(kind.__abstractmethods__)}"


def test_a_layer_missing_a_protocol_method_cannot_be_made():
    class Incomplete(nn.Module, SlimModule):
        def activate(self, cfg):
            pass

    with pytest.raises(TypeError, match="abstract"):
        Incomplete()


@pytest.mark.parametrize("name", MODELS)
def test_refs_and_groups(name):
    net = slimnet.build(name, num_classes=10, input_size=32)
    assert groups_used(net) == set(net.space.names)
    for _, m in slim_layers(net):
        refs = m.channel_refs()
        assert isinstance(refs, LayerRefs)
        if isinstance(m, (SlimConv2d, SlimLinear)):
            assert refs == (m.in_ref, m.out_ref)
        else:
            assert refs.input == refs.output == m.ref


# -- each layer's plain counterpart and cost, checked on the layer's own call ---------------------

def record_calls(net, x):
    """(layer, input, output) of every slimmable layer call of one forward, copied before any
    in-place op downstream changes them."""
    calls = []
    hooks = [m.register_forward_hook(lambda m, i, o: calls.append((m, i[0].clone(), o.clone())))
             for _, m in slim_layers(net)]
    try:
        with torch.no_grad():
            net(x)
    finally:
        for h in hooks:
            h.remove()
    return calls


def flops(module, x):
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        module(x)
    return counter.get_total_flops()


CASES = [(name, "universal") for name in MODELS] + [("resnet20", "switchable"), ("mobilenet_v2", "shared")]


@pytest.mark.parametrize("name, bn", CASES)
def test_plain_layer_computes_the_layer_and_cost_counts_it(name, bn):
    """At a config, each layer's ``plain(cfg)`` filled by ``export_to`` gives the layer's output on
    the layer's input, has the exported child's shapes, and ``cost`` counts it (MACs = flops / 2,
    params = its parameters); the per-layer costs add up to ``profile``."""
    torch.manual_seed(0)
    kwargs = dict(num_classes=10, input_size=32, bn=bn)
    net = slimnet.build(name, **kwargs, **({"switchable": [0.5, 1.0]} if bn == "switchable" else {}))
    cfg = net.space.uniform(0.5) if bn == "switchable" else net.space.random(random.Random(len(name)))
    x = torch.randn(2, 3, 32, 32)
    if bn != "switchable":
        calibrate_bn(net, cfg, [x], num_images=2)
    net.set_channels(cfg)
    net.eval()
    child = dict(slimnet.export(net, cfg).named_modules())
    names = {id(m): n for n, m in slim_layers(net)}
    total = LayerCost(0, 0, 0)
    for layer, inp, out in record_calls(net, x):
        plain = layer.plain(cfg).eval()
        with torch.no_grad():
            layer.export_to(plain)
            torch.testing.assert_close(plain(inp), out, rtol=1e-5, atol=1e-5)
        shapes = {k: v.shape for k, v in plain.state_dict().items()}
        assert shapes == {k: v.shape for k, v in child[names[id(layer)]].state_dict().items()}
        cost = layer.cost(cfg, inp.shape, out.shape)
        assert 2 * cost.macs == flops(plain, inp[:1]), names[id(layer)]
        assert cost.params == sum(p.numel() for p in plain.parameters())
        assert (cost.pool_macs > 0) == isinstance(layer, (SlimAvgPool2d, SlimAdaptiveAvgPool2d))
        total = LayerCost(*(a + b for a, b in zip(total, cost)))
    if bn == "universal":   # profile traces the universal-BN model
        profiled = slimnet.profile(net.space, cfg)
        assert total == (profiled.macs, profiled.params, profiled.pool_macs)


# -- weight decay ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name, bn, child", [("mobilenet_v2", "universal", False), ("shufflenet_v1", "shared", False),
                                             ("resnet20", "switchable", False), ("mobilenet_v2", "universal", True)])
def test_decay_roles_cover_every_parameter(name, bn, child):
    net = slimnet.build(name, num_classes=10, input_size=32, bn=bn,
                        **({"switchable": [0.5, 1.0]} if bn == "switchable" else {}))
    if child:
        net = slimnet.build(name, num_classes=10, input_size=32, channels=net.space.uniform(0.5))
    for module in net.modules():
        roles = decay_roles_of(module)
        assert list(roles) == [n for n, _ in module.named_parameters(recurse=False)]
        assert set(roles.values()) <= set(DECAY_ROLES)
    pairs = list(parameters_with_decay_roles(net))
    assert [id(p) for p, _ in pairs] == [id(p) for p in net.parameters()]
    counts = {role: sum(r == role for _, r in pairs) for role in DECAY_ROLES}
    assert counts["norm"] > 0 and counts["weight"] > 0
    assert (counts["depthwise"] > 0) == (name != "resnet20")
    bias_owners = [m for m in net.modules() if isinstance(getattr(m, "bias", None), nn.Parameter)
                   and not isinstance(m, (nn.BatchNorm2d, SlimBatchNorm2d))]
    assert counts["bias"] == len(bias_owners) > 0    # the classifier's


def _decays_by_kind(module, name, flags) -> bool:
    """The grouping rule written out by module kind (the engine's rule before layers knew their
    roles): norms follow decay_bn, biases decay_bias, depthwise weights decay_depthwise."""
    decay_bn, decay_bias, decay_depthwise = flags
    if isinstance(module, (nn.BatchNorm2d, SlimBatchNorm2d, SwitchableBatchNorm2d)):
        return decay_bn
    if name == "bias":
        return decay_bias
    depthwise = getattr(module, "depthwise", False) or (
        isinstance(module, nn.Conv2d) and 1 < module.groups == module.in_channels == module.out_channels)
    return decay_depthwise if depthwise else True


@pytest.mark.parametrize("flags", [(False, False, False), (True, False, True), (False, True, False)])
def test_training_param_groups_follow_the_decay_rule(flags):
    """train.param_groups (grouping by the layers' roles) decays exactly the parameters the rule
    by module kind says, for supernets (universal and switchable BN) and plain children."""
    from slimnet.train import param_groups

    optim = SimpleNamespace(weight_decay=4e-5, decay_bn=flags[0], decay_bias=flags[1], decay_depthwise=flags[2])
    nets = [slimnet.build("mobilenet_v2", num_classes=10, input_size=32),
            slimnet.build("shufflenet_v1", num_classes=10, input_size=32),
            slimnet.build("mobilenet_v2", num_classes=10, input_size=32, bn="switchable", switchable=[1.0, 0.5])]
    nets.append(slimnet.build("mobilenet_v2", num_classes=10, input_size=32, channels=nets[0].space.uniform(0.5)))
    for net in nets:
        groups = param_groups(net, optim)
        expected = [p for m in net.modules() for n, p in m.named_parameters(recurse=False)
                    if _decays_by_kind(m, n, flags)]
        assert [id(p) for p in groups[0]["params"]] == [id(p) for p in expected]
        assert len(groups[0]["params"]) + len(groups[1]["params"]) == len(list(net.parameters()))
        assert groups[1]["params"], "some parameters never decay (BN at least)"


# -- a layer kind defined outside slimnet -------------------------------------------------------

class ChannelScale(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(channels))

    def forward(self, x):
        return x * self.scale.view(1, -1, 1, 1)


class SlimChannelScale(nn.Module, SlimModule):
    """A learnable per-channel scale: a new layer kind, the protocol and nothing else."""

    def __init__(self, ref, max_channels):
        super().__init__()
        self.ref, self.active = ref, max_channels
        self.scale = nn.Parameter(torch.ones(max_channels))

    def activate(self, cfg):
        self.active = resolve(self.ref, cfg)

    def forward(self, x):
        return x * self.scale[: self.active].view(1, -1, 1, 1)

    def channel_refs(self):
        return LayerRefs(self.ref, self.ref)

    def cost(self, cfg, in_shape, out_shape):
        c = resolve(self.ref, cfg)
        return LayerCost(macs=c * math.prod(out_shape[2:]), params=c, pool_macs=0)

    def plain(self, cfg):
        return ChannelScale(resolve(self.ref, cfg))

    def export_to(self, child):
        child.scale.copy_(self.scale[: self.active])

    def decay_roles(self):
        return {"scale": "norm"}


class ScaledNet(SlimNet):
    model_name = "scaled_toy"

    @classmethod
    def plan(cls, max_width, min_width, **_):
        return SimpleNamespace(groups=[ChannelGroup("c", 16, make_divisible(16 * max_width),
                                                    make_divisible(16 * min_width))])

    def build(self, L, plan, num_classes, in_channels, **_):
        self.conv = L.conv(in_channels, "c", 3)
        self.scale = L.layer(lambda: SlimChannelScale("c", L.max_count("c")))
        self.pool = L.global_pool("c")
        self.fc = L.linear("c", num_classes)

    def trunk(self):
        return [self.conv, self.scale]

    def head(self):
        return self.pool, self.fc


def test_a_new_layer_kind_is_costed_exported_and_grouped_without_touching_slimnet():
    torch.manual_seed(0)
    net = ScaledNet(num_classes=10, input_size=8)
    with torch.no_grad():
        net.scale.scale.copy_(torch.rand(16) + 0.5)
    cfg = net.space.uniform(0.5)
    assert cfg["c"] == 8 and groups_used(net) == {"c"}
    cost = slimnet.profile(net.space, cfg)
    assert cost.macs == 3 * 9 * 8 * 64 + 8 * 64 + 8 * 10
    assert cost.params == 3 * 9 * 8 + 8 + 8 * 10 + 10
    assert cost.pool_macs == 8 * 64
    child = slimnet.export(net, cfg)
    assert type(child.scale) is ChannelScale and child.scale.scale.shape == (8,)
    x = torch.randn(2, 3, 8, 8)
    net.set_channels(cfg)
    torch.testing.assert_close(child(x), net.eval()(x))
    assert dict(parameters_with_decay_roles(net))[net.scale.scale] == "norm"
