"""MobileNet v1 (Howard et al. 2017), slimmable.

Channel groups: ``stem`` and ``c1`` ... ``c13`` (the pointwise conv outputs; each depthwise conv
follows its input group). Width rule: make_divisible(c * w, 8). Small inputs (< 128 px) use
stride 1 in the stem and in the first stride-2 block, so 32x32 ends at 4x4.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..space import ChannelGroup, make_divisible
from .base import SlimNet, small_input

STEM = 32
# (pointwise output channels, depthwise stride)
BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
          (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1)]


class MobileNetV1(SlimNet):
    model_name = "mobilenet_v1"

    @staticmethod
    def channel_groups(max_width, min_width, **_):
        named = [("stem", STEM)] + [(f"c{i}", c) for i, (c, _s) in enumerate(BLOCKS, start=1)]
        return [ChannelGroup(n, c, make_divisible(c * max_width), make_divisible(c * min_width)) for n, c in named]

    def build(self, L, num_classes, in_channels, input_size, **_):
        small = small_input(input_size)
        layers = [L.conv_bn(in_channels, "stem", 3, 1 if small else 2)]
        prev, first_stride2 = "stem", True
        for i, (_c, s) in enumerate(BLOCKS, start=1):
            if small and s == 2 and first_stride2:
                s, first_stride2 = 1, False
            layers.append(nn.Sequential(L.conv_bn(prev, prev, 3, s, depthwise=True), L.conv_bn(prev, f"c{i}", 1)))
            prev = f"c{i}"
        self.features = nn.Sequential(*layers)
        self.pool = L.global_pool(prev)
        self.classifier = L.linear(prev, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))
