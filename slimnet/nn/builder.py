"""``Layers``: the factory one model definition calls to build a supernet or a plain child."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from .bn import SlimBatchNorm2d, SwitchableBatchNorm2d
from .layers import SlimAdaptiveAvgPool2d, SlimAvgPool2d, SlimConv2d, SlimLinear
from .protocol import SlimModule
from .refs import ChannelRef, resolve


class Layers:
    """Builds a model's layers from channel refs: slimmable layers for a supernet (sized at the
    space's maxima) or plain ``torch.nn`` layers with exactly a config's channels for a child.

    One model definition calls this factory, so supernet and child share their structure and
    module names by construction (export copies parameters name by name). A child's layer is the
    supernet layer's own ``plain(cfg)``: the slimmable layer is made on the meta device (no
    memory, no random numbers drawn) and asked for its plain counterpart, so the layer's file is
    the one place that knows it.
    """

    def __init__(self, space, child=None, bn: str = "universal", switchable=None):
        if bn not in ("universal", "switchable", "shared"):
            raise ValueError(f"bn must be 'universal', 'switchable' or 'shared', got {bn!r}")
        if bn == "switchable" and not switchable and child is None:
            raise ValueError("bn='switchable' needs the list of configs (or widths) to switch between")
        self.space, self.child, self.bn_mode, self.switchable = space, child, bn, switchable
        self._max = space.max()

    def count(self, ref: ChannelRef) -> int:
        """Channels of ``ref`` in the model being built (the child's, or the supernet's maxima)."""
        return resolve(ref, self.child if self.child is not None else self._max)

    def max_count(self, ref: ChannelRef) -> int:
        """Channels of ``ref`` at the space's max config: the size a slimmable layer is made at."""
        return resolve(ref, self._max)

    @property
    def max_counts(self):
        """The space's max config (group -> max channels), for slimmable layers' ``max_counts``."""
        return self._max

    def layer(self, make_slim: Callable[[], SlimModule]) -> nn.Module:
        """Any slimmable layer kind: ``make_slim()`` (a layer sized with :meth:`max_count`) for a
        supernet; for a child, the plain layer that slimmable layer gives (``plain(cfg)``). A new
        layer kind needs no method here: a model calls ``L.layer(lambda: MyLayer(...))``."""
        if self.child is None:
            return make_slim()
        with torch.device("meta"):
            slim = make_slim()
        return slim.plain(self.child)

    def conv(self, in_ref, out_ref, kernel_size, stride=1, padding=None, groups=1, depthwise=False, bias=False):
        return self.layer(lambda: SlimConv2d(in_ref, out_ref, self.max_count(in_ref), self.max_count(out_ref),
                                             kernel_size, stride, padding, groups, depthwise, bias,
                                             max_counts=self._max))

    def bn(self, ref):
        if self.bn_mode == "switchable" and self.child is None:
            return SwitchableBatchNorm2d(ref, self.switchable)
        # a child's BN is the same plain BatchNorm2d in every mode (export fills in its statistics)
        shared = self.bn_mode == "shared"
        return self.layer(lambda: SlimBatchNorm2d(ref, self.max_count(ref), track_shared_stats=shared,
                                                  max_counts=self._max))

    def linear(self, in_ref, out_ref, bias=True):
        return self.layer(lambda: SlimLinear(in_ref, out_ref, self.max_count(in_ref), self.max_count(out_ref), bias,
                                             max_counts=self._max))

    def global_pool(self, ref):
        return self.layer(lambda: SlimAdaptiveAvgPool2d(ref, 1))

    def avg_pool(self, ref, kernel_size, stride, padding=0):
        return self.layer(lambda: SlimAvgPool2d(ref, kernel_size, stride, padding))

    def conv_bn(self, in_ref, out_ref, kernel_size, stride=1, act=nn.ReLU, depthwise=False, groups=1):
        """conv -> BN -> activation (or none when ``act`` is None), as one Sequential."""
        layers = [self.conv(in_ref, out_ref, kernel_size, stride, groups=groups, depthwise=depthwise),
                  self.bn(out_ref)]
        if act is not None:
            layers.append(act(inplace=True))
        return nn.Sequential(*layers)
