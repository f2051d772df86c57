"""MACs of a traced model at a channel count per group (conv and linear multiply-accumulates, the
convention of ``slimnet.profile``: FlopCounterMode's FLOPs / 2), and the uniform-width counts."""
from __future__ import annotations

import math
from typing import Mapping

from ..nn.refs import resolve
from ..space import make_divisible
from .groups import TracedGroups, TracedLayer


def layer_macs(layer: TracedLayer, counts: Mapping[str, int]) -> int:
    """One layer's MACs per image when every group has ``counts`` channels."""
    if layer.kind == "norm":
        return 0
    cin = resolve(layer.input, counts) * layer.features_per_channel
    cout = resolve(layer.output, counts)
    groups = cin if layer.kind == "depthwise" else layer.groups
    return cout * (cin // groups) * layer.kernel * layer.positions


def uniform_counts(traced: TracedGroups, width: float) -> dict[str, int]:
    """Every slimmable group at ``width`` times its channels (rounded to a multiple of 8 and of its
    ``multiple_of``, as ``make_divisible``, never above its channels); fixed groups whole, and every
    group whole at width >= 1 (a count like ShuffleNet's 58 is kept, not rounded to 56)."""
    counts = {}
    for g in traced.groups.values():
        if width >= 1:
            counts[g.name] = g.channels
            continue
        divisor = math.lcm(8, g.multiple_of)
        counts[g.name] = g.channels if not g.slimmable else min(g.channels, make_divisible(g.channels * width, divisor))
    return counts


def macs(traced: TracedGroups, width: float = 1.0) -> int:
    """MACs per image at uniform ``width`` (1.0: the traced model itself)."""
    counts = uniform_counts(traced, width)
    return sum(layer_macs(layer, counts) for layer in traced.layers)
