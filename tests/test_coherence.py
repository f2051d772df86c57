"""Coherent weight sharing in every architecture: a weight element used by two configs connects
the same input channel to the same output channel in both.

Checked end to end: run a smaller config, then a larger one with every slimmable layer's output
outside the smaller config's channels zeroed (so each layer sees the smaller config's input,
zero-padded); every layer's output restricted to the smaller config's channels must equal the
smaller config's output, and so must the logits. BN runs on batch statistics (train mode,
universal BN), which are per channel, so private / calibrated statistics are the only thing left
aside. Where the smaller config's channels sit in the larger config's tensors is
``slimnet.nn.channel_index`` (the leading channels of each group; of each group's share in
ShuffleNet's per-group tensors).
"""
import random

import pytest
import torch
from helpers import channel_places

import slimnet
from slimnet.models.shufflenet import cat_per_group, channel_shuffle
from slimnet.nn import SlimBatchNorm2d, SlimConv2d, SlimModule

MODELS = sorted(slimnet.MODELS)


def config_pairs(space, seed):
    """(smaller, larger) configs: min/max, and random per-layer configs ordered group by group."""
    rng = random.Random(seed)
    pairs = [(space.min(), space.max())]
    for _ in range(2):
        a, b = space.random(rng), space.random(rng)
        pairs.append((space.config({n: min(a[n], b[n]) for n in space.names}),
                      space.config({n: max(a[n], b[n]) for n in space.names})))
    return pairs


@torch.no_grad()
def check_coherent(net, small, large, x, atol=1e-9):
    """Max deviation of each layer (and of the logits) of ``large`` restricted to ``small``'s
    channels, with everything outside ``small`` zeroed after every layer, from ``small``'s run."""
    max_cfg = net.space.max()
    layers = [(name, m) for name, m in net.named_modules() if isinstance(m, SlimModule)]
    seen, errors = {}, {}

    def record(name):
        def hook(_m, _inp, out):
            seen[name] = out.clone()     # before any in-place activation
        return hook

    def restrict(name, module):
        def hook(_m, _inp, out):
            keep = channel_places(module.channel_refs().output, small, large, max_cfg)
            errors[name] = (out[:, keep] - seen[name]).abs().max().item()
            masked = torch.zeros_like(out)
            masked[:, keep] = out[:, keep]
            return masked
        return hook

    for cfg, make in ((small, record), (large, restrict)):
        net.set_channels(cfg)
        handles = [m.register_forward_hook(make(name) if make is record else make(name, m)) for name, m in layers]
        try:
            logits = net(x)
        finally:
            for h in handles:
                h.remove()
        if make is record:
            small_logits = logits
    errors["logits"] = (logits - small_logits).abs().max().item()
    bad = {k: v for k, v in errors.items() if not v <= atol}
    return bad, len(errors)


@pytest.mark.parametrize("name", MODELS)
def test_weight_sharing_is_coherent_in_every_architecture(name):
    torch.manual_seed(0)
    net = slimnet.build(name, num_classes=10, input_size=32, max_width=1.0, min_width=0.25).double().train()
    with torch.no_grad():       # non-trivial BN affine parameters; dropout off (it is random)
        for m in net.modules():
            if isinstance(m, SlimBatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
            elif isinstance(m, torch.nn.Dropout):
                m.eval()
    x = torch.randn(3, 3, 16, 16, dtype=torch.float64)
    for small, large in config_pairs(net.space, seed=len(name)):
        bad, checked = check_coherent(net, small, large, x)
        assert not bad, (name, dict(list(bad.items())[:5]), f"{len(bad)} of {checked} outputs differ")


def _shufflenet_pair():
    net = slimnet.build("shufflenet_v1", num_classes=10, input_size=32, min_width=0.25).double().train()
    x = torch.randn(3, 3, 16, 16, dtype=torch.float64)
    small, large = net.space.uniform(0.5), net.space.max()
    assert not check_coherent(net, small, large, x)[0]
    return net, small, large, x


def test_coherence_check_catches_leading_row_slicing(monkeypatch):
    """The check can fail: grouped convs slicing the leading rows and columns of their stacked
    weight (slimnet before issue 10) use, at 0.5x, rows that belong to other groups at 1.0x."""
    net, small, large, x = _shufflenet_pair()
    activate = SlimConv2d.activate

    def leading_rows(self, cfg):
        activate(self, cfg)
        if self.fixed_groups > 1:
            self._rows = self._cols = None
    monkeypatch.setattr(SlimConv2d, "activate", leading_rows)
    bad, _ = check_coherent(net, small, large, x)
    assert "logits" in bad and "units.1.reduce.0" in bad and "units.0.expand.0" in bad


def test_coherence_check_catches_a_level_changing_shuffle(monkeypatch):
    """The check can fail: ShuffleNet's transpose shuffle moves channels between levels, so at
    different configs a grouped conv's weight column reads different channels."""
    import slimnet.models.shufflenet as sh

    def transpose_shuffle(x, groups, channels=None):
        n, c, h, w = x.shape
        return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)

    net, small, large, x = _shufflenet_pair()
    monkeypatch.setattr(sh, "channel_shuffle", transpose_shuffle)
    bad, _ = check_coherent(net, small, large, x)
    assert "logits" in bad and "units.0.depthwise.0" in bad


@pytest.mark.parametrize("groups, per", [(3, 6), (3, 5), (2, 4), (4, 3)])
def test_channel_shuffle_keeps_levels_and_mixes_groups(groups, per):
    # channel value = 100 * group + level
    x = torch.tensor([100.0 * i + j for i in range(groups) for j in range(per)]).view(1, -1, 1, 1)
    y = channel_shuffle(x, groups).view(groups, per)
    for k in range(groups):
        for j in range(per):
            assert y[k, j] == 100 * ((k - j) % groups) + j
    # a smaller config (leading levels of each group) shuffles to the leading levels of the full one
    small = per - 1
    xs = x.view(groups, per)[:, :small].reshape(1, -1, 1, 1)
    torch.testing.assert_close(channel_shuffle(xs, groups).view(groups, small), y[:, :small])
    # every output group reads from every input group; equally often when per is a multiple of g,
    # as ShuffleNet's transpose shuffle does
    counts = torch.zeros(groups, groups)
    for k in range(groups):
        for j in range(per):
            counts[k, int(y[k, j]) // 100] += 1
    if per >= groups:
        assert (counts > 0).all()
    if per % groups == 0:
        assert (counts == per // groups).all()


def test_cat_per_group_concatenates_group_by_group():
    a = torch.arange(6.0).view(1, 6, 1, 1)            # 3 groups of 2
    b = 10 + torch.arange(3.0).view(1, 3, 1, 1)       # 3 groups of 1
    assert cat_per_group([a, b], 3).flatten().tolist() == [0, 1, 10, 2, 3, 11, 4, 5, 12]
