"""Slimmable BatchNorm: shared BN with exact post-training calibration, and switchable BN."""
from __future__ import annotations

import contextlib
from typing import Iterable, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import SlimModule
from .protocol import LayerCost, LayerRefs
from .refs import ChannelRef, _as_tensor, _max_counts, channel_index, resolve, take


class BNStatistics:
    """Exact per-channel mean / unbiased variance of every value one BN layer saw (float64 sums)."""

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
        if self.s1 is None:
            raise RuntimeError("BN statistics stored without any calibration forward pass")
        if self.n < 2:
            raise RuntimeError("BN calibration saw fewer than 2 values per channel")
        mean = self.s1 / self.n
        var = (self.s2 - self.s1 * mean) / (self.n - 1)
        return mean, var.clamp_min(0)   # float64; stored in the layer's own dtype


class _BatchStatisticsOnly:
    """A collecting layer that records nothing: it normalises with the batch's statistics."""

    def add(self, x: torch.Tensor) -> None:
        pass


_BATCH_ONLY = _BatchStatisticsOnly()


class _CalibratableBN(nn.Module, SlimModule):
    """Shared behaviour of the two slimmable BN kinds: exact post-training statistics.

    While collecting (:class:`StatsCollector`), the layer normalises with batch statistics (as in
    training, so every later layer sees training-time inputs) and adds its input to the
    :class:`BNStatistics` it is recording into, if any.
    """

    _accumulator: BNStatistics | _BatchStatisticsOnly | None = None

    def begin_calibration(self) -> None:
        """Collect this layer's statistics alone (``StatsCollector`` does it for many layers)."""
        self._accumulator = BNStatistics()

    def end_calibration(self) -> None:
        acc, self._accumulator = self._accumulator, None
        if not isinstance(acc, BNStatistics):
            raise RuntimeError("end_calibration without any calibration forward pass")
        self._store_stats(*acc.result())

    def _store_stats(self, mean: torch.Tensor, var: torch.Tensor) -> None:  # pragma: no cover
        raise NotImplementedError

    def _calibrating(self, x, weight, bias):
        self._accumulator.add(x)
        return F.batch_norm(x, None, None, weight, bias, True, 0.0, self.eps)


CalibratableBN = _CalibratableBN   # the public name of the BN kinds a StatsCollector drives


class StatsCollector:
    """Exact post-training BN statistics of one or many configs, for a set of BN layers.

    Inside ``with collector:`` every layer normalises with its batch's statistics and records
    nothing; ``with collector.recording(stats):`` routes the layers of ``stats`` (layer ->
    :class:`BNStatistics`, from ``new_stats``) into their statistics for the forward passes run
    inside it. ``store(stats)`` then stores each layer's statistics for the layer's active
    config. So one collector calibrates several configs in the same passes (switch the config,
    record into that config's statistics), and ``with collector:`` alone is "BN on batch
    statistics" without touching the layers' train/eval mode.
    """

    def __init__(self, layers: Iterable[_CalibratableBN]):
        self.layers = list(layers)

    def __enter__(self) -> "StatsCollector":
        for m in self.layers:
            m._accumulator = _BATCH_ONLY
        return self

    def __exit__(self, *exc) -> None:
        for m in self.layers:
            m._accumulator = None

    def new_stats(self, layers: Iterable[_CalibratableBN] | None = None) -> dict[_CalibratableBN, BNStatistics]:
        """Empty statistics for ``layers`` (default: all of this collector's)."""
        return {m: BNStatistics() for m in (self.layers if layers is None else layers)}

    @contextlib.contextmanager
    def recording(self, stats: Mapping[_CalibratableBN, BNStatistics]):
        """Forward passes inside add every layer of ``stats`` to its statistics; afterwards those
        layers record nothing again."""
        for m, acc in stats.items():
            m._accumulator = acc
        try:
            yield
        finally:
            for m in stats:
                m._accumulator = _BATCH_ONLY

    @staticmethod
    def store(stats: Mapping[_CalibratableBN, BNStatistics]) -> None:
        """Store each layer's statistics for its active config (replacing what it had)."""
        for m, acc in stats.items():
            m._store_stats(*acc.result())

    @staticmethod
    def copy_stats(layers: Iterable["SlimBatchNorm2d"], key: str) -> None:
        """Store, for each layer's active config, the statistics it holds for config ``key``."""
        for m in layers:
            m._store_stats(*m.stats_for(key))


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

    def stats_for(self, key: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The calibrated (mean, var) of config ``key``, or None when it has none."""
        mean = getattr(self, f"stats_{key}_mean", None)
        return None if mean is None else (mean, getattr(self, f"stats_{key}_var"))

    def _stats(self):
        """(mean, var) used in eval mode for the active config, or raise saying what to do."""
        stats = self.stats_for(self.active_key)
        if stats is not None:
            return stats
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

    @torch.no_grad()
    def embed_(self, cfg, layer: nn.BatchNorm2d) -> None:
        """Write ``layer``'s affine parameters (and, for shared statistics, its running ones) into
        the channels ``cfg`` uses: the inverse of ``export_to`` (calibrated statistics are stored
        with ``_store_stats`` by the caller)."""
        self.activate(cfg)
        places = self._take(torch.arange(self.num_features, device=self.weight.device))
        pairs = [("weight", "weight"), ("bias", "bias")]
        if self.track_shared_stats:
            pairs += [("running_mean", "running_mean"), ("running_var", "running_var")]
        for mine, theirs in pairs:
            source = getattr(layer, theirs, None)
            if source is not None:
                getattr(self, mine)[places] = source.detach().to(getattr(self, mine))

    def export_to(self, child: nn.BatchNorm2d) -> None:
        mean, var = self._stats()
        child.weight.copy_(self._take(self.weight))
        child.bias.copy_(self._take(self.bias))
        child.running_mean.copy_(mean)
        child.running_var.copy_(var)

    @torch.no_grad()
    def permute_channels_(self, in_index, out_index) -> None:
        """Affine parameters, shared running statistics and full-width calibrated statistics move
        with their channels; a narrower config's calibrated statistics belong to channels that
        are no longer its leading ones, so they are dropped (calibrate again)."""
        if out_index is None:
            return
        for name, t in [*self.named_parameters(recurse=False), *self.named_buffers(recurse=False)]:
            if t.dim() == 1 and t.numel() == self.num_features:
                t.copy_(t[out_index])
        for key in self.calibrated_keys:
            if self.stats_for(key)[0].numel() != self.num_features:
                self.drop_stats(key)

    def extra_repr(self) -> str:
        return f"{self.num_features}, ref={self.ref!r}, calibrated={len(self.calibrated_keys)}"

    # -- SlimModule protocol (slimnet.nn.protocol) --------------------------------------------
    def channel_refs(self) -> LayerRefs:
        return LayerRefs(self.ref, self.ref)

    def cost(self, cfg, in_shape: tuple, out_shape: tuple) -> LayerCost:
        return LayerCost(macs=0, params=2 * resolve(self.ref, cfg), pool_macs=0)   # affine weight and bias

    def plain(self, cfg) -> nn.BatchNorm2d:
        return nn.BatchNorm2d(resolve(self.ref, cfg), eps=self.eps, momentum=self.momentum)

    def decay_roles(self) -> dict[str, str]:
        return {name: "norm" for name, _ in self.named_parameters(recurse=False)}


SWITCHABLE_NOT_REORDERABLE = ("switchable BN keeps a private BN of each config's leading channels: reorder "
                              "channels before making the S-Net, or in a supernet with universal or shared BN")


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

    def permute_channels_(self, in_index, out_index) -> None:
        if out_index is not None:
            raise TypeError(SWITCHABLE_NOT_REORDERABLE)

    # -- SlimModule protocol (slimnet.nn.protocol) --------------------------------------------
    def channel_refs(self) -> LayerRefs:
        return LayerRefs(self.ref, self.ref)

    def cost(self, cfg, in_shape: tuple, out_shape: tuple) -> LayerCost:
        return LayerCost(macs=0, params=2 * resolve(self.ref, cfg), pool_macs=0)   # affine weight and bias

    def plain(self, cfg) -> nn.BatchNorm2d:
        return nn.BatchNorm2d(resolve(self.ref, cfg), eps=self.eps, momentum=self.bns[0].momentum)

    def decay_roles(self) -> dict[str, str]:
        return {}   # no parameters of its own: each private BN is a plain nn.BatchNorm2d (role "norm")

def is_calibrated_stat(name: str) -> bool:
    """Whether a state-dict entry is a per-config calibrated BN statistic (of a ``SlimBatchNorm2d``)."""
    return ".stats_" in name or name.startswith("stats_")


def calibrated_stats(net: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of every per-config calibrated BN statistic of ``net``, by state-dict name."""
    return {k: v.clone() for k, v in net.state_dict().items() if is_calibrated_stat(k)}


def restore_calibrated_stats(net: nn.Module, saved: Mapping[str, torch.Tensor]) -> None:
    """Make ``saved`` (from :func:`calibrated_stats`) ``net``'s calibrated statistics again: every
    statistic computed since is dropped."""
    for m in net.modules():
        if isinstance(m, SlimBatchNorm2d):
            m.drop_stats()
    if saved:
        net.load_state_dict(saved, strict=False)
