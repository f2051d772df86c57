"""ShuffleNet v1 (Zhang et al. 2018), slimmable, g groups (3 as in the Slimmable Networks paper).

Units: 1x1 group conv -> channel shuffle -> 3x3 depthwise -> 1x1 group conv; stride-1 units add
their input, stride-2 units concatenate a 3x3 average-pooled shortcut with the branch. The
first 1x1 conv of stage 2 is dense (its input, the stem, is narrow).

Channel groups (every count a multiple of g, so group convs and the shuffle stay valid):
``stem``; ``s2``, ``s3``, ``s4``, the channels each stage's first (concatenating) unit adds, so a
stage's output concatenates ("stem", "s2", ...); ``b<k>.mid``, each unit's bottleneck width (a
quarter of the unit's output at width 1.0). Small inputs (< 128 px) use a stride-1 stem and no
max-pool.

**Coherent weight sharing.** Every tensor is laid out per group (``PerGroup``): g blocks, block
``i`` holding group ``i``'s share of each part, and a config keeps the leading channels of each
share. So a grouped conv's group ``i`` always reads and writes the same channels, each group
using its own leading channels; a stride-2 unit concatenates group by group (block ``i`` of the
output is block ``i`` of the shortcut, then block ``i`` of the branch); BN, pooling and the
classifier index their parameters by the same places. The channel shuffle must keep coherence
too: a channel's place in its group (its *level*) decides which configs have it, so the shuffle
keeps every channel's level and moves level ``j`` of group ``i`` to group ``(i + j) mod g``. Each
group of the next conv thus reads from every group of the previous one; when a group's channel
count is a multiple of g it reads the same number from each, as ShuffleNet's transpose shuffle
does (the two then differ only by an order of channels within groups). At the max config every
slice is the full tensor; at other configs the grouped layers gather their active weights
(``index_select``).
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import torch
import torch.nn as nn

from ..nn import PerGroup
from ..space import ChannelGroup, make_divisible
from .base import SlimNet, small_input

STAGE_OUT = {3: (240, 480, 960), 1: (144, 288, 576), 2: (200, 400, 800), 4: (272, 544, 1088), 8: (384, 768, 1536)}
REPEATS = (4, 8, 4)
STEM = 24


@functools.lru_cache(maxsize=256)
def _shuffle_index(channels: int, groups: int, device: torch.device) -> torch.Tensor:
    if channels % groups:
        raise ValueError(f"channel shuffle: {channels} channels do not split into {groups} groups")
    per = channels // groups
    target_group = torch.arange(groups).repeat_interleave(per)    # output place k * per + j ...
    level = torch.arange(per).repeat(groups)
    source_group = (target_group - level) % groups                # ... reads group (k - j) mod g, level j
    return (source_group * per + level).to(device)


def channel_shuffle(x: torch.Tensor, groups: int, channels: int | None = None) -> torch.Tensor:
    """Shuffle a per-group tensor between groups, keeping every channel's level: level ``j`` of
    group ``i`` moves to group ``(i + j) mod groups``, level ``j``. ``channels`` (``x``'s channel
    count, known to the caller) keeps shape reads out of traced graphs (TorchScript / ONNX)."""
    channels = x.shape[1] if channels is None else channels
    return x.index_select(1, _shuffle_index(channels, groups, x.device))


def cat_per_group(tensors: list[torch.Tensor], groups: int) -> torch.Tensor:
    """Concatenate per-group tensors group by group: block ``i`` of the result is block ``i`` of
    each input in order."""
    n, _, h, w = tensors[0].shape
    return torch.cat([t.reshape(n, groups, -1, h, w) for t in tensors], 2).reshape(n, -1, h, w)


class ShuffleUnit(nn.Module):
    def __init__(self, L, in_ref, out_ref, branch_ref, mid_ref, stride, groups, first_groups):
        super().__init__()
        self.groups, self.stride = groups, stride
        self.reduce = L.conv_bn(in_ref, mid_ref, 1, groups=first_groups)
        self.depthwise = L.conv_bn(mid_ref, mid_ref, 3, stride, act=None, depthwise=True)
        self.expand = L.conv_bn(mid_ref, branch_ref, 1, groups=groups, act=None)
        self.shortcut = L.avg_pool(in_ref, 3, 2, 1) if stride == 2 else None
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.reduce[0]      # its active output count: a plain int in supernet and child
        mid = getattr(conv, "active_out", conv.out_channels)
        y = self.expand(self.depthwise(channel_shuffle(self.reduce(x), self.groups, mid)))
        if self.shortcut is None:
            return self.relu(x + y)
        return self.relu(cat_per_group([self.shortcut(x), y], self.groups))


class Unit(NamedTuple):
    """One unit, its tensors as the parts of their per-group layout, and the groups it introduces
    (its stage's new channels if it is the stage's first, concatenating unit, then its bottleneck)."""
    in_parts: tuple[str, ...]
    out_parts: tuple[str, ...]
    branch_parts: tuple[str, ...]   # what the branch adds: the stage's new channels, or the whole output
    mid: str
    stride: int
    first_groups: int               # groups of the first 1x1 conv (dense on the narrow stem)
    new_groups: tuple[ChannelGroup, ...]


class Plan(NamedTuple):
    stem: ChannelGroup
    units: list[Unit]

    @property
    def groups(self) -> list[ChannelGroup]:
        return [self.stem] + [g for u in self.units for g in u.new_groups]


def block_plan(groups, max_width, min_width, **_) -> Plan:
    """The stem and the 16 units of ShuffleNet v1 with ``groups`` groups, with their channel groups."""
    def group(name, c, reorderable=True):
        return ChannelGroup(name, c, make_divisible(c * max_width, groups), make_divisible(c * min_width, groups),
                            divisor=groups, multiple_of=groups, reorderable=reorderable)

    units, prev, prev_c, k = [], ("stem",), STEM, 0
    for i, (c, n) in enumerate(zip(STAGE_OUT[groups], REPEATS), start=2):
        out = prev + (f"s{i}",)
        for j in range(n):
            k += 1
            first = j == 0
            new = ((group(f"s{i}", c - prev_c),) if first else ()) + (group(f"b{k}.mid", c // 4, reorderable=False),)
            units.append(Unit(prev if first else out, out, (f"s{i}",) if first else out, f"b{k}.mid",
                              2 if first else 1, 1 if (i == 2 and first) else groups, new))
        prev, prev_c = out, c
    return Plan(group("stem", STEM), units)


class ShuffleNetV1(SlimNet):
    model_name = "shufflenet_v1"

    def __init__(self, groups: int = 3, **kwargs):
        if groups not in STAGE_OUT:
            raise ValueError(f"ShuffleNet v1 groups must be one of {sorted(STAGE_OUT)}, got {groups}")
        super().__init__(groups=groups, **kwargs)

    @classmethod
    def plan(cls, **arch) -> Plan:
        return block_plan(**arch)

    def build(self, L, plan, groups, num_classes, in_channels, input_size, **_):
        def per_group(*parts):
            return PerGroup(parts, groups)

        small = small_input(input_size)
        stem = [L.conv_bn(in_channels, per_group("stem"), 3, 1 if small else 2)]
        if not small:
            stem.append(nn.MaxPool2d(3, 2, 1))
        self.stem = nn.Sequential(*stem)
        self.units = nn.Sequential(*(
            ShuffleUnit(L, per_group(*u.in_parts), per_group(*u.out_parts), per_group(*u.branch_parts),
                        per_group(u.mid), u.stride, groups, u.first_groups)
            for u in plan.units))
        last = per_group(*plan.units[-1].out_parts)
        self.pool = L.global_pool(last)
        self.fc = L.linear(last, num_classes)

    def trunk(self):
        return [*self.stem, *self.units]

    def head(self):
        return self.pool, self.fc
