"""Slimmable layers only traced models need: a linear layer reading a flattened feature map."""
from __future__ import annotations

from typing import Mapping

import torch
import torch.nn as nn

from ..nn import LayerCost, SlimLinear
from ..nn.refs import ChannelRef, _as_tensor, _max_counts, channel_index, resolve


class SlimFlattenLinear(SlimLinear):
    """A linear layer after ``flatten`` of an ``(N, C, H, W)`` map (VGG's classifier): its input has
    ``features_per_channel`` (= H * W) features per channel, channel-major, so channel ``j``'s
    features are columns ``j * per ... (j + 1) * per - 1``. ``in_ref`` names the channels; a config
    keeps the columns of its active channels (the leading ``c * per`` for a group name)."""

    def __init__(self, in_ref: ChannelRef, out_ref: ChannelRef, features_per_channel: int, max_in_channels: int,
                 max_out: int, bias: bool = True, max_counts: Mapping[str, int] | None = None):
        nn.Linear.__init__(self, max_in_channels * features_per_channel, max_out, bias=bias)
        self.in_ref, self.out_ref, self.per = in_ref, out_ref, features_per_channel
        self.max_counts = _max_counts(max_counts, (in_ref, max_in_channels), (out_ref, max_out))
        self.active_in, self.active_out = self.in_features, max_out
        self._rows = self._cols = None

    def activate(self, cfg) -> None:
        self.active_in = resolve(self.in_ref, cfg) * self.per
        self.active_out = resolve(self.out_ref, cfg)
        self._rows = _as_tensor(channel_index(self.out_ref, cfg, self.max_counts), self.weight)
        channels = channel_index(self.in_ref, cfg, self.max_counts)
        cols = None if channels is None else tuple(j * self.per + k for j in channels for k in range(self.per))
        self._cols = _as_tensor(cols, self.weight)

    def cost(self, cfg, in_shape: tuple, out_shape: tuple) -> LayerCost:
        cin, cout = resolve(self.in_ref, cfg) * self.per, resolve(self.out_ref, cfg)
        bias = cout if self.bias is not None else 0
        return LayerCost(macs=cout * cin, params=cout * cin + bias, pool_macs=0)

    def plain(self, cfg) -> nn.Linear:
        return nn.Linear(resolve(self.in_ref, cfg) * self.per, resolve(self.out_ref, cfg), bias=self.bias is not None)

    def _permuted_columns(self, in_index):
        per = self.per       # each channel's features move together
        cols = (in_index.unsqueeze(1) * per + torch.arange(per, device=in_index.device)).reshape(-1)
        return self.weight[:, cols]

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, features_per_channel={self.per}"
