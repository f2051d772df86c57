"""Slimmable layers against hand-built plain layers; BN modes (universal, shared, switchable)."""
import pytest
import torch
import torch.nn.functional as F
from helpers import channel_places

import slimnet
from slimnet.calibrate import calibrate_bn
from slimnet.nn import PerGroup, SlimBatchNorm2d, SlimConv2d, SlimLinear, SwitchableBatchNorm2d, channel_index, resolve


class Cfg(dict):
    """A stand-in config for single layers: a mapping of group -> count with a key."""

    @property
    def key(self):
        return "k" + "_".join(f"{k}{v}" for k, v in sorted(self.items()))


def shares_storage(view, base):
    return view.untyped_storage().data_ptr() == base.untyped_storage().data_ptr()


def is_view_of(t, param):
    """``t`` is ``param`` itself (layer at its maximum) or a view of it: no copy."""
    return (t is param or t._base is param) and shares_storage(t, param) and t.data_ptr() == param.data_ptr()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_resolve_refs():
    cfg = {"a": 3, "b": 5}
    assert resolve(7, cfg) == 7
    assert resolve("a", cfg) == 3
    assert resolve(("a", "b"), cfg) == 8


# -- SlimConv2d ------------------------------------------------------------------------------

@pytest.mark.parametrize("cin, cout, stride", [(16, 24, 1), (8, 8, 2), (1, 5, 1), (16, 1, 2)])
def test_dense_conv_matches_functional_on_leading_slices(cin, cout, stride):
    conv = SlimConv2d("i", "o", 16, 24, 3, stride, bias=True)
    conv.activate(Cfg(i=cin, o=cout))
    x = torch.randn(2, cin, 9, 9)
    expected = F.conv2d(x, conv.weight[:cout, :cin].clone(), conv.bias[:cout].clone(), stride, 1)
    torch.testing.assert_close(conv(x), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("c", [24, 13, 1])
def test_depthwise_conv_uses_active_groups(c):
    conv = SlimConv2d("g", "g", 24, 24, 3, 2, depthwise=True)
    conv.activate(Cfg(g=c))
    assert conv.active_groups == c
    x = torch.randn(2, c, 8, 8)
    expected = F.conv2d(x, conv.weight[:c].clone(), None, 2, 1, 1, c)
    torch.testing.assert_close(conv(x), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("cin, cout", [(24, 12), (12, 24), (6, 3), (24, 24)])
def test_grouped_conv_uses_each_groups_leading_channels(cin, cout):
    """A grouped conv over per-group tensors computes, group by group, a dense conv on that
    group's own leading channels (block i of its input, rows of block i of its weight)."""
    g = 3
    conv = SlimConv2d(PerGroup("i", g), PerGroup("o", g), 24, 24, 1, groups=g)
    conv.activate(Cfg(i=cin, o=cout))
    assert conv.active_groups == g
    x = torch.randn(2, cin, 5, 5)
    a, b = cin // g, cout // g
    expected = torch.cat([F.conv2d(x[:, i * a:(i + 1) * a], conv.weight[i * 8:i * 8 + b, :a].clone())
                          for i in range(g)], 1)
    torch.testing.assert_close(conv(x), expected, rtol=0, atol=1e-6)
    plain = torch.nn.Conv2d(cin, cout, 1, groups=g, bias=False)
    with torch.no_grad():
        conv.export_to(plain)
    torch.testing.assert_close(plain(x), conv(x), rtol=0, atol=1e-6)


def test_grouped_conv_needs_per_group_refs():
    with pytest.raises(ValueError, match=r"grouped conv \(3 groups\) reads and writes per-group tensors.*got 'i'"):
        SlimConv2d("i", PerGroup("o", 3), 24, 24, 1, groups=3)
    with pytest.raises(ValueError, match=r"PerGroup\(..., 3\), got PerGroup\(parts=\('o',\), groups=2\)"):
        SlimConv2d(PerGroup("i", 3), PerGroup("o", 2), 24, 24, 1, groups=3)
    SlimConv2d(3, PerGroup("o", 3), 3, 24, 1, groups=3)        # fixed ints are fine


def test_channel_index_layouts():
    maxes = {"a": 4, "b": 6}
    assert channel_index("a", {"a": 2}, maxes) is None and channel_index(5, {}, maxes) is None
    assert channel_index(("a", "b"), {"a": 2, "b": 3}, maxes) == (0, 1, 4, 5, 6)      # each part's leading
    assert channel_index(PerGroup("b", 2), {"b": 4}, maxes) == (0, 1, 3, 4)          # each group's leading
    # two blocks of [a's share (2) | b's share (3)]: a=2, b=2 keeps one of each share per block
    assert channel_index(PerGroup(("a", "b"), 2), {"a": 2, "b": 2}, maxes) == (0, 2, 5, 7)
    assert channel_index(PerGroup(("a", "b"), 2), maxes, maxes) is None               # the max: plain tensor
    with pytest.raises(ValueError, match="'b': 3 channels .max 6. do not split into 2 equal groups"):
        channel_index(PerGroup("b", 2), {"b": 3}, maxes)


def _embed(x, places, size):
    """``x`` placed at ``places`` of a zero tensor with ``size`` channels."""
    out = x.new_zeros(x.shape[0], size, *x.shape[2:])
    out[:, places] = x
    return out


MAXES = {"a": 6, "b": 9, "o": 12}
SMALL, LARGE = Cfg(a=3, b=3, o=6), Cfg(a=6, b=6, o=9)


def _layer_cases():
    g = 3
    tup, pg, pgo = ("a", "b"), PerGroup(("a", "b"), g), PerGroup("o", g)
    return {
        "dense conv, concat in": lambda: SlimConv2d(tup, "o", 15, 12, 3, bias=True, max_counts=MAXES),
        "dense conv, per-group in and out": lambda: SlimConv2d(pg, pgo, 15, 12, 1, max_counts=MAXES),
        "grouped conv": lambda: SlimConv2d(pg, pgo, 15, 12, 1, groups=g, bias=True, max_counts=MAXES),
        "grouped conv, per-group concat out": lambda: SlimConv2d(pgo, pg, 12, 15, 1, groups=g, max_counts=MAXES),
        "depthwise conv": lambda: SlimConv2d(pg, pg, 15, 15, 3, 2, depthwise=True, max_counts=MAXES),
        "linear": lambda: SlimLinear(pg, tup, 15, 15, max_counts=MAXES),
        "universal BN": lambda: SlimBatchNorm2d(pg, 15, max_counts=MAXES),
        "shared BN": lambda: SlimBatchNorm2d(pg, 15, track_shared_stats=True, max_counts=MAXES),
    }


@pytest.mark.parametrize("kind", list(_layer_cases()))
def test_every_layer_kind_shares_weights_coherently(kind):
    """With the inputs outside a smaller config zeroed, the larger config's outputs restricted to
    the smaller config's channels equal the smaller config's outputs: a weight used by both
    configs connects the same input channel to the same output channel."""
    layer = _layer_cases()[kind]()
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn(p.shape))
    in_ref = getattr(layer, "in_ref", getattr(layer, "ref", None))
    out_ref = getattr(layer, "out_ref", in_ref)
    linear = isinstance(layer, SlimLinear)
    layer.activate(SMALL)
    x = torch.randn(4, resolve(in_ref, SMALL), *(() if linear else (5, 5)))
    y_small = layer(x)
    layer.activate(LARGE)
    y_large = layer(_embed(x, channel_places(in_ref, SMALL, LARGE, MAXES), resolve(in_ref, LARGE)))
    torch.testing.assert_close(y_large[:, channel_places(out_ref, SMALL, LARGE, MAXES)], y_small, rtol=0, atol=1e-5)


def test_shared_bn_updates_the_gathered_statistics_in_place():
    bn = SlimBatchNorm2d(PerGroup("a", 3), 6, track_shared_stats=True)
    bn.activate(Cfg(a=3))
    bn.train()
    bn(torch.randn(16, 3, 4, 4) + 3)
    assert (bn.running_mean[[0, 2, 4]] - 0.3).abs().max() < 0.1
    assert (bn.running_mean[[1, 3, 5]] == 0).all() and (bn.running_var[[1, 3, 5]] == 1).all()


def test_conv_weights_are_views_not_copies():
    conv = SlimConv2d("i", "o", 16, 24, 3, bias=True)
    conv.activate(Cfg(i=8, o=12))
    weight, bias = conv.sliced()
    assert weight.shape == (12, 8, 3, 3) and bias.shape == (12,)
    assert weight._base is conv.weight and bias._base is conv.bias
    assert weight.data_ptr() == conv.weight.data_ptr() and shares_storage(weight, conv.weight)
    dw = SlimConv2d("g", "g", 16, 16, 3, depthwise=True)
    dw.activate(Cfg(g=8))
    assert dw.sliced()[0]._base is dw.weight
    conv.activate(Cfg(i=16, o=24))                  # at the maximum: the parameters themselves
    assert conv.sliced()[0] is conv.weight and conv.sliced()[1] is conv.bias


def test_conv_gradient_lands_only_in_active_slice():
    conv = SlimConv2d("i", "o", 16, 24, 3, bias=True)
    conv.activate(Cfg(i=8, o=12))
    conv(torch.randn(2, 8, 6, 6)).square().sum().backward()
    g = conv.weight.grad
    assert g.shape == conv.weight.shape
    assert g[:12, :8].abs().sum() > 0
    assert g[12:].abs().sum() == 0 and g[:, 8:].abs().sum() == 0
    assert conv.bias.grad[:12].abs().sum() > 0 and conv.bias.grad[12:].abs().sum() == 0


def test_depthwise_gradient_lands_only_in_active_slice():
    conv = SlimConv2d("g", "g", 16, 16, 3, depthwise=True)
    conv.activate(Cfg(g=5))
    conv(torch.randn(2, 5, 6, 6)).sum().backward()
    assert conv.weight.grad[:5].abs().sum() > 0 and conv.weight.grad[5:].abs().sum() == 0


def test_conv_at_max_equals_plain_conv():
    conv = SlimConv2d("i", "o", 4, 6, 3)
    conv.activate(Cfg(i=4, o=6))
    x = torch.randn(1, 4, 5, 5)
    torch.testing.assert_close(conv(x), F.conv2d(x, conv.weight, None, 1, 1), rtol=0, atol=0)


def test_depthwise_needs_equal_channels():
    with pytest.raises(ValueError, match="depthwise conv needs the same input and output channels"):
        SlimConv2d("a", "b", 8, 16, 3, depthwise=True)
    with pytest.raises(ValueError, match="depthwise conv needs the same input and output channels"):
        SlimConv2d("a", "b", 8, 8, 3, depthwise=True)


def test_conv_tuple_ref_sums_groups():
    with pytest.raises(ValueError, match=r"concatenates several groups: pass max_counts"):
        SlimConv2d(("a", "b"), "o", 12, 4, 1)
    with pytest.raises(ValueError, match=r"has 13 channels at its maximum, the layer was made for 12"):
        SlimConv2d(("a", "b"), "o", 12, 4, 1, max_counts={"a": 4, "b": 9})
    conv = SlimConv2d(("a", "b"), "o", 12, 4, 1, max_counts={"a": 4, "b": 8})
    conv.activate(Cfg(a=3, b=6, o=4))
    assert conv.active_in == 9
    assert conv(torch.randn(1, 9, 2, 2)).shape == (1, 4, 2, 2)
    # each part's leading channels: a's 0..2 and b's 0..5, at places 0..2 and 4..9
    torch.testing.assert_close(conv.sliced()[0], torch.cat([conv.weight[:, :3], conv.weight[:, 4:10]], 1))


# -- SlimLinear ------------------------------------------------------------------------------

@pytest.mark.parametrize("cin, cout", [(32, 10), (7, 3), (1, 1)])
def test_linear_matches_functional(cin, cout):
    lin = SlimLinear("i", "o", 32, 10)
    lin.activate(Cfg(i=cin, o=cout))
    x = torch.randn(3, cin)
    expected = F.linear(x, lin.weight[:cout, :cin].clone(), lin.bias[:cout].clone())
    torch.testing.assert_close(lin(x), expected, rtol=0, atol=1e-6)
    w, b = lin.sliced()
    assert is_view_of(w, lin.weight) and is_view_of(b, lin.bias)


def test_linear_gradient_lands_only_in_active_slice():
    lin = SlimLinear("i", 10, 32, 10)
    lin.activate(Cfg(i=12))
    lin(torch.randn(3, 12)).square().sum().backward()
    assert lin.weight.grad[:, :12].abs().sum() > 0 and lin.weight.grad[:, 12:].abs().sum() == 0
    assert lin.bias.grad.abs().sum() > 0


# -- SlimBatchNorm2d, universal mode ---------------------------------------------------------

def test_universal_bn_tracks_no_statistics_in_training():
    bn = SlimBatchNorm2d("c", 8)
    assert not any(name.startswith("running") for name, _ in bn.named_buffers())
    bn.activate(Cfg(c=5))
    bn.train()
    x = torch.randn(4, 5, 3, 3) * 3 + 2
    y = bn(x)
    torch.testing.assert_close(y, F.batch_norm(x, None, None, bn.weight[:5], bn.bias[:5], True, 0.0, 1e-5))
    assert bn.calibrated_keys == [] and list(bn.buffers()) == []


def test_universal_bn_eval_without_stats_says_what_to_do():
    bn = SlimBatchNorm2d("c", 8)
    bn.activate(Cfg(c=5))
    bn.eval()
    with pytest.raises(RuntimeError, match=r"no BN statistics for config .*Calibrate this config first.*calibrate_bn"):
        bn(torch.randn(2, 5, 3, 3))


def test_universal_bn_gradient_only_in_active_affine_slice():
    bn = SlimBatchNorm2d("c", 8)
    bn.activate(Cfg(c=5))
    (bn(torch.randn(4, 5, 3, 3)) * torch.randn(4, 5, 3, 3)).sum().backward()
    assert bn.weight.grad[:5].abs().sum() > 0 and bn.weight.grad[5:].abs().sum() == 0
    assert bn.bias.grad[5:].abs().sum() == 0


def test_universal_bn_calibration_is_exact_and_per_config():
    bn = SlimBatchNorm2d("c", 8)
    batches = [torch.randn(4, 8, 3, 3) * 2 + 1 for _ in range(3)]
    stats = {}
    for c in (8, 5):
        bn.activate(Cfg(c=c))
        bn.begin_calibration()
        for b in batches:
            bn(b[:, :c])
        bn.end_calibration()
        allx = torch.cat([b[:, :c] for b in batches]).transpose(0, 1).reshape(c, -1).double()
        stats[c] = (allx.mean(1).float(), allx.var(1).float())
    assert len(bn.calibrated_keys) == 2
    for c in (8, 5):
        bn.activate(Cfg(c=c))
        mean, var = bn._stats()
        torch.testing.assert_close(mean, stats[c][0])
        torch.testing.assert_close(var, stats[c][1])
    bn.drop_stats()
    assert bn.calibrated_keys == []


def _mnv2(**kw):
    return slimnet.build("mobilenet_v2", num_classes=10, input_size=32, max_width=0.5, min_width=0.35, **kw)


def test_universal_bn_stats_round_trip_through_state_dict():
    net = _mnv2()
    x = torch.randn(4, 3, 32, 32)
    widths = (0.35, 0.5)
    for w in widths:
        calibrate_bn(net, net.space.uniform(w), [x], num_images=4)
    assert len(net.calibrated_configs()) == 2
    keys = [k for k in net.state_dict() if ".stats_" in k]
    assert keys and all(k.endswith(("_mean", "_var")) for k in keys)
    fresh = _mnv2()
    assert fresh.calibrated_configs() == []
    fresh.load_state_dict(net.state_dict())
    assert fresh.calibrated_configs() == net.calibrated_configs()
    net.eval(), fresh.eval()
    with torch.no_grad():
        for w in widths:
            net.set_width(w), fresh.set_width(w)
            torch.testing.assert_close(fresh(x[:2]), net(x[:2]), rtol=0, atol=0)
    fresh.set_channels(fresh.space.random(__import__("random").Random(0)))
    with pytest.raises(RuntimeError, match="Calibrate this config first"):
        fresh(x[:2])


def test_calibration_on_eval_net_restores_mode_and_leaves_cfg():
    net = _mnv2().eval()
    cfg = net.space.uniform(0.35)
    assert calibrate_bn(net, cfg, [torch.randn(2, 3, 32, 32)] * 3, num_images=5) == 5
    assert not net.training and net.active_config == cfg


# -- shared BN -------------------------------------------------------------------------------

def test_shared_bn_updates_sliced_running_stats():
    bn = SlimBatchNorm2d("c", 8, track_shared_stats=True)
    bn.activate(Cfg(c=5))
    bn.train()
    x = torch.randn(16, 5, 4, 4) + 3
    bn(x)
    assert (bn.running_mean[:5] - 0.3).abs().max() < 0.1      # momentum 0.1 toward mean 3
    assert (bn.running_mean[5:] == 0).all() and (bn.running_var[5:] == 1).all()
    bn.eval()
    expected = F.batch_norm(x, bn.running_mean[:5], bn.running_var[:5], bn.weight[:5], bn.bias[:5], False, 0, 1e-5)
    torch.testing.assert_close(bn(x), expected)


def test_shared_mode_model_evaluates_any_config_without_calibration():
    net = _mnv2(bn="shared")
    x = torch.randn(2, 3, 32, 32)
    net.train()
    net(x)
    net.eval()
    for w in (0.35, 0.5):
        net.set_width(w)
        assert net(x).shape == (2, 10)
    child = slimnet.export(net, net.space.uniform(0.35))
    net.set_width(0.35)
    with torch.no_grad():
        torch.testing.assert_close(child(x), net(x), rtol=1e-5, atol=1e-5)


# -- SwitchableBatchNorm2d -------------------------------------------------------------------

def test_switchable_bn_private_bn_per_config():
    configs = [Cfg(c=4), Cfg(c=8)]
    bn = SwitchableBatchNorm2d("c", configs)
    assert [b.num_features for b in bn.bns] == [4, 8]
    bn.train()
    bn.activate(configs[0])
    bn(torch.randn(8, 4, 3, 3) + 5)
    assert bn.bns[0].running_mean.mean() > 0.3
    assert (bn.bns[1].running_mean == 0).all()          # the other config's BN is untouched
    bn.activate(configs[1])
    bn(torch.randn(8, 8, 3, 3) - 5)
    assert bn.bns[1].running_mean.mean() < -0.3
    assert bn.bns[0].running_mean.mean() > 0.3


def test_switchable_bn_unregistered_config_raises_clearly():
    bn = SwitchableBatchNorm2d("c", [Cfg(c=4), Cfg(c=8)])
    bn.activate(Cfg(c=6))
    with pytest.raises(RuntimeError, match=r"not one of this model's 2 switchable BN configs.*net.switchable_configs"):
        bn(torch.randn(2, 6, 3, 3))


def test_switchable_model_and_export_picks_private_bn():
    net = _mnv2(bn="switchable", switchable=[0.35, 0.5])
    assert net.switchable_configs == [net.space.uniform(0.35), net.space.uniform(0.5)]
    x = torch.randn(4, 3, 32, 32)
    # give each config's private BNs different statistics
    net.train()
    for w, shift in ((0.35, 2.0), (0.5, -2.0)):
        net.set_width(w)
        with torch.no_grad():
            for _ in range(3):
                net(x + shift)
    net.eval()
    for w in (0.35, 0.5):
        cfg = net.space.uniform(w)
        child = slimnet.export(net, cfg)
        net.set_channels(cfg)
        with torch.no_grad():
            out = net(x)
            assert (child(x) - out).abs().max() <= 1e-5
        index = net.switchable_configs.index(cfg)
        sbn = net.features[0][1]
        torch.testing.assert_close(child.features[0][1].running_mean, sbn.bns[index].running_mean)
    with torch.no_grad():
        a = slimnet.export(net, net.space.uniform(0.35)).features[0][1].running_mean
        b = slimnet.export(net, net.space.uniform(0.5)).features[0][1].running_mean
    assert a.shape != b.shape or not torch.equal(a, b)
    net.set_channels(net.space.random(__import__("random").Random(5)))
    with pytest.raises(RuntimeError, match="switchable BN configs"):
        net(x)
    with pytest.raises(RuntimeError, match="switchable BN configs"):
        slimnet.export(net, net.space.random(__import__("random").Random(6)))


def test_switchable_configs_from_channel_dicts():
    base = _mnv2()
    cfgs = [dict(base.space.uniform(0.35)), base.space.uniform(0.5).replace(stem=8)]
    net = _mnv2(bn="switchable", switchable=cfgs)
    assert net.switchable_configs[1]["stem"] == 8
    net.set_channels(net.switchable_configs[1])
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
