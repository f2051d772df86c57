"""Every architecture: forward/backward at uniform and per-layer configs, switching API, and
architecture equivalence with torchvision (weights loaded one to one, identical outputs)."""
import random

import pytest
import torch
import torchvision

import slimnet
from slimnet.calibrate import calibrate_bn
from slimnet.nn import SlimModule, channel_index
from slimnet.profile import profile

MODELS = sorted(slimnet.MODELS)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def small_net(name, in_channels=3, input_size=32, **kw):
    kw.setdefault("max_width", 1.0)
    kw.setdefault("min_width", 0.25)
    return slimnet.build(name, num_classes=10, in_channels=in_channels, input_size=input_size, **kw)


def configs_to_try(space, seed, n_random=2):
    rng = random.Random(seed)
    return [space.max(), space.min()] + [space.random(rng) for _ in range(n_random)]


@pytest.mark.parametrize("in_channels, size", [(1, 28), (3, 32)])
@pytest.mark.parametrize("name", MODELS)
def test_forward_backward_at_many_configs(name, in_channels, size):
    net = small_net(name, in_channels, size).train()
    x = torch.randn(2, in_channels, size, size)
    n_random = 1 if name in ("resnet34", "resnet50") else 2   # the two big ones: keep the suite fast
    for i, cfg in enumerate(configs_to_try(net.space, seed=in_channels * 100 + size, n_random=n_random)):
        assert net.set_channels(cfg) == cfg and net.active_config == cfg
        net.zero_grad(set_to_none=True)
        out = net(x)
        assert out.shape == (2, 10) and torch.isfinite(out).all(), (name, i)
        out.logsumexp(1).sum().backward()
        grads = [p.grad for p in net.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)
        # the first conv gets a gradient exactly in its active rows (the leading ones, or each
        # group's leading ones in a per-group layout)
        first = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d))
        rows = channel_index(first.out_ref, cfg, net.space.max())
        active = torch.zeros(len(first.weight), dtype=torch.bool)
        active[list(range(cfg["stem"])) if rows is None else list(rows)] = True
        assert first.weight.grad[~active].abs().sum() == 0
        assert (first.weight.grad[active].flatten(1).abs().sum(1) > 0).all()


@pytest.mark.parametrize("name", ["mobilenet_v2", "resnet20", "shufflenet_v1"])
def test_many_uniform_widths(name):
    net = small_net(name).train()
    x = torch.randn(2, 3, 32, 32)
    for w in (0.25, 0.3, 0.35, 0.4, 0.5, 0.6, 0.75, 0.9, 1.0):
        net.set_width(w)
        assert net(x).shape == (2, 10)


def test_wider_than_one_supernet_runs():
    net = small_net("mobilenet_v2", max_width=1.5, min_width=0.35)
    assert net.space.max()["last"] == 1920
    net.set_width(1.5)
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_set_width_is_sugar_for_set_channels_of_uniform():
    net = small_net("mobilenet_v1")
    cfg = net.set_width(0.5)
    assert cfg == net.space.uniform(0.5) and net.active_config == cfg
    modules = [m for m in net.modules() if isinstance(m, SlimModule)]
    state_a = [vars(m).get("active_out", vars(m).get("active")) for m in modules]
    net.set_channels(net.space.max())
    net.set_channels(net.space.uniform(0.5))
    state_b = [vars(m).get("active_out", vars(m).get("active")) for m in modules]
    assert state_a == state_b
    net.set_channels(dict(net.space.uniform(0.75)))   # plain mappings are accepted
    assert net.active_config == net.space.uniform(0.75)


def test_new_supernet_is_at_max_config():
    net = small_net("resnet20")
    assert net.active_config == net.space.max() and not net.is_child


def test_set_channels_on_child_raises():
    net = small_net("resnet20")
    child = slimnet.build("resnet20", num_classes=10, input_size=32, channels=net.space.uniform(0.5))
    assert child.is_child and child.active_config == child.child_config
    assert not any(isinstance(m, SlimModule) for m in child.modules())
    with pytest.raises(RuntimeError, match="exported child with fixed channels; set_channels works on supernets"):
        child.set_channels(child.space.max())
    with pytest.raises(RuntimeError, match="set_channels works on supernets"):
        child.set_width(0.5)


def test_invalid_config_leaves_model_unchanged():
    net = small_net("mobilenet_v2")
    before = net.set_width(0.5)
    with pytest.raises(slimnet.ConfigError):
        net.set_channels({**before.channels, "stem": 1000})
    assert net.active_config == before


def test_supernets_are_independent():
    """No global width state: two supernets at different configs run side by side."""
    a, b = small_net("mobilenet_v1"), small_net("mobilenet_v1")
    a.set_width(0.25)
    b.set_width(1.0)
    x = torch.randn(1, 3, 32, 32)
    a(x)
    assert a.active_config == a.space.uniform(0.25) and b.active_config == b.space.max()


# -- architecture equivalence with torchvision --------------------------------------------

def load_in_order(ours: torch.nn.Module, theirs: torch.nn.Module):
    """Copy ``theirs``' state dict into ``ours`` entry by entry, in order; shapes must match one
    to one (so the two architectures are the same layer for layer)."""
    src, dst = theirs.state_dict(), ours.state_dict()
    assert len(src) == len(dst)
    mapped = {}
    for (k_dst, v_dst), (k_src, v_src) in zip(dst.items(), src.items()):
        assert v_dst.shape == v_src.shape, (k_dst, k_src)
        mapped[k_dst] = v_src
    ours.load_state_dict(mapped)


def _randomise_bn(model):
    """Non-trivial BN statistics and affine parameters, so a BN mismatch would show."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


@pytest.mark.parametrize("name, width, make_tv", [
    ("mobilenet_v2", 1.0, lambda: torchvision.models.mobilenet_v2(width_mult=1.0)),
    ("mobilenet_v2", 0.5, lambda: torchvision.models.mobilenet_v2(width_mult=0.5)),
    ("resnet18", 1.0, lambda: torchvision.models.resnet18()),
])
@torch.no_grad()
def test_exported_child_equals_torchvision_model(name, width, make_tv):
    # input_size=224 selects the ImageNet architecture; the forward itself runs at 64x64
    net = slimnet.build(name, num_classes=1000, input_size=224, max_width=1.0, min_width=0.35)
    calibrate_bn(net, net.space.uniform(width), [torch.randn(2, 3, 64, 64)], num_images=2)
    child = slimnet.export(net, net.space.uniform(width))
    tv = make_tv().eval()
    _randomise_bn(tv)
    load_in_order(child, tv)
    child.eval()
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(child(x), tv(x), rtol=0, atol=1e-5)


@torch.no_grad()
def test_mobilenet_v2_downsample_option():
    """downsample='imagenet' keeps torchvision's strides at 28x28 (the study's CPU model): same
    outputs as torchvision's model; 'small' / 'auto' drop two strides there; bad values fail."""
    net = slimnet.build("mobilenet_v2", num_classes=10, input_size=28, max_width=1.0, min_width=0.35,
                        downsample="imagenet")
    calibrate_bn(net, net.space.uniform(0.5), [torch.randn(4, 3, 28, 28)], num_images=4)
    child = slimnet.export(net, net.space.uniform(0.5))
    tv = torchvision.models.mobilenet_v2(width_mult=0.5, num_classes=10).eval()
    _randomise_bn(tv)
    load_in_order(child, tv)
    child.eval()
    x = torch.randn(2, 3, 28, 28)
    torch.testing.assert_close(child(x), tv(x), rtol=0, atol=1e-5)
    small = slimnet.build("mobilenet_v2", num_classes=10, input_size=28, downsample="small")
    auto = slimnet.build("mobilenet_v2", num_classes=10, input_size=28)
    big = profile(net.space).macs
    assert profile(small.space).macs == profile(auto.space).macs == pytest.approx(16 * big, rel=0.2)
    with pytest.raises(ValueError, match="downsample must be"):
        slimnet.build("mobilenet_v2", num_classes=10, input_size=28, downsample="cifar")


# -- MobileNet v1 against an independent reference written from the paper ---------------------

# Howard et al. 2017, Table 1: (layer, stride, output channels at width 1.0); a depthwise conv
# keeps its input channels. The last depthwise conv is listed as "s2" with a 7x7 input and a 7x7
# output: stride 1, as its sizes say. Every conv is followed by BN and the activation.
TABLE1 = ([("conv", 2, 32), ("dw", 1, None), ("pw", 1, 64), ("dw", 2, None), ("pw", 1, 128),
           ("dw", 1, None), ("pw", 1, 128), ("dw", 2, None), ("pw", 1, 256), ("dw", 1, None),
           ("pw", 1, 256), ("dw", 2, None), ("pw", 1, 512)]
          + [("dw", 1, None), ("pw", 1, 512)] * 5
          + [("dw", 2, None), ("pw", 1, 1024), ("dw", 1, None), ("pw", 1, 1024)])


def table1_mobilenet_v1(alpha, act=torch.nn.ReLU6, num_classes=1000):
    """Plain torch MobileNet v1 at width multiplier ``alpha`` (channels int(c * alpha), the paper's
    rule; equal to the make_divisible rule at 1.0 / 0.75 / 0.5 / 0.25)."""
    nn = torch.nn
    layers, c = [], 3
    for kind, stride, out in TABLE1:
        out = c if kind == "dw" else int(out * alpha)
        k = 1 if kind == "pw" else 3
        layers += [nn.Conv2d(c, out, k, stride, k // 2, groups=c if kind == "dw" else 1, bias=False),
                   nn.BatchNorm2d(out), act()]
        c = out
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes))


@torch.no_grad()
def test_mobilenet_v1_equals_table1_reference_with_relu6():
    """ReLU6 by default: at every listed width the supernet (train mode, batch statistics) and its
    exported child (eval mode) compute the reference's logits from the same weights; the ReLU
    variant (act='relu') is a different network at the same weights."""
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    nets = {act: slimnet.build("mobilenet_v1", num_classes=1000, input_size=224, min_width=0.25, bn="shared",
                               act=act).double() for act in ("relu6", "relu")}
    nets["relu"].load_state_dict(nets["relu6"].state_dict())
    g = torch.Generator().manual_seed(3)
    for net in nets.values():          # the same non-trivial BN affine and running stats in both
        for m in net.modules():
            if isinstance(m, slimnet.nn.SlimBatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g, dtype=torch.float64) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g, dtype=torch.float64) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g, dtype=torch.float64) + 0.5)
    net, relu = nets["relu6"], nets["relu"]
    assert net.arch["act"] == "relu6" and relu.arch["act"] == "relu"
    for width in (1.0, 0.75, 0.5, 0.25):
        net.set_width(width)
        relu.set_width(width)
        child = slimnet.export(net, net.space.uniform(width))
        assert child.classifier.weight.dtype == torch.float64
        ref = table1_mobilenet_v1(width).double()
        load_in_order(ref, child)
        torch.testing.assert_close(child(x), ref.eval()(x), rtol=0, atol=1e-10)
        torch.testing.assert_close(net.train()(x), ref.train()(x), rtol=0, atol=1e-10)
        assert (relu.train()(x) - ref.train()(x)).abs().max() > 1e-3, width


def test_mobilenet_v1_act_option():
    with pytest.raises(ValueError, match=r"MobileNet v1 act must be one of \['relu', 'relu6'\], got 'gelu'"):
        slimnet.build("mobilenet_v1", num_classes=10, input_size=32, act="gelu")
    net = small_net("mobilenet_v1", act="relu", bn="shared")
    assert not any(isinstance(m, torch.nn.ReLU6) for m in net.modules())
    child = slimnet.export(net, net.space.min())      # the child keeps the activation
    assert child.arch["act"] == "relu" and child.child_config.to_dict()["act"] == "relu"
    assert any(isinstance(m, torch.nn.ReLU) for m in child.modules())
    assert sum(isinstance(m, torch.nn.ReLU6) for m in small_net("mobilenet_v1").modules()) == 27


# -- the stage protocol and the shared block plan ---------------------------------------------

@pytest.mark.parametrize("name", MODELS)
@torch.no_grad()
def test_stages_compose_to_forward(name):
    """forward is forward_head(forward_features(x)), and the declared stages (trunk blocks, then
    the head) run one after another give the same logits, bit for bit."""
    net = small_net(name, max_width=0.5).train()
    net.set_channels(net.space.random(random.Random(0)))
    x = torch.randn(2, 3, 32, 32)
    ref = net(x)
    torch.testing.assert_close(net.forward_head(net.forward_features(x)), ref, rtol=0, atol=0)
    stages = net.search_stages()
    assert len(stages) == len(net.trunk()) + 1 > 5
    y = x
    for stage in stages:
        y = stage(y)
    torch.testing.assert_close(y, ref, rtol=0, atol=0)
    # the head stage is made on demand: the model's modules and state-dict keys stay its own
    assert not any("PoolClassifierHead" in type(m).__name__ for m in net.modules())


def test_a_model_without_declared_stages_offers_none():
    class Plain(slimnet.models.ResNet):
        trunk = slimnet.SlimNet.trunk

        def forward(self, x):
            return self.fc(torch.flatten(self.pool(self.layers(self.stem(x))), 1))

    net = Plain(depth=20, num_classes=10, input_size=32)
    assert net.search_stages() is None
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("name", MODELS)
def test_channel_groups_are_the_block_plans(name):
    """The groups are declared by the same plan the layers are built from: every group a layer
    refers to is declared, and every declared group is used by some layer."""
    net = small_net(name)
    cls, arch = type(net), net.arch
    assert [g.name for g in cls.channel_groups(**arch)] == [g.name for g in net.space]
    assert [g.name for g in cls.plan(**arch).groups] == list(net.space.names)
    used = set()
    for m in net.modules():
        for attr in ("in_ref", "out_ref", "ref"):
            ref = getattr(m, attr, None)
            if ref is not None and not isinstance(ref, int):
                used.update(slimnet.nn.ref_groups(ref))
    assert used == set(net.space.names)
