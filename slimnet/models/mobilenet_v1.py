"""MobileNet v1 (Howard et al. 2017), slimmable.

Layers as in the paper's Table 1: a 3x3 stride-2 conv, then 13 depthwise-separable blocks (3x3
depthwise + 1x1 pointwise), each conv followed by BN and the activation; global average pool and
a linear classifier. The last depthwise conv has stride 1: Table 1 labels it "s2", but lists a
7x7 input for it and for the layer after it.

The activation is ReLU6 by default, as in the Slimmable Networks reference models, so a child
equals the reference network at equal weights; ``act="relu"`` builds the ReLU variant this
library used before (a different network: its logits differ at equal weights).

Channel groups: ``stem`` and ``c1`` ... ``c13`` (the pointwise conv outputs; each depthwise conv
follows its input group). Width rule: make_divisible(c * w, 8). Small inputs (< 128 px) use
stride 1 in the stem and in the first stride-2 block, so 32x32 ends at 4x4.
"""
from __future__ import annotations

from typing import NamedTuple

import torch.nn as nn

from ..space import ChannelGroup, make_divisible
from .base import SlimNet, small_input

STEM = 32
# (pointwise output channels, depthwise stride)
BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
          (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1)]
ACTIVATIONS = {"relu6": nn.ReLU6, "relu": nn.ReLU}


class Block(NamedTuple):
    """One depthwise-separable block: depthwise on ``in_ref`` (stride ``stride``), then the
    pointwise conv to ``out``, the group it introduces."""
    in_ref: str
    out: ChannelGroup
    stride: int


class Plan(NamedTuple):
    stem: ChannelGroup
    stem_stride: int
    blocks: list[Block]

    @property
    def groups(self) -> list[ChannelGroup]:
        return [self.stem] + [b.out for b in self.blocks]


def block_plan(max_width, min_width, input_size, **_) -> Plan:
    """The stem and the 13 blocks, with their groups: ``stem``, ``c1`` ... ``c13``."""
    def group(name, c):
        return ChannelGroup(name, c, make_divisible(c * max_width), make_divisible(c * min_width))

    small = small_input(input_size)
    blocks, prev, first_stride2 = [], "stem", True
    for i, (c, s) in enumerate(BLOCKS, start=1):
        if small and s == 2 and first_stride2:
            s, first_stride2 = 1, False
        blocks.append(Block(prev, group(f"c{i}", c), s))
        prev = f"c{i}"
    return Plan(group("stem", STEM), 1 if small else 2, blocks)


class MobileNetV1(SlimNet):
    model_name = "mobilenet_v1"

    def __init__(self, act: str = "relu6", **kwargs):
        if act not in ACTIVATIONS:
            raise ValueError(f"MobileNet v1 act must be one of {sorted(ACTIVATIONS)}, got {act!r}")
        super().__init__(act=act, **kwargs)   # recorded in the arch: configs and children keep it

    @classmethod
    def plan(cls, **arch) -> Plan:
        return block_plan(**arch)

    def build(self, L, plan, num_classes, in_channels, act, **_):
        act = ACTIVATIONS[act]
        layers = [L.conv_bn(in_channels, "stem", 3, plan.stem_stride, act=act)]
        for b in plan.blocks:
            layers.append(nn.Sequential(L.conv_bn(b.in_ref, b.in_ref, 3, b.stride, act=act, depthwise=True),
                                        L.conv_bn(b.in_ref, b.out.name, 1, act=act)))
        last = plan.blocks[-1].out.name
        self.features = nn.Sequential(*layers)
        self.pool = L.global_pool(last)
        self.classifier = L.linear(last, num_classes)

    def trunk(self):
        return [*self.features]

    def head(self):
        return self.pool, self.classifier
