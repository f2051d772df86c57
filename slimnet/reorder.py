"""Channel reordering by importance: the leading channels, which every width keeps, become the
important ones (for supernets made from pretrained models, before slimmable training).

``reorder_channels(net, criterion="bn")`` sorts each slimmable channel group of ``net`` (a
hand-written or traced supernet) by the importance of its channels, most important first, and
permutes every layer that writes or reads the group consistently, so the max config computes
exactly the same function. Criteria:

* ``"bn"``: the sum over the group's BatchNorm layers of ``|gamma|`` (the scale a channel gets
  after normalisation, the criterion of network slimming, Liu et al. 2017); groups without a BN
  fall back to ``"l1"``;
* ``"l1"``: the sum over the layers that write the group of each output filter's L1 norm (Li et
  al. 2017, pruning filters);
* ``"activation"``: data-driven, the mean absolute output of each channel of the group's BN
  layers at the max config over ``data`` (up to ``num_images`` images, BN on batch statistics);
  groups without a BN fall back to ``"l1"``.

Fixed groups (min = max: the input, the classes) and groups whose order something outside the
slimmable layers depends on (``ChannelGroup.reorderable``: ShuffleNet v1's shuffled bottlenecks)
do not move. A group split into conv groups
(``multiple_of`` > 1) is sorted within each of its blocks, so every channel stays in its conv
group. Calibrated BN statistics of narrower configs are dropped (their channels moved: calibrate
again); the max config's move with the channels. Optimizer state does not follow: reorder before
training.
"""
from __future__ import annotations

import contextlib
from typing import Mapping

import torch

from .calibrate import image_batches
from .nn import CalibratableBN, PerGroup, SlimModule, SwitchableBatchNorm2d, ref_groups
from .nn.bn import SWITCHABLE_NOT_REORDERABLE

__all__ = ["CRITERIA", "channel_importance", "reorder_channels", "ref_permutation"]

CRITERIA = ("bn", "l1", "activation")


def _slim_layers(net) -> list:
    return [m for m in net.modules() if isinstance(m, SlimModule)]


@torch.no_grad()
def channel_importance(net, criterion: str = "bn", data=None, num_images: int = 1000) -> dict[str, torch.Tensor]:
    """Group -> importance of each of its channels (at the max config, in channel order), for
    every group that can slim (see the module docstring for the criteria; ``data`` and
    ``num_images`` for ``"activation"``: batches as ``calibrate_bn`` takes them)."""
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
    if (criterion == "activation") != (data is not None):
        raise ValueError("criterion 'activation' needs data (image batches), and only it takes data")
    movable = {g.name: g.max for g in net.space if g.min < g.max and g.reorderable}
    scores: dict[str, torch.Tensor] = {}
    layers = _slim_layers(net)

    def add(ref, values: torch.Tensor) -> None:
        (group,) = ref_groups(ref) if len(ref_groups(ref)) == 1 else (None,)
        if group in movable and values.numel() == movable[group]:
            scores[group] = scores.get(group, 0) + values.detach().float().abs().cpu()

    if criterion == "bn":
        for m in layers:
            if isinstance(m, CalibratableBN) and getattr(m, "weight", None) is not None:
                add(m.channel_refs().output, m.weight)
    elif criterion == "activation":
        for m, mean_abs in _mean_abs_outputs(net, data, num_images).items():
            add(m.channel_refs().output, mean_abs)
    missing = set(movable) - set(scores)
    for m in layers:
        w = getattr(m, "weight", None)
        if w is not None and w.dim() > 1 and not isinstance(m, CalibratableBN):
            ref = m.channel_refs().output
            if set(ref_groups(ref)) & missing:
                add(ref, w.abs().flatten(1).sum(1))
    return scores


def _mean_abs_outputs(net, data, num_images: int) -> dict:
    """BN layer -> mean |output| per channel at the max config over up to ``num_images`` images."""
    bns = [m for m in net.modules() if isinstance(m, CalibratableBN)]
    sums = {m: 0 for m in bns}

    def hook(module, inputs, output):
        sums[module] = sums[module] + output.detach().abs().sum(dim=(0, 2, 3)).double()

    first = next(net.parameters())
    handles = [m.register_forward_hook(hook) for m in bns]
    seen = 0
    try:
        with _max_config_on_batch_statistics(net):
            for images in image_batches(data, first.device):
                images = images[: num_images - seen]
                net(images.to(first.dtype))
                seen += len(images)
                if seen >= num_images:
                    break
    finally:
        for h in handles:
            h.remove()
    if not seen:
        raise ValueError("criterion 'activation': the data gave no images")
    return {m: (s / seen).float() for m, s in sums.items() if torch.is_tensor(s)}


def _order(importance: torch.Tensor, blocks: int) -> torch.Tensor:
    """The permutation sorting ``importance`` descending within each of ``blocks`` equal blocks."""
    per = importance.numel() // blocks
    within = torch.argsort(importance.view(blocks, per), dim=1, descending=True, stable=True)
    return (within + torch.arange(blocks).unsqueeze(1) * per).reshape(-1)


def ref_permutation(ref, perms: Mapping[str, torch.Tensor], max_counts: Mapping[str, int]) -> torch.Tensor | None:
    """The new order of a tensor with channels ``ref`` at the max config when each group ``g``
    is reordered by ``perms[g]``: position ``k`` takes old position ``index[k]``; None when nothing moves."""
    if isinstance(ref, int) or not set(ref_groups(ref)) & set(perms):
        return None
    if isinstance(ref, str):
        return perms[ref]
    parts, blocks = (ref.parts, ref.groups) if isinstance(ref, PerGroup) else (tuple(ref), 1)
    index, start = [], 0
    for b in range(blocks):
        for part in parts:
            per = max_counts[part] // blocks
            perm = perms.get(part)
            local = torch.arange(per) if perm is None else perm[b * per:(b + 1) * per] - b * per
            index.append(local + start)
            start += per
    return torch.cat(index)


@torch.no_grad()
def reorder_channels(net, criterion: str = "bn", data=None, num_images: int = 1000) -> dict[str, torch.Tensor]:
    """Reorder every slimmable group of ``net`` by importance (see the module docstring; ``data``
    for ``"activation"``); returns the permutation of each group that moved. ``net``'s max config
    computes the same outputs."""
    layers = _slim_layers(net)
    if any(isinstance(m, SwitchableBatchNorm2d) for m in layers):
        raise TypeError(SWITCHABLE_NOT_REORDERABLE)
    max_cfg = net.space.max()
    for m in layers:       # a narrower config's statistics describe channels that are about to move
        for key in getattr(m, "calibrated_keys", ()):
            if key != max_cfg.key:
                m.drop_stats(key)
    perms = {}
    for group, importance in channel_importance(net, criterion, data, num_images).items():
        order = _order(importance, net.space[group].multiple_of)
        if not torch.equal(order, torch.arange(order.numel())):
            perms[group] = order
    saved = {k: v.clone() for k, v in net.state_dict().items()}
    before = _max_outputs(net)
    for m in layers:
        refs = m.channel_refs()
        device = next((t.device for t in m.parameters()), torch.device("cpu"))
        in_index, out_index = (ref_permutation(r, perms, max_cfg) for r in refs)
        m.permute_channels_(None if in_index is None else in_index.to(device),
                            None if out_index is None else out_index.to(device))
    net.set_channels(net.active_config)      # refresh the layers' cached indices
    after = _max_outputs(net)
    # batch statistics over a few images at 1x1 maps amplify float rounding (1e-4 relative seen);
    # a broken order changes the outputs by tens of percent
    if float((after - before).abs().max()) > 1e-3 * float(before.abs().max()):
        net.load_state_dict(saved)
        raise RuntimeError(f"reordering changed {type(net).__name__}'s full-width outputs (max difference "
                           f"{float((after - before).abs().max()):.3g}), so something outside its slimmable layers "
                           "depends on the channel order; the weights are restored. Mark such groups "
                           "ChannelGroup(reorderable=False) or pin them (fixed=[...]) for traced models")
    return perms


def _max_outputs(net) -> torch.Tensor:
    """The max config's outputs on a fixed random batch: the check that reordering kept the function."""
    first = next(net.parameters())
    size, channels = net.arch["input_size"], net.arch["in_channels"]
    x = torch.randn(8, channels, size, size, generator=torch.Generator().manual_seed(0)).to(first)
    with _max_config_on_batch_statistics(net):
        return net(x).detach().float()


@contextlib.contextmanager
def _max_config_on_batch_statistics(net):
    """``net`` at its max config in eval mode (dropout off) with BN on batch statistics (no
    calibration needed); its config and every module's train/eval mode come back afterwards."""
    from .nn import StatsCollector

    previous, modes = net.active_config, {m: m.training for m in net.modules()}
    net.set_channels(net.space.max())
    net.eval()
    try:
        with StatsCollector([m for m in net.modules() if isinstance(m, CalibratableBN)]):
            yield
    finally:
        for m, training in modes.items():
            m.training = training
        net.set_channels(previous)
