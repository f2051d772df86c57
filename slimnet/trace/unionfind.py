"""Union-find over the channel dimensions of a traced graph's tensors.

Every conv / linear output (and the model's input) opens one *element*: the channel dimension of
one tensor, with its channel count. Rules that say two channel dimensions must stay equal join
their elements; a set of joined elements is one channel group. A set also collects what
constrains it: reasons it cannot be slimmed (``fixed``, each with the graph node that caused it)
and the group count of grouped convs that read or write it (``per_group``: the tensor is laid out
as that many blocks, so counts stay multiples of it).
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ChannelSet:
    """What is known about one set of tied channel dimensions (kept on the set's root)."""

    size: int
    fixed: list[tuple[str, str]] = field(default_factory=list)   # (graph node, reason)
    per_group: int = 1


class ChannelSets:
    """Elements are ints; ``find`` gives a set's root, ``union`` joins two sets."""

    def __init__(self):
        self._parent: list[int] = []
        self._sets: dict[int, ChannelSet] = {}

    def new(self, size: int) -> int:
        """A new element of ``size`` channels, alone in its set."""
        e = len(self._parent)
        self._parent.append(e)
        self._sets[e] = ChannelSet(size)
        return e

    def find(self, e: int) -> int:
        root = e
        while self._parent[root] != root:
            root = self._parent[root]
        while self._parent[e] != root:                  # path compression
            self._parent[e], e = root, self._parent[e]
        return root

    def info(self, e: int) -> ChannelSet:
        return self._sets[self.find(e)]

    def union(self, a: int, b: int, node: str) -> int:
        """Join the sets of ``a`` and ``b``. Sets of different sizes cannot be one group: both
        are fixed (a tracer rule met a shape it does not model), naming ``node``."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return ra
        sa, sb = self._sets[ra], self._sets[rb]
        if sa.size != sb.size:
            reason = f"ties {sa.size} channels to {sb.size}"
            self.fix(ra, node, reason)
            self.fix(rb, node, reason)
            return ra
        if rb < ra:                                     # the older element stays the root
            ra, rb, sa, sb = rb, ra, sb, sa
        self._parent[rb] = ra
        sa.fixed.extend(r for r in sb.fixed if r not in sa.fixed)
        if sa.per_group != sb.per_group:
            if 1 in (sa.per_group, sb.per_group):
                sa.per_group = max(sa.per_group, sb.per_group)
            else:
                sa.fixed.append((node, f"read per group by grouped convs of {sa.per_group} and {sb.per_group} groups"))
        del self._sets[rb]
        return ra

    def fix(self, e: int, node: str, reason: str) -> None:
        """Mark the set of ``e`` as not slimmable, recording why."""
        s = self.info(e)
        if (node, reason) not in s.fixed:
            s.fixed.append((node, reason))

    def read_per_group(self, e: int, groups: int, node: str) -> None:
        """A grouped conv of ``groups`` groups reads or writes the set of ``e``."""
        s = self.info(e)
        if s.size % groups:
            self.fix(e, node, f"{s.size} channels do not split into {groups} groups")
        elif s.per_group in (1, groups):
            s.per_group = groups
        else:
            self.fix(e, node, f"read per group by grouped convs of {s.per_group} and {groups} groups")

    def roots(self) -> list[int]:
        """Every set's root, in the order the sets were opened."""
        return sorted(self._sets)
