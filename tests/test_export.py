"""Export: a supernet config becomes a plain, smaller torch.nn model with identical outputs."""
import json
import random

import pytest
import torch

import slimnet
from slimnet.calibrate import calibrate_bn
from slimnet.nn import SlimModule

MODELS = sorted(slimnet.MODELS)


def small_net(name, **kw):
    kw.setdefault("max_width", 1.0)
    kw.setdefault("min_width", 0.25)
    return slimnet.build(name, num_classes=10, input_size=32, **kw)


def randomise_affine(net):
    """Non-trivial BN affine parameters (freshly built ones are 1 / 0)."""
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (slimnet.nn.SlimBatchNorm2d, torch.nn.BatchNorm2d)):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)


@pytest.mark.parametrize("name", MODELS)
def test_export_equals_supernet_at_config(name):
    torch.manual_seed(0)
    net = small_net(name)
    randomise_affine(net)
    rng = random.Random(len(name))
    calib = [torch.randn(4, 3, 32, 32)]
    x = torch.randn(2, 3, 32, 32)
    for cfg in (net.space.uniform(0.75), net.space.random(rng)):
        calibrate_bn(net, cfg, calib, num_images=4)
        child = slimnet.export(net, cfg)
        assert not child.training
        assert not any(isinstance(m, SlimModule) for m in child.modules())
        assert all(type(m).__module__.startswith(("torch.nn", "slimnet.models")) for m in child.modules())
        assert child.child_config == cfg
        net.set_channels(cfg)
        net.eval()
        with torch.no_grad():
            diff = (net(x) - child(x)).abs().max().item()
        assert diff <= 1e-5, (name, diff)
        # real, smaller tensors: the child holds exactly profile()'s parameter count
        n_child = sum(p.numel() for p in child.parameters())
        assert n_child == slimnet.profile(net.space, cfg).params
        assert n_child < sum(p.numel() for p in net.parameters())
        for p in child.parameters():
            assert p._base is None and p.untyped_storage().nbytes() == p.numel() * p.element_size()


def test_export_restores_active_config_and_copies_weights():
    net = small_net("resnet20")
    net.set_width(0.5)
    cfg = net.space.uniform(0.25)
    calibrate_bn(net, cfg, [torch.randn(2, 3, 32, 32)], num_images=2)
    net.set_width(0.5)
    child = slimnet.export(net, cfg)
    assert net.active_config == net.space.uniform(0.5)
    conv_c = child.stem[0][0].weight
    conv_s = net.stem[0][0].weight
    assert conv_c.data_ptr() != conv_s.data_ptr()
    torch.testing.assert_close(conv_c, conv_s[: cfg["stem"]])
    with torch.no_grad():
        conv_c.add_(1.0)
    assert not torch.equal(conv_c, conv_s[: cfg["stem"]] + 0)  # the supernet is untouched
    # default config: the active one
    net.set_channels(cfg)
    assert slimnet.export(net).child_config == cfg


def test_export_universal_without_stats_raises():
    net = small_net("resnet20")
    with pytest.raises(RuntimeError, match="Calibrate this config first"):
        slimnet.export(net, net.space.uniform(0.5))


def test_export_of_a_child_raises():
    net = small_net("resnet20", bn="shared")
    child = slimnet.export(net, net.space.uniform(0.5))
    with pytest.raises(ValueError, match="already an exported child"):
        slimnet.export(child)


def test_save_and_load_child_round_trip(tmp_path):
    torch.manual_seed(0)
    net = small_net("mobilenet_v2", min_width=0.35)
    randomise_affine(net)
    cfg = net.space.random(random.Random(4))
    calibrate_bn(net, cfg, [torch.randn(4, 3, 32, 32)], num_images=4)
    child = slimnet.export(net, cfg)
    path = tmp_path / "child.pt"
    slimnet.save_child(child, path)
    blob = torch.load(path, weights_only=True)
    assert blob["format"] == "slimnet-child-v1" and blob["config"]["channels"] == dict(cfg.channels)
    meta = json.loads((tmp_path / "child.json").read_text())
    assert meta["model"] == "mobilenet_v2" and meta["macs"] == slimnet.profile(net.space, cfg).macs
    loaded = slimnet.load_child(path)
    assert loaded.is_child and not loaded.training and loaded.child_config == cfg
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), child(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", ["resnet50", "shufflenet_v1"])
def test_save_load_child_of_registry_with_fixed_arguments(tmp_path, name):
    net = small_net(name, bn="shared", max_width=0.5)
    child = slimnet.export(net, net.space.min())
    slimnet.save_child(child, tmp_path / "c.pt")
    loaded = slimnet.load_child(tmp_path / "c.pt")
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), child(x), rtol=0, atol=0)


def test_save_child_rejects_supernet_and_load_rejects_foreign_files(tmp_path):
    net = small_net("resnet20", bn="shared")
    with pytest.raises(ValueError, match="expected an exported child"):
        slimnet.save_child(net, tmp_path / "x.pt")
    torch.save({"hello": 1}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="not a slimnet child file"):
        slimnet.load_child(tmp_path / "foreign.pt")


def test_exported_child_trains_alone():
    net = small_net("mobilenet_v1", bn="shared")
    child = slimnet.export(net, net.space.uniform(0.25)).train()
    opt = torch.optim.SGD(child.parameters(), lr=0.1)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    loss = torch.nn.functional.cross_entropy(child(x), y)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)


def test_shufflenet_child_traces_without_warnings(tmp_path):
    """The per-group layout's shuffle reads no tensor shapes in the traced graph."""
    import warnings

    from slimnet.export import export_torchscript
    net = small_net("shufflenet_v1", bn="shared")
    child = slimnet.export(net, net.space.random(random.Random(1)))
    with warnings.catch_warnings():
        warnings.simplefilter("error", torch.jit.TracerWarning)
        assert export_torchscript(child, tmp_path / "c.pt", torch.randn(2, 3, 32, 32)) <= 1e-5
