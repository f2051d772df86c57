"""Slimmable conv, linear and pooling layers: max-size weights run at the active channel counts."""
from __future__ import annotations

import math
from typing import Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.modules.utils import _pair

from ..ops import depthwise_conv2d
from .protocol import LayerCost, LayerRefs, SlimModule
from .refs import (
    ChannelRef,
    PerGroup,
    _as_tensor,
    _max_counts,
    channel_index,
    resolve,
    take,
)

__all__ = ["SlimAdaptiveAvgPool2d", "SlimAvgPool2d", "SlimConv2d", "SlimLinear", "SlimModule"]


def _positions(shape: tuple) -> int:
    """Spatial positions of an ``(N, C, H, W)`` tensor (1 for ``(N, C)``)."""
    return math.prod(shape[2:])


class _SlicedWeightLayer(SlimModule):
    """Conv and linear layers: an input and an output ref, and ``sliced()`` (the active weight and
    bias) that export copies into the child's plain layer."""

    def export_to(self, child: nn.Module) -> None:
        weight, bias = self.sliced()
        child.weight.copy_(weight)
        if bias is not None:
            child.bias.copy_(bias)

    @torch.no_grad()
    def embed_(self, cfg, layer: nn.Module) -> None:
        """Write ``layer``'s parameters (a plain layer with exactly ``cfg``'s channels, like
        ``plain(cfg)``) into the places ``cfg`` uses: the inverse of ``export_to``. The places come
        from ``sliced()`` itself, run on each parameter's element numbers, so every layout it
        reads (leading slices, gathered concatenations, per-group columns) is written back alike."""
        self.activate(cfg)
        for i, name in enumerate(("weight", "bias")):
            param, source = getattr(self, name), getattr(layer, name, None)
            if param is None or source is None:
                continue
            real = param.data
            param.data = torch.arange(real.numel(), dtype=torch.float64, device=real.device).view(real.shape)
            try:     # (a copy: at full size ``sliced`` hands back the parameter itself)
                places = self.sliced()[i].detach().long().clone()
            finally:
                param.data = real
            real.view(-1)[places.reshape(-1)] = source.detach().reshape(-1).to(real)

    def channel_refs(self) -> LayerRefs:
        return LayerRefs(self.in_ref, self.out_ref)

    @torch.no_grad()
    def permute_channels_(self, in_index, out_index) -> None:
        if out_index is not None:
            self.weight.copy_(self.weight[out_index])
            if self.bias is not None:
                self.bias.copy_(self.bias[out_index])
        if in_index is not None:
            self.weight.copy_(self._permuted_columns(in_index))

    def _permuted_columns(self, in_index: torch.Tensor) -> torch.Tensor:
        return self.weight[:, in_index]


class SlimConv2d(nn.Conv2d, _SlicedWeightLayer):
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

    def _permuted_columns(self, in_index: torch.Tensor) -> torch.Tensor:
        if self.depthwise:          # one input channel per output: the output side moved it
            return self.weight
        g = self.fixed_groups
        if g == 1:
            return self.weight[:, in_index]
        # a per-group input: block b of the input is read by the rows of output group b, each
        # through its own columns (the block's channels, counted from the block's start)
        per = self.in_channels // g
        local = in_index.view(g, per) - torch.arange(g, device=in_index.device).unsqueeze(1) * per
        rows = local.repeat_interleave(self.out_channels // g, dim=0)
        return torch.gather(self.weight, 1, rows[:, :, None, None].expand_as(self.weight))

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

    def cost(self, cfg, in_shape: tuple, out_shape: tuple) -> LayerCost:
        cin, cout = resolve(self.in_ref, cfg), resolve(self.out_ref, cfg)
        per_output = self.kernel_size[0] * self.kernel_size[1] * (1 if self.depthwise else cin // self.fixed_groups)
        weights = cout * per_output
        bias = cout if self.bias is not None else 0
        return LayerCost(macs=weights * _positions(out_shape), params=weights + bias, pool_macs=0)

    def plain(self, cfg) -> nn.Conv2d:
        cin, cout = resolve(self.in_ref, cfg), resolve(self.out_ref, cfg)
        return nn.Conv2d(cin, cout, self.kernel_size, self.stride, self.padding, self.dilation,
                         groups=cin if self.depthwise else self.fixed_groups, bias=self.bias is not None,
                         padding_mode=self.padding_mode)

    def decay_roles(self) -> dict[str, str]:
        depthwise = self.depthwise or 1 < self.groups == self.in_channels == self.out_channels
        roles = {"weight": "depthwise" if depthwise else "weight"}
        if self.bias is not None:
            roles["bias"] = "bias"
        return roles


class SlimLinear(nn.Linear, _SlicedWeightLayer):
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

    def cost(self, cfg, in_shape: tuple, out_shape: tuple) -> LayerCost:
        cin, cout = resolve(self.in_ref, cfg), resolve(self.out_ref, cfg)
        bias = cout if self.bias is not None else 0
        positions = math.prod(out_shape[1:-1])   # features are the last dim: (N, ..., features)
        return LayerCost(macs=cout * cin * positions, params=cout * cin + bias, pool_macs=0)

    def plain(self, cfg) -> nn.Linear:
        return nn.Linear(resolve(self.in_ref, cfg), resolve(self.out_ref, cfg), bias=self.bias is not None)

    def decay_roles(self) -> dict[str, str]:
        return {"weight": "weight", "bias": "bias"} if self.bias is not None else {"weight": "weight"}


class _SlimPool(SlimModule):
    """Pooling keeps every channel and has no parameters: it only needs its channel ref, to be costed."""

    ref: ChannelRef

    def activate(self, cfg) -> None:
        pass      # channel-agnostic at run time

    def channel_refs(self) -> LayerRefs:
        return LayerRefs(self.ref, self.ref)

    def export_to(self, child: nn.Module) -> None:
        pass      # no parameters

    def permute_channels_(self, in_index, out_index) -> None:
        pass      # no parameters

    def embed_(self, cfg, plain: nn.Module) -> None:
        self.activate(cfg)      # no parameters

    def decay_roles(self) -> dict[str, str]:
        return {}


class SlimAdaptiveAvgPool2d(nn.AdaptiveAvgPool2d, _SlimPool):
    """Global pooling that knows its channel ref, so MACs can be counted without a forward."""

    def __init__(self, ref: ChannelRef, output_size=1):
        super().__init__(output_size)
        self.ref = ref

    def cost(self, cfg, in_shape: tuple, out_shape: tuple) -> LayerCost:
        pooled = resolve(self.ref, cfg) * _positions(in_shape) * _positions(out_shape)
        return LayerCost(macs=0, params=0, pool_macs=pooled)

    def plain(self, cfg) -> nn.AdaptiveAvgPool2d:
        return nn.AdaptiveAvgPool2d(self.output_size)


class SlimAvgPool2d(nn.AvgPool2d, _SlimPool):
    """Strided average pooling (ShuffleNet shortcut) that knows its channel ref."""

    def __init__(self, ref: ChannelRef, kernel_size: int, stride: int, padding: int = 0):
        super().__init__(kernel_size, stride, padding)
        self.ref = ref

    def cost(self, cfg, in_shape: tuple, out_shape: tuple) -> LayerCost:
        window = math.prod(_pair(self.kernel_size))
        return LayerCost(macs=0, params=0, pool_macs=resolve(self.ref, cfg) * window * _positions(out_shape))

    def plain(self, cfg) -> nn.AvgPool2d:
        return nn.AvgPool2d(self.kernel_size, self.stride, self.padding, self.ceil_mode, self.count_include_pad,
                            self.divisor_override)
