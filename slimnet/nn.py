"""Slimmable layers.

Each layer is allocated at its maximum width and runs at the active channel counts by using the
part of its weight that belongs to the active channels. A layer names its channels by a *channel
ref*: an ``int`` (fixed, e.g. the 3 input channels or the number of classes), a group name
``str``, a tuple of group names whose counts add up (a concatenation), or a :class:`PerGroup`
(a tensor read or written by grouped convs, laid out group by group). The active counts are set
on the layer by its model (``SlimNet.set_channels``), never read from global state.

**Coherent sharing.** Every channel of every tensor has one place in the tensor at the max config,
and at any config the active tensor holds a fixed subset of those channels (``channel_index``).
Every layer indexes its parameters by those places, so a weight element used by two configs
connects the same input channel to the same output channel in both. For a group name the active
channels are the leading ones, and the layer uses the leading slice of its weight: a view, never a
copy. Concatenations and per-group tensors keep the leading channels of each part (of each
group's share), which is not a leading slice of the whole tensor: those layers gather their
active rows / columns (``index_select``, a copy of the used weights only).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Mapping, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from .ops import depthwise_conv2d


@dataclass(frozen=True)
class PerGroup:
    """Channel ref of a tensor read or written by convs with ``groups`` groups (ShuffleNet).

    The tensor is ``groups`` equal blocks, block ``i`` being group ``i``'s channels. Each block
    holds its share (``count / groups`` channels) of every part, in order; ``parts`` is one group
    name or several whose counts add up (a per-group concatenation). A config keeps the leading
    channels of each part's share in every block, so a channel keeps its group and its place in
    the group's block at every config: the layout grouped convs need to share weights coherently.
    At the max config the layout is the plain tensor; every count must be a multiple of ``groups``.
    """

    parts: tuple
    groups: int

    def __post_init__(self):
        parts = (self.parts,) if isinstance(self.parts, str) else tuple(self.parts)
        if not parts or not all(isinstance(p, str) for p in parts):
            raise ValueError(f"PerGroup parts must be group names, got {self.parts!r}")
        if isinstance(self.groups, bool) or not isinstance(self.groups, int) or self.groups < 1:
            raise ValueError(f"PerGroup groups must be a positive integer, got {self.groups!r}")
        object.__setattr__(self, "parts", parts)


ChannelRef = Union[int, str, tuple, PerGroup]


def ref_groups(ref: ChannelRef) -> tuple:
    """The channel group names a ref depends on (none for a fixed int)."""
    if isinstance(ref, int):
        return ()
    if isinstance(ref, str):
        return (ref,)
    return ref.parts if isinstance(ref, PerGroup) else tuple(ref)


def resolve(ref: ChannelRef, channels: Mapping[str, int]) -> int:
    """Channel count of ``ref`` under a config (or under a space's maxima)."""
    if isinstance(ref, int):
        return ref
    if isinstance(ref, str):
        return channels[ref]
    return sum(channels[g] for g in ref_groups(ref))


def channel_index(ref: ChannelRef, channels: Mapping[str, int], max_counts: Mapping[str, int]):
    """Places, in the tensor at ``max_counts``, of the channels active at ``channels``, in the
    order the active tensor holds them; ``None`` when they are the leading ones (a fixed int, a
    group name, or any ref at its maximum).

    A tuple is a plain concatenation: each part's leading channels at its own offset. A
    :class:`PerGroup` is ``groups`` blocks, each holding every part's share in order.
    """
    if isinstance(ref, (int, str)):
        return None
    parts, groups = (ref.parts, ref.groups) if isinstance(ref, PerGroup) else (tuple(ref), 1)
    return _channel_index(parts, groups, tuple(channels[p] for p in parts), tuple(max_counts[p] for p in parts))


@functools.lru_cache(maxsize=4096)
def _channel_index(parts: tuple, groups: int, counts: tuple, maxes: tuple):
    for name, c, m in zip(parts, counts, maxes):
        if c % groups or m % groups:
            raise ValueError(f"group {name!r}: {c} channels (max {m}) do not split into {groups} equal groups")
    index, block = [], sum(maxes) // groups
    for i in range(groups):
        start = i * block
        for c, m in zip(counts, maxes):
            index.extend(range(start, start + c // groups))
            start += m // groups
    return None if index == list(range(len(index))) else tuple(index)


@functools.lru_cache(maxsize=4096)
def _index_tensor(index: tuple, device: torch.device) -> torch.Tensor:
    return torch.tensor(index, dtype=torch.long, device=device)


def _as_tensor(index, like: torch.Tensor):
    return None if index is None else _index_tensor(index, like.device)


def _max_counts(max_counts, *refs_and_totals) -> dict:
    """Each ref's groups -> max count: from ``max_counts`` (e.g. the space's max config), or for a
    one-group ref from the layer's own max size; checked against the layer's sizes."""
    known = dict(max_counts or {})
    out = {}
    for ref, total in refs_and_totals:
        names = ref_groups(ref)
        if len(names) == 1 and names[0] not in known:
            known[names[0]] = total
        missing = [n for n in names if n not in known]
        if missing:
            raise ValueError(f"channel ref {ref!r} concatenates several groups: pass max_counts "
                             f"(the max count of each of {list(names)})")
        out.update({n: known[n] for n in names})
        if names and resolve(ref, out) != total:
            raise ValueError(f"channel ref {ref!r} has {resolve(ref, out)} channels at its maximum, "
                             f"the layer was made for {total}")
    return out


def take(t: torch.Tensor, dim: int, n: int, index: torch.Tensor | None) -> torch.Tensor:
    """The ``n`` active entries of ``t`` along ``dim``: the leading ones when ``index`` is None (a
    view, never a copy), else the gathered ``index`` entries (a copy).

    A dim already at size ``n`` is not sliced, so a layer at its maximum width runs on the
    parameter itself and autograd records no slice (whose backward allocates a full-size gradient
    and copies into it) for it.
    """
    if index is None:
        return t.narrow(dim, 0, n) if n != t.shape[dim] else t
    if index.device != t.device:
        index = index.to(t.device)
    return t.index_select(dim, index)


class SlimModule:
    """Mixin: a module whose active channel counts follow the model's config."""

    def activate(self, cfg) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def export_to(self, child: nn.Module) -> None:  # pragma: no cover - interface
        """Copy the parameters used at the active config into the equivalent plain layer ``child``."""
        raise NotImplementedError


class SlimConv2d(nn.Conv2d, SlimModule):
    """Conv2d over the active part of a max-size weight. ``depthwise`` convs use groups = active
    channels; grouped convs keep a fixed number of groups and read and write :class:`PerGroup`
    tensors of that many groups, so each group uses its own leading channels (its block of rows
    and the same leading columns in every group).

    ``max_counts`` (group -> max count, e.g. the space's max config) is needed only for refs that
    concatenate several groups."""

    def __init__(self, in_ref: ChannelRef, out_ref: ChannelRef, max_in: int, max_out: int,
                 kernel_size: int, stride: int = 1, padding: int | None = None, groups: int = 1,
                 depthwise: bool = False, bias: bool = False, max_counts: Mapping[str, int] | None = None):
        if depthwise and (max_in != max_out or in_ref != out_ref):
            raise ValueError(f"depthwise conv needs the same input and output channels, got {in_ref!r} "
                             f"({max_in}) and {out_ref!r} ({max_out})")
        if groups > 1 and not depthwise:
            for ref in (in_ref, out_ref):
                if not isinstance(ref, int) and not (isinstance(ref, PerGroup) and ref.groups == groups):
                    raise ValueError(
                        f"a grouped conv ({groups} groups) reads and writes per-group tensors: its channel "
                        f"refs must be fixed ints or PerGroup(..., {groups}), got {ref!r}")
        padding = (kernel_size - 1) // 2 if padding is None else padding
        super().__init__(max_in, max_out, kernel_size, stride, padding,
                         groups=max_in if depthwise else groups, bias=bias)
        self.in_ref, self.out_ref = in_ref, out_ref
        self.depthwise = depthwise
        self.fixed_groups = 1 if depthwise else groups
        self.max_counts = _max_counts(max_counts, (in_ref, max_in), (out_ref, max_out))
        self.active_in, self.active_out, self.active_groups = max_in, max_out, self.groups
        self._rows = self._cols = None     # active rows / columns when not the leading ones

    def activate(self, cfg) -> None:
        self.active_in = resolve(self.in_ref, cfg)
        self.active_out = resolve(self.out_ref, cfg)
        self.active_groups = self.active_out if self.depthwise else self.fixed_groups
        rows = channel_index(self.out_ref, cfg, self.max_counts)
        cols = None if self.depthwise else channel_index(self.in_ref, cfg, self.max_counts)
        if cols is not None and self.fixed_groups > 1:
            # a per-group input: every group's columns are the places of the first block's channels
            cols = cols[: self.active_in // self.fixed_groups]
            cols = None if cols == tuple(range(len(cols))) else cols
        self._rows, self._cols = _as_tensor(rows, self.weight), _as_tensor(cols, self.weight)

    def sliced(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        in_per_group = 1 if self.depthwise else self.active_in // self.fixed_groups
        weight = take(take(self.weight, 0, self.active_out, self._rows), 1, in_per_group, self._cols)
        bias = take(self.bias, 0, self.active_out, self._rows) if self.bias is not None else None
        return weight, bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.sliced()
        if self.depthwise:
            return depthwise_conv2d(x, weight, bias, self.stride, self.padding, self.dilation)
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.active_groups)

    def export_to(self, child: nn.Conv2d) -> None:
        weight, bias = self.sliced()
        child.weight.copy_(weight)
        if bias is not None:
            child.bias.copy_(bias)


class SlimLinear(nn.Linear, SlimModule):
    """Linear over the active part of a max-size weight (``weight[:out, :in]`` for group refs)."""

    def __init__(self, in_ref: ChannelRef, out_ref: ChannelRef, max_in: int, max_out: int, bias: bool = True,
                 max_counts: Mapping[str, int] | None = None):
        super().__init__(max_in, max_out, bias=bias)
        self.in_ref, self.out_ref = in_ref, out_ref
        self.max_counts = _max_counts(max_counts, (in_ref, max_in), (out_ref, max_out))
        self.active_in, self.active_out = max_in, max_out
        self._rows = self._cols = None

    def activate(self, cfg) -> None:
        self.active_in = resolve(self.in_ref, cfg)
        self.active_out = resolve(self.out_ref, cfg)
        self._rows = _as_tensor(channel_index(self.out_ref, cfg, self.max_counts), self.weight)
        self._cols = _as_tensor(channel_index(self.in_ref, cfg, self.max_counts), self.weight)

    def sliced(self):
        weight = take(take(self.weight, 0, self.active_out, self._rows), 1, self.active_in, self._cols)
        bias = take(self.bias, 0, self.active_out, self._rows) if self.bias is not None else None
        return weight, bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, *self.sliced())

    def export_to(self, child: nn.Linear) -> None:
        weight, bias = self.sliced()
        child.weight.copy_(weight)
        if bias is not None:
            child.bias.copy_(bias)


class SlimAdaptiveAvgPool2d(nn.AdaptiveAvgPool2d):
    """Global pooling that knows its channel ref, so MACs can be counted without a forward."""

    def __init__(self, ref: ChannelRef, output_size=1):
        super().__init__(output_size)
        self.ref = ref


class SlimAvgPool2d(nn.AvgPool2d):
    """Strided average pooling (ShuffleNet shortcut) that knows its channel ref."""

    def __init__(self, ref: ChannelRef, kernel_size: int, stride: int, padding: int = 0):
        super().__init__(kernel_size, stride, padding)
        self.ref = ref


class _StatsAccumulator:
    """Exact per-channel mean / unbiased variance over every value seen (float64 sums)."""

    def __init__(self):
        self.n = 0
        self.s1 = None
        self.s2 = None

    def add(self, x: torch.Tensor) -> None:
        xd = x.detach().to(torch.float64)
        s1 = xd.sum(dim=(0, 2, 3))
        s2 = (xd * xd).sum(dim=(0, 2, 3))
        self.n += x.numel() // x.shape[1]
        self.s1 = s1 if self.s1 is None else self.s1 + s1
        self.s2 = s2 if self.s2 is None else self.s2 + s2

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.n < 2:
            raise RuntimeError("BN calibration saw fewer than 2 values per channel")
        mean = self.s1 / self.n
        var = (self.s2 - self.s1 * mean) / (self.n - 1)
        return mean, var.clamp_min(0)   # float64; stored in the layer's own dtype


class _CalibratableBN(nn.Module, SlimModule):
    """Shared behaviour of the two slimmable BN kinds: exact post-training statistics.

    While calibrating, the layer normalises with batch statistics (as in training, so every
    later layer sees training-time inputs) and accumulates the exact mean and variance of its
    input over all calibration images; ``end_calibration`` stores them for the active config.
    """

    _accumulator: _StatsAccumulator | None = None

    def begin_calibration(self) -> None:
        self._accumulator = _StatsAccumulator()

    def end_calibration(self) -> None:
        acc, self._accumulator = self._accumulator, None
        if acc is None or acc.s1 is None:
            raise RuntimeError("end_calibration without any calibration forward pass")
        self._store_stats(*acc.result())

    def _store_stats(self, mean: torch.Tensor, var: torch.Tensor) -> None:  # pragma: no cover
        raise NotImplementedError

    def _calibrating(self, x, weight, bias):
        self._accumulator.add(x)
        return F.batch_norm(x, None, None, weight, bias, True, 0.0, self.eps)


class SlimBatchNorm2d(_CalibratableBN):
    """BatchNorm for universally slimmable nets: shared, sliced affine parameters.

    Running statistics are not tracked in training (they would be wrong for every width but
    one). After training, ``slimnet.calibrate.calibrate_bn`` computes the statistics of any config and
    stores them under the config's key as buffers ``stats_<key>_mean`` / ``stats_<key>_var``;
    several configs coexist and are saved in the state dict.

    ``track_shared_stats=True`` gives the naive shared BN (one set of running statistics, sliced,
    updated by every width) that the Slimmable Networks paper shows collapses; it exists for that
    ablation. Calibrated statistics still take precedence over it.
    """

    def __init__(self, ref: ChannelRef, max_channels: int, eps: float = 1e-5, momentum: float = 0.1,
                 track_shared_stats: bool = False, max_counts: Mapping[str, int] | None = None):
        super().__init__()
        self.ref, self.num_features, self.eps, self.momentum = ref, max_channels, eps, momentum
        self.max_counts = _max_counts(max_counts, (ref, max_channels))
        self._channels = None     # places of the active channels when not the leading ones
        self.weight = nn.Parameter(torch.ones(max_channels))
        self.bias = nn.Parameter(torch.zeros(max_channels))
        self.track_shared_stats = track_shared_stats
        if track_shared_stats:
            self.register_buffer("running_mean", torch.zeros(max_channels))
            self.register_buffer("running_var", torch.ones(max_channels))
        self.active, self.active_key, self.active_cfg = max_channels, None, None

    def activate(self, cfg) -> None:
        self.active = resolve(self.ref, cfg)
        self.active_key = cfg.key
        self.active_cfg = cfg
        self._channels = _as_tensor(channel_index(self.ref, cfg, self.max_counts), self.weight)

    def _take(self, t: torch.Tensor) -> torch.Tensor:
        return take(t, 0, self.active, self._channels)

    @property
    def calibrated_keys(self) -> list[str]:
        return [name[6:-5] for name, _ in self.named_buffers(recurse=False)
                if name.startswith("stats_") and name.endswith("_mean")]

    def _stats(self):
        """(mean, var) used in eval mode for the active config, or raise saying what to do."""
        mean = getattr(self, f"stats_{self.active_key}_mean", None)
        if mean is not None:
            return mean, getattr(self, f"stats_{self.active_key}_var")
        if self.track_shared_stats:
            return self._take(self.running_mean), self._take(self.running_var)
        raise RuntimeError(
            f"no BN statistics for config {self.active_key} ({self.active} channels here): universally "
            "slimmable BN does not track statistics in training. Calibrate this config first: "
            "slimnet.calibrate.calibrate_bn(net, cfg, data) (or `slimnet calibrate`), or evaluate in train mode.")

    def _store_stats(self, mean, var) -> None:
        for suffix, value in (("mean", mean), ("var", var)):
            name = f"stats_{self.active_key}_{suffix}"
            value = value.to(self.weight.device, self.weight.dtype)
            if hasattr(self, name):
                getattr(self, name).copy_(value)
            else:
                self.register_buffer(name, value.clone())

    def drop_stats(self, key: str | None = None) -> None:
        """Forget calibrated statistics (of one config key, or all)."""
        for k in ([key] if key else self.calibrated_keys):
            for suffix in ("mean", "var"):
                self._buffers.pop(f"stats_{k}_{suffix}", None)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Calibrated statistics are created on demand: register every stored config's buffers
        # before the default loader looks for them.
        for name, value in state_dict.items():
            if name.startswith(prefix + "stats_") and "." not in name[len(prefix):]:
                local = name[len(prefix):]
                if local not in self._buffers:
                    self.register_buffer(local, torch.empty_like(value, device=self.weight.device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self._take(self.weight), self._take(self.bias)
        if self._accumulator is not None:
            return self._calibrating(x, weight, bias)
        if self.training:
            if self.track_shared_stats:
                # leading slices of 1-D buffers are contiguous views, updated in place; gathered
                # statistics are updated in their copy and written back
                mean, var = self._take(self.running_mean), self._take(self.running_var)
                out = F.batch_norm(x, mean, var, weight, bias, True, self.momentum, self.eps)
                if self._channels is not None:
                    self.running_mean.index_copy_(0, self._channels.to(mean.device), mean)
                    self.running_var.index_copy_(0, self._channels.to(var.device), var)
                return out
            return F.batch_norm(x, None, None, weight, bias, True, 0.0, self.eps)
        mean, var = self._stats()
        return F.batch_norm(x, mean, var, weight, bias, False, 0.0, self.eps)

    def export_to(self, child: nn.BatchNorm2d) -> None:
        mean, var = self._stats()
        child.weight.copy_(self._take(self.weight))
        child.bias.copy_(self._take(self.bias))
        child.running_mean.copy_(mean)
        child.running_var.copy_(var)

    def extra_repr(self) -> str:
        return f"{self.num_features}, ref={self.ref!r}, calibrated={len(self.calibrated_keys)}"


class SwitchableBatchNorm2d(_CalibratableBN):
    """BatchNorm for slimmable nets with a fixed list of configs: one private BN (own affine and
    own running statistics) per registered config, selected by the config's key."""

    def __init__(self, ref: ChannelRef, configs: list, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        self.ref, self.eps = ref, eps
        self.keys = [cfg.key for cfg in configs]
        self.bns = nn.ModuleList(nn.BatchNorm2d(resolve(ref, cfg), eps=eps, momentum=momentum) for cfg in configs)
        self._index = {k: i for i, k in enumerate(self.keys)}
        self.active_index: int | None = len(configs) - 1
        self.active_key = self.keys[-1]

    def activate(self, cfg) -> None:
        self.active_key = cfg.key
        self.active_index = self._index.get(cfg.key)

    def _active_bn(self) -> nn.BatchNorm2d:
        if self.active_index is None:
            raise RuntimeError(
                f"config {self.active_key} is not one of this model's {len(self.keys)} switchable BN "
                "configs; switchable BN only has statistics for the configs it was built with. "
                "Use one of net.switchable_configs, or build with bn='universal' and calibrate.")
        return self.bns[self.active_index]

    def _store_stats(self, mean, var) -> None:
        bn = self._active_bn()
        bn.running_mean.copy_(mean)
        bn.running_var.copy_(var)
        bn.num_batches_tracked.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bn = self._active_bn()
        if self._accumulator is not None:
            return self._calibrating(x, bn.weight, bn.bias)
        return bn(x)

    def export_to(self, child: nn.BatchNorm2d) -> None:
        child.load_state_dict(self._active_bn().state_dict())


class Layers:
    """Builds a model's layers from channel refs: slimmable layers for a supernet (sized at the
    space's maxima) or plain ``torch.nn`` layers with exactly a config's channels for a child.

    One model definition calls this factory, so supernet and child share their structure and
    module names by construction (export copies parameters name by name).
    """

    def __init__(self, space, child=None, bn: str = "universal", switchable=None):
        if bn not in ("universal", "switchable", "shared"):
            raise ValueError(f"bn must be 'universal', 'switchable' or 'shared', got {bn!r}")
        if bn == "switchable" and not switchable and child is None:
            raise ValueError("bn='switchable' needs the list of configs (or widths) to switch between")
        self.space, self.child, self.bn_mode, self.switchable = space, child, bn, switchable
        self._max = space.max()

    def count(self, ref: ChannelRef) -> int:
        return resolve(ref, self.child if self.child is not None else self._max)

    def conv(self, in_ref, out_ref, kernel_size, stride=1, padding=None, groups=1, depthwise=False, bias=False):
        if self.child is None:
            return SlimConv2d(in_ref, out_ref, self.count(in_ref), self.count(out_ref), kernel_size, stride,
                              padding, groups, depthwise, bias, max_counts=self._max)
        cin, cout = self.count(in_ref), self.count(out_ref)
        padding = (kernel_size - 1) // 2 if padding is None else padding
        return nn.Conv2d(cin, cout, kernel_size, stride, padding, groups=cin if depthwise else groups, bias=bias)

    def bn(self, ref):
        if self.child is not None:
            return nn.BatchNorm2d(self.count(ref))
        if self.bn_mode == "switchable":
            return SwitchableBatchNorm2d(ref, self.switchable)
        return SlimBatchNorm2d(ref, self.count(ref), track_shared_stats=self.bn_mode == "shared",
                               max_counts=self._max)

    def linear(self, in_ref, out_ref, bias=True):
        if self.child is None:
            return SlimLinear(in_ref, out_ref, self.count(in_ref), self.count(out_ref), bias, max_counts=self._max)
        return nn.Linear(self.count(in_ref), self.count(out_ref), bias)

    def global_pool(self, ref):
        return nn.AdaptiveAvgPool2d(1) if self.child is not None else SlimAdaptiveAvgPool2d(ref, 1)

    def avg_pool(self, ref, kernel_size, stride, padding=0):
        if self.child is not None:
            return nn.AvgPool2d(kernel_size, stride, padding)
        return SlimAvgPool2d(ref, kernel_size, stride, padding)

    def conv_bn(self, in_ref, out_ref, kernel_size, stride=1, act=nn.ReLU, depthwise=False, groups=1):
        """conv -> BN -> activation (or none when ``act`` is None), as one Sequential."""
        layers = [self.conv(in_ref, out_ref, kernel_size, stride, groups=groups, depthwise=depthwise),
                  self.bn(out_ref)]
        if act is not None:
            layers.append(act(inplace=True))
        return nn.Sequential(*layers)
