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


def group_divisor(group) -> int:
    """The rounding divisor of a slimmable group's counts: lcm(8, multiple_of), or the largest of
    lcm(4 | 2 | 1, multiple_of) that divides its channels (so width 1.0 is the model: 58 stays 58).
    The rule of the traced supernet's space (``supernet.channel_groups``)."""
    for k in (8, 4, 2, 1):
        d = math.lcm(k, group.multiple_of)
        if group.channels % d == 0:
            return d
    return group.multiple_of


def uniform_counts(traced: TracedGroups, width: float) -> dict[str, int]:
    """Every slimmable group at ``width`` times its channels (``make_divisible`` by its
    ``group_divisor``, never above its channels), as the supernet's ``space.uniform(width)``;
    fixed groups whole, and every group whole at width >= 1."""
    counts = {}
    for g in traced.groups.values():
        if width >= 1 or not g.slimmable:
            counts[g.name] = g.channels
            continue
        counts[g.name] = min(g.channels, make_divisible(g.channels * width, group_divisor(g)))
    return counts


def macs(traced: TracedGroups, width: float = 1.0) -> int:
    """MACs per image at uniform ``width`` (1.0: the traced model itself)."""
    counts = uniform_counts(traced, width)
    return sum(layer_macs(layer, counts) for layer in traced.layers)
