"""Channel refs: how a layer names its channels, and where a config's channels sit in a tensor."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Mapping, Union

import torch


@dataclass(frozen=True)
class PerGroup:
    """Channel ref of a tensor read or written by convs with ``groups`` groups (ShuffleNet).

    The tensor is ``groups`` equal blocks, block ``i`` being group ``i``'s channels. Each block
    holds its share (``count / groups`` channels) of every part, in order; ``parts`` is one group
    name or several whose counts add up (a per-group concatenation). A config keeps the leading
    channels of each part's share in every block, so a channel keeps its group and its place in
    the group's block at every config: the layout grouped convs need to share weights coherently.
    At the max config the layout is the plain tensor; every count must be a multiple of ``groups``.
    """

    parts: tuple
    groups: int

    def __post_init__(self):
        parts = (self.parts,) if isinstance(self.parts, str) else tuple(self.parts)
        if not parts or not all(isinstance(p, str) for p in parts):
            raise ValueError(f"PerGroup parts must be group names, got {self.parts!r}")
        if isinstance(self.groups, bool) or not isinstance(self.groups, int) or self.groups < 1:
            raise ValueError(f"PerGroup groups must be a positive integer, got {self.groups!r}")
        object.__setattr__(self, "parts", parts)


ChannelRef = Union[int, str, tuple, PerGroup]


def ref_groups(ref: ChannelRef) -> tuple:
    """The channel group names a ref depends on (none for a fixed int)."""
    if isinstance(ref, int):
        return ()
    if isinstance(ref, str):
        return (ref,)
    return ref.parts if isinstance(ref, PerGroup) else tuple(ref)


def resolve(ref: ChannelRef, channels: Mapping[str, int]) -> int:
    """Channel count of ``ref`` under a config (or under a space's maxima)."""
    if isinstance(ref, int):
        return ref
    if isinstance(ref, str):
        return channels[ref]
    return sum(channels[g] for g in ref_groups(ref))


def channel_index(ref: ChannelRef, channels: Mapping[str, int], max_counts: Mapping[str, int]):
    """Places, in the tensor at ``max_counts``, of the channels active at ``channels``, in the
    order the active tensor holds them; ``None`` when they are the leading ones (a fixed int, a
    group name, or any ref at its maximum).

    A tuple is a plain concatenation: each part's leading channels at its own offset. A
    :class:`PerGroup` is ``groups`` blocks, each holding every part's share in order.
    """
    if isinstance(ref, (int, str)):
        return None
    parts, groups = (ref.parts, ref.groups) if isinstance(ref, PerGroup) else (tuple(ref), 1)
    return _channel_index(parts, groups, tuple(channels[p] for p in parts), tuple(max_counts[p] for p in parts))


@functools.lru_cache(maxsize=4096)
def _channel_index(parts: tuple, groups: int, counts: tuple, maxes: tuple):
    for name, c, m in zip(parts, counts, maxes):
        if c % groups or m % groups:
            raise ValueError(f"group {name!r}: {c} channels (max {m}) do not split into {groups} equal groups")
    index, block = [], sum(maxes) // groups
    for i in range(groups):
        start = i * block
        for c, m in zip(counts, maxes):
            index.extend(range(start, start + c // groups))
            start += m // groups
    return None if index == list(range(len(index))) else tuple(index)


@functools.lru_cache(maxsize=4096)
def _index_tensor(index: tuple, device: torch.device) -> torch.Tensor:
    return torch.tensor(index, dtype=torch.long, device=device)


def _as_tensor(index, like: torch.Tensor):
    return None if index is None else _index_tensor(index, like.device)


def _max_counts(max_counts, *refs_and_totals) -> dict:
    """Each ref's groups -> max count: from ``max_counts`` (e.g. the space's max config), or for a
    one-group ref from the layer's own max size; checked against the layer's sizes."""
    known = dict(max_counts or {})
    out = {}
    for ref, total in refs_and_totals:
        names = ref_groups(ref)
        if len(names) == 1 and names[0] not in known:
            known[names[0]] = total
        missing = [n for n in names if n not in known]
        if missing:
            raise ValueError(f"channel ref {ref!r} concatenates several groups: pass max_counts "
                             f"(the max count of each of {list(names)})")
        out.update({n: known[n] for n in names})
        if names and resolve(ref, out) != total:
            raise ValueError(f"channel ref {ref!r} has {resolve(ref, out)} channels at its maximum, "
                             f"the layer was made for {total}")
    return out


def take(t: torch.Tensor, dim: int, n: int, index: torch.Tensor | None) -> torch.Tensor:
    """The ``n`` active entries of ``t`` along ``dim``: the leading ones when ``index`` is None (a
    view, never a copy), else the gathered ``index`` entries (a copy).

    A dim already at size ``n`` is not sliced, so a layer at its maximum width runs on the
    parameter itself and autograd records no slice (whose backward allocates a full-size gradient
    and copies into it) for it.
    """
    if index is None:
        return t.narrow(dim, 0, n) if n != t.shape[dim] else t
    if index.device != t.device:
        index = index.to(t.device)
    return t.index_select(dim, index)
