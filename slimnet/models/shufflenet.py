"""ShuffleNet v1 (Zhang et al. 2018), slimmable, g groups (3 as in the Slimmable Networks paper).

Units: 1x1 group conv -> channel shuffle -> 3x3 depthwise -> 1x1 group conv; stride-1 units add
their input, stride-2 units concatenate a 3x3 average-pooled shortcut with the branch. The
first 1x1 conv of stage 2 is dense (its input, the stem, is narrow).

Channel groups (every count a multiple of g, so group convs and the shuffle stay valid):
``stem``; ``s2``, ``s3``, ``s4``, the channels each stage's first (concatenating) unit adds, so a
stage's output is the tuple ref ("stem", "s2", ...) summed; ``b<k>.mid``, each unit's
bottleneck width (a quarter of the unit's output at width 1.0). Small inputs (< 128 px) use a
stride-1 stem and no max-pool.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..space import ChannelGroup, make_divisible
from .base import SlimNet, small_input

STAGE_OUT = {3: (240, 480, 960), 1: (144, 288, 576), 2: (200, 400, 800), 4: (272, 544, 1088), 8: (384, 768, 1536)}
REPEATS = (4, 8, 4)
STEM = 24


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


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
        y = self.expand(self.depthwise(channel_shuffle(self.reduce(x), self.groups)))
        if self.shortcut is None:
            return self.relu(x + y)
        return self.relu(torch.cat([self.shortcut(x), y], 1))


class ShuffleNetV1(SlimNet):
    model_name = "shufflenet_v1"

    def __init__(self, groups: int = 3, **kwargs):
        if groups not in STAGE_OUT:
            raise ValueError(f"ShuffleNet v1 groups must be one of {sorted(STAGE_OUT)}, got {groups}")
        super().__init__(groups=groups, **kwargs)

    @staticmethod
    def channel_groups(groups, max_width, min_width, **_):
        def group(name, c):
            return ChannelGroup(name, c, make_divisible(c * max_width, groups), make_divisible(c * min_width, groups),
                                divisor=groups)

        out = [group("stem", STEM)]
        prev_c, k = STEM, 0
        for i, (c, n) in enumerate(zip(STAGE_OUT[groups], REPEATS), start=2):
            out.append(group(f"s{i}", c - prev_c))
            for _ in range(n):
                k += 1
                out.append(group(f"b{k}.mid", c // 4))
            prev_c = c
        return out

    def build(self, L, groups, num_classes, in_channels, input_size, **_):
        small = small_input(input_size)
        stem = [L.conv_bn(in_channels, "stem", 3, 1 if small else 2)]
        if not small:
            stem.append(nn.MaxPool2d(3, 2, 1))
        self.stem = nn.Sequential(*stem)
        units, prev, k = [], ("stem",), 0
        for i, n in enumerate(REPEATS, start=2):
            out_ref = prev + (f"s{i}",)
            for j in range(n):
                k += 1
                first = j == 0
                units.append(ShuffleUnit(
                    L, _ref(prev if first else out_ref), _ref(out_ref), f"s{i}" if first else _ref(out_ref),
                    f"b{k}.mid", 2 if first else 1, groups, 1 if (i == 2 and first) else groups))
            prev = out_ref
        self.units = nn.Sequential(*units)
        self.pool = L.global_pool(_ref(prev))
        self.fc = L.linear(_ref(prev), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.units(self.stem(x))), 1))


def _ref(groups: tuple):
    """A one-group tuple is just that group's name."""
    return groups[0] if len(groups) == 1 else groups
