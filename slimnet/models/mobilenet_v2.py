"""MobileNet v2 (Sandler et al. 2018), slimmable.

At a uniform width ``w`` a child equals ``torchvision.models.mobilenet_v2(width_mult=w)``: same
channels, MACs and parameters. Channel groups: ``stem``; one group per stage output (``s1`` ...
``s7``, residual-tied inside the stage); one hidden (expand) group per block with an expansion
(``b<k>.expand``; its depthwise conv follows it); ``last`` (the 1280 conv, never below 1280 for
w <= 1). Small inputs (< 128 px) use stride 1 in the stem and in the 24-channel stage, so a
32x32 image ends at 4x4 (28x28 at 4x4). ``downsample="imagenet"`` keeps torchvision's strides at
any input size (28x28 then ends at 1x1 with 1/16 of the MACs: a small, fast model for CPU
studies); ``"small"`` forces the small-input strides; ``"auto"`` (default) picks by input size.

Dropout before the classifier defaults to 0, as in the S-/US-Nets reference models: with inplace
distillation a dropped-out teacher hands noisy targets to every other width. torchvision's
``mobilenet_v2`` trains with ``dropout=0.2`` (``model.kwargs: {dropout: 0.2}``); in eval mode the two
are the same network.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn as nn

from ..space import ChannelGroup, make_divisible
from .base import SlimNet, small_input

# expansion t, output channels c, repeats n, first stride s (torchvision's table)
SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
STEM, LAST = 32, 1280
DOWNSAMPLE = ("auto", "imagenet", "small")


def _group(name, base, max_width, min_width, keep_base=False):
    mult = (lambda w: max(w, 1.0)) if keep_base else (lambda w: w)
    return ChannelGroup(name, base, make_divisible(base * mult(max_width)), make_divisible(base * mult(min_width)),
                        keep_base=keep_base)


class Block(NamedTuple):
    """One inverted residual block and the groups it introduces (its stage's output group if it
    is the stage's first block, then its expand group)."""
    in_ref: str
    out_ref: str
    hidden_ref: str     # the expand group, or ``in_ref`` for the unexpanded first block
    stride: int
    new_groups: tuple[ChannelGroup, ...]


class Plan(NamedTuple):
    stem: ChannelGroup
    stem_stride: int
    blocks: list[Block]
    last: ChannelGroup

    @property
    def groups(self) -> list[ChannelGroup]:
        return [self.stem] + [g for b in self.blocks for g in b.new_groups] + [self.last]


def block_plan(max_width, min_width, input_size, downsample="auto", **_) -> Plan:
    """The stem, the 17 inverted residual blocks and the last conv, with their groups."""
    if downsample not in DOWNSAMPLE:
        raise ValueError(f"downsample must be 'auto', 'imagenet' or 'small', got {downsample!r}")
    small = small_input(input_size) if downsample == "auto" else downsample == "small"
    by_name = {"stem": _group("stem", STEM, max_width, min_width)}
    blocks, prev, k = [], "stem", 0
    for i, (t, c, n, s) in enumerate(SETTINGS, start=1):
        if small and c == 24:
            s = 1
        stage = by_name[f"s{i}"] = _group(f"s{i}", c, max_width, min_width)
        for j in range(n):
            k += 1
            new, hidden = ((stage,) if j == 0 else ()), prev
            if t != 1:  # hidden width = t x the block's input channels, as torchvision
                src = by_name[prev]
                expand = ChannelGroup(f"b{k}.expand", src.base * t, src.max * t, src.min * t, expand_of=prev,
                                      expand_ratio=t)
                new, hidden = new + (expand,), expand.name
            blocks.append(Block(prev, stage.name, hidden, s if j == 0 else 1, new))
            prev = stage.name
    last = _group("last", LAST, max_width, min_width, keep_base=True)
    return Plan(by_name["stem"], 1 if small else 2, blocks, last)


class InvertedResidual(nn.Module):
    def __init__(self, L, in_ref, out_ref, hidden_ref, stride):
        super().__init__()
        layers = []
        if hidden_ref != in_ref:
            layers.append(L.conv_bn(in_ref, hidden_ref, 1, act=nn.ReLU6))
        layers.append(L.conv_bn(hidden_ref, hidden_ref, 3, stride, act=nn.ReLU6, depthwise=True))
        layers.append(L.conv_bn(hidden_ref, out_ref, 1, act=None))
        self.conv = nn.Sequential(*layers)
        self.use_residual = stride == 1 and in_ref == out_ref

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileNetV2(SlimNet):
    model_name = "mobilenet_v2"

    @classmethod
    def plan(cls, **arch) -> Plan:
        return block_plan(**arch)

    def build(self, L, plan, num_classes, in_channels, dropout=0.0, **_):
        features = [L.conv_bn(in_channels, "stem", 3, plan.stem_stride, act=nn.ReLU6)]
        for b in plan.blocks:
            features.append(InvertedResidual(L, b.in_ref, b.out_ref, b.hidden_ref, b.stride))
        features.append(L.conv_bn(plan.blocks[-1].out_ref, "last", 1, act=nn.ReLU6))
        self.features = nn.Sequential(*features)
        self.pool = L.global_pool("last")
        self.classifier = nn.Sequential(nn.Dropout(dropout), L.linear("last", num_classes))

    def trunk(self):
        return [*self.features]

    def head(self):
        return self.pool, self.classifier
