"""ResNets, slimmable: ImageNet basic-block (18, 34) and bottleneck (50) nets as torchvision's,
and CIFAR-style nets (20, 56: three stages of 16/32/64 channels, basic blocks, 1x1 conv + BN
projection shortcuts where the shape changes).

Channel groups: ``stem``; one group per stage output ``s1`` ... (every block output in a stage
is tied by the residual adds; a stage whose first block keeps the stem's channels and stride
shares the ``stem`` group instead); the inner widths of every block, ``b<k>.mid`` (basic) or
``b<k>.mid1`` / ``b<k>.mid2`` (bottleneck). Width rule: make_divisible(c * w, 8).

The ImageNet nets on small inputs (< 128 px) use a 3x3 stride-1 stem without max-pooling.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn as nn

from ..space import ChannelGroup, make_divisible
from .base import SlimNet, small_input

# depth -> (block kind, blocks per stage, stage widths, stem width, cifar-style)
SPECS = {
    18: ("basic", (2, 2, 2, 2), (64, 128, 256, 512), 64, False),
    34: ("basic", (3, 4, 6, 3), (64, 128, 256, 512), 64, False),
    50: ("bottleneck", (3, 4, 6, 3), (64, 128, 256, 512), 64, False),
    20: ("basic", (3, 3, 3), (16, 32, 64), 16, True),
    56: ("basic", (9, 9, 9), (16, 32, 64), 16, True),
}
EXPANSION = {"basic": 1, "bottleneck": 4}


class Block(NamedTuple):
    """One residual block: its input and output refs, its inner groups' names (one for a basic
    block, two for a bottleneck), its stride, and the groups it introduces (its stage's output
    group if new, then its inner groups)."""
    in_ref: str
    out_ref: str
    mids: tuple[str, ...]
    stride: int
    new_groups: tuple[ChannelGroup, ...]


class Plan(NamedTuple):
    kind: str           # "basic" | "bottleneck"
    cifar: bool
    stem: ChannelGroup
    blocks: list[Block]

    @property
    def groups(self) -> list[ChannelGroup]:
        return [self.stem] + [g for b in self.blocks for g in b.new_groups]


def block_plan(depth, max_width, min_width, **_) -> Plan:
    """The stem and every residual block of a ResNet of this depth, with their groups."""
    kind, counts, widths, stem, cifar = SPECS[depth]

    def group(name, c):
        return ChannelGroup(name, c, make_divisible(c * max_width), make_divisible(c * min_width))

    blocks, prev, prev_c, k = [], "stem", stem, 0
    for i, (n, w) in enumerate(zip(counts, widths), start=1):
        out_c = w * EXPANSION[kind]
        stride = 1 if i == 1 else 2
        out_ref = prev if (stride == 1 and out_c == prev_c) else f"s{i}"
        for j in range(n):
            k += 1
            mids = (f"b{k}.mid",) if kind == "basic" else (f"b{k}.mid1", f"b{k}.mid2")
            new = (group(out_ref, out_c),) if out_ref != prev else ()
            blocks.append(Block(prev, out_ref, mids, stride if j == 0 else 1, new + tuple(group(m, w) for m in mids)))
            prev, prev_c = out_ref, out_c
    return Plan(kind, cifar, group("stem", stem), blocks)


class ResidualBlock(nn.Module):
    """relu(body(x) + shortcut(x)); the body is a list of (in, out, kernel, stride) convs, each
    with BN, ReLU between them; a 1x1 conv + BN projection when the shape changes."""

    def __init__(self, L, in_ref, out_ref, convs, stride):
        super().__init__()
        last = len(convs) - 1
        self.body = nn.Sequential(*(L.conv_bn(cin, cout, k, s, act=None if i == last else nn.ReLU)
                                    for i, (cin, cout, k, s) in enumerate(convs)))
        self.shortcut = None
        if stride != 1 or in_ref != out_ref:
            self.shortcut = L.conv_bn(in_ref, out_ref, 1, stride, act=None)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.shortcut is None else self.shortcut(x)
        return self.relu(self.body(x) + identity)


def basic_block(L, b: Block):
    (mid,) = b.mids
    return ResidualBlock(L, b.in_ref, b.out_ref, [(b.in_ref, mid, 3, b.stride), (mid, b.out_ref, 3, 1)], b.stride)


def bottleneck(L, b: Block):
    """torchvision's v1.5 bottleneck: the stride sits on the 3x3 conv."""
    mid1, mid2 = b.mids
    return ResidualBlock(L, b.in_ref, b.out_ref,
                         [(b.in_ref, mid1, 1, 1), (mid1, mid2, 3, b.stride), (mid2, b.out_ref, 1, 1)], b.stride)


class ResNet(SlimNet):
    @classmethod
    def registry_name(cls, depth, **_):
        return f"resnet{depth}"

    def __init__(self, depth: int = 50, **kwargs):
        if depth not in SPECS:
            raise ValueError(f"ResNet depth must be one of {sorted(SPECS)}, got {depth}")
        super().__init__(depth=depth, **kwargs)

    @classmethod
    def plan(cls, **arch) -> Plan:
        return block_plan(**arch)

    def build(self, L, plan, num_classes, in_channels, input_size, **_):
        if plan.cifar or small_input(input_size):
            stem = [L.conv_bn(in_channels, "stem", 3, 1)]
        else:
            stem = [L.conv_bn(in_channels, "stem", 7, 2), nn.MaxPool2d(3, 2, 1)]
        self.stem = nn.Sequential(*stem)
        make_block = basic_block if plan.kind == "basic" else bottleneck
        self.layers = nn.Sequential(*(make_block(L, b) for b in plan.blocks))
        last = plan.blocks[-1].out_ref
        self.pool = L.global_pool(last)
        self.fc = L.linear(last, num_classes)

    def trunk(self):
        return [*self.stem, *self.layers]

    def head(self):
        return self.pool, self.fc
