"""``Layers``: the factory one model definition calls to build a supernet or a plain child."""
from __future__ import annotations

import torch.nn as nn

from .bn import SlimBatchNorm2d, SwitchableBatchNorm2d
from .layers import SlimAdaptiveAvgPool2d, SlimAvgPool2d, SlimConv2d, SlimLinear
from .refs import ChannelRef, resolve

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
