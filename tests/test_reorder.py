"""Channel reordering by importance (``slimnet.reorder``): the max config computes the same outputs
(traced and hand-written supernets, grouped convs, concatenations, flatten into a linear), each
group ends sorted by its criterion, narrower configs' BN statistics are dropped, switchable BN is
refused."""

import pytest
import torch
import torchvision

import slimnet
from slimnet.nn import SlimBatchNorm2d
from slimnet.reorder import channel_importance, ref_permutation, reorder_channels


def randomized(model):
    """Random BN affine parameters and statistics: an untrained model would have gammas of 1 (no order)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.BatchNorm2d, SlimBatchNorm2d)):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 2 - 1)
                m.bias.copy_(torch.rand(m.bias.shape, generator=g) - 0.5)
                if getattr(m, "running_mean", None) is not None:
                    m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) - 0.5)
                    m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model


def traced(name):
    torch.manual_seed(0)
    return slimnet.slimmable(randomized(getattr(torchvision.models, name)(weights=None).eval()), 32).eval()


def flatten_net():
    """A map flattened into a linear (VGG's head), of a concatenation (test_slimmable.FlattenNet)."""
    from test_slimmable import FlattenNet
    torch.manual_seed(0)
    return slimnet.slimmable(randomized(FlattenNet().eval()), 32).eval()


def hand_written(name="mobilenet_v2"):
    torch.manual_seed(0)
    net = randomized(slimnet.build(name, num_classes=10, input_size=32, min_width=0.35))
    slimnet.calibrate_bn(net, net.space.max(), torch.randn(8, 3, 32, 32))
    return net.eval()


@pytest.mark.parametrize("name", ["resnet18", "resnext50_32x4d", "densenet121", "flatten", "mobilenet_v2",
                                  "shufflenet_v1"])
@pytest.mark.parametrize("criterion", ["bn", "l1"])
def test_the_max_config_computes_the_same_and_groups_end_sorted(name, criterion):
    net = hand_written(name) if name in slimnet.MODELS else flatten_net() if name == "flatten" else traced(name)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = net(x)
    perms = reorder_channels(net, criterion)
    assert perms                                              # something moved
    with torch.no_grad():
        assert (net(x) - want).abs().max().item() <= 1e-5
    for group, importance in channel_importance(net, criterion).items():
        blocks = importance.view(net.space[group].multiple_of, -1)
        slack = 1e-5 * blocks.abs().max()       # L1 sums of moved columns add up in another order
        assert (blocks[:, 1:] <= blocks[:, :-1] + slack).all(), group   # most important first, in every conv group


def test_fixed_groups_never_move_and_grouped_convs_keep_channels_in_their_group():
    net = traced("resnext50_32x4d")
    perms = reorder_channels(net)
    assert not {g.name for g in net.space if g.min == g.max} & set(perms)
    for group, perm in perms.items():
        k = net.space[group].multiple_of
        if k > 1:
            per = perm.numel() // k
            assert torch.equal(perm // per, torch.arange(perm.numel()) // per)


def test_ref_permutation_of_concatenations_and_per_group_tensors():
    from slimnet.nn import PerGroup
    perms = {"a": torch.tensor([1, 0, 3, 2]), "b": torch.tensor([1, 0])}
    max_counts = {"a": 4, "b": 2}
    assert ref_permutation(("a", "b"), perms, max_counts).tolist() == [1, 0, 3, 2, 5, 4]
    # two conv groups: block 0 holds a[0:2], b[0:1]; block 1 holds a[2:4], b[1:2]
    assert ref_permutation(PerGroup(("a", "b"), 2), {"a": torch.tensor([1, 0, 3, 2])}, max_counts).tolist() == \
        [1, 0, 2, 4, 3, 5]
    assert ref_permutation(7, perms, max_counts) is None and ref_permutation("c", perms, {"c": 3}) is None


def test_narrower_configs_statistics_are_dropped_the_max_configs_kept():
    net = hand_written()
    half = net.space.uniform(0.5)
    slimnet.calibrate_bn(net, half, torch.randn(8, 3, 32, 32))
    assert half.key in net.calibrated_configs()
    reorder_channels(net)
    assert net.calibrated_configs() == [net.space.max().key]


def test_a_group_whose_order_matters_outside_the_layers_is_refused_and_the_weights_restored():
    """ShuffleNet v1's channel shuffle moves bottleneck channels between conv groups by position:
    its ``b<k>.mid`` groups are not reorderable. Marked reorderable, the check catches it."""
    import dataclasses
    net = hand_written("shufflenet_v1")
    assert not any(g.reorderable for g in net.space if g.name.endswith(".mid"))
    for g in list(net.space):
        if g.name.endswith(".mid"):
            net.space.groups[g.name] = dataclasses.replace(g, reorderable=True)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(RuntimeError, match="reordering changed ShuffleNetV1's full-width outputs"):
        reorder_channels(net)
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in state.items())


def test_switchable_bn_is_refused():
    net = slimnet.build("mobilenet_v2", num_classes=10, input_size=32, bn="switchable", switchable=[1.0, 0.5])
    with pytest.raises(TypeError, match="switchable BN keeps a private BN"):
        reorder_channels(net)
    with pytest.raises(ValueError, match="criterion must be one of"):
        channel_importance(traced("resnet18"), "taylor")


def test_reordering_moves_the_important_channels_into_a_narrow_width():
    """A model whose leading half of a group is dead (gamma 0): after reordering, width 0.5 keeps
    the live half, so its outputs change while the full width's do not."""
    net = traced("resnet18")
    bn = net.get_submodule("layer1.0.bn1")
    with torch.no_grad():
        bn.weight[: bn.num_features // 2] = 0
    reorder_channels(net)
    half = net.space.uniform(0.5)["layer1.0.conv1"]
    assert (bn.weight[:half] != 0).all() and (bn.weight[half:] == 0).all()


def test_the_activation_criterion_sorts_by_mean_output_on_data():
    net = traced("resnet18")
    data = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    x = data[:2]
    with torch.no_grad():
        want = net(x)
    perms = reorder_channels(net, "activation", data, num_images=16)
    assert perms
    with torch.no_grad():
        assert (net(x) - want).abs().max().item() <= 1e-5
    for group, importance in channel_importance(net, "activation", data, num_images=16).items():
        assert (importance[1:] <= importance[:-1] + 1e-4 * importance.max()).all(), group
    with pytest.raises(ValueError, match="'activation' needs data"):
        reorder_channels(net, "activation")
    with pytest.raises(ValueError, match="only it takes data"):
        reorder_channels(net, "bn", data)
