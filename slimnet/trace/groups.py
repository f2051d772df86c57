"""``trace_groups(model, ...)``: the channel groups of any CNN, derived from its torch.fx graph.

The derivation (``derive.Walker``) ties channel dimensions in a union-find; this module names the
resulting sets (after the first layer that writes them: ``layer1.0.conv3``; ``input`` for the
model's input; the graph node's name for channels an unknown op made), applies the user's pins
(``fixed=``) and hands back the groups and every layer's channel refs, in slimnet's ref language
(group name, tuple for a concatenation, ``PerGroup`` where grouped convs read the tensor).
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Iterable

import torch.nn as nn

from ..nn.refs import ChannelRef, PerGroup
from .derive import Chans, Walker
from .graph import TraceError, propagate_shapes, trace


@dataclass(frozen=True)
class TracedGroup:
    """One channel group: its channel count in the model, the multiple its counts must keep (the
    group count of grouped convs that read it per group), why it is fixed (empty: slimmable), and
    the layers that write (``producers``) and read (``consumers``) it."""

    name: str
    channels: int
    multiple_of: int
    fixed: tuple[tuple[str, str], ...]
    producers: tuple[str, ...]
    consumers: tuple[str, ...]

    @property
    def slimmable(self) -> bool:
        return not self.fixed


@dataclass(frozen=True)
class TracedLayer:
    """One conv / linear / norm layer: its kind (conv, depthwise, grouped, linear, norm), the refs
    of its input and output, its conv groups, for a linear after a flatten the features per input
    channel (channel-major), its kernel positions and its output positions per image."""

    name: str
    kind: str
    input: ChannelRef
    output: ChannelRef
    groups: int = 1
    features_per_channel: int = 1
    kernel: int = 1
    positions: int = 1


@dataclass(frozen=True)
class TracedGroups:
    """The result of ``trace_groups``: the groups in order of appearance and the layers in graph order."""

    model: str
    groups: dict[str, TracedGroup]
    layers: tuple[TracedLayer, ...]

    def slimmable(self) -> list[TracedGroup]:
        return [g for g in self.groups.values() if g.slimmable]

    def fixed(self) -> list[TracedGroup]:
        return [g for g in self.groups.values() if not g.slimmable]

    def layer(self, name: str) -> TracedLayer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"{self.model} has no traced layer {name!r}")


def trace_groups(model: nn.Module, input_size=224, in_channels: int = 3, fixed: Iterable[str] = (),
                 leaf_modules: Iterable = ()) -> TracedGroups:
    """Trace ``model`` with torch.fx and derive its channel groups.

    ``fixed``: names of layers (conv, linear or norm modules) or of derived groups whose channels
    must not be slimmed. ``leaf_modules``: module names or classes fx keeps whole (for code fx cannot
    trace); the channels they read and write are fixed.
    """
    gm = trace(model, leaf_modules)
    propagate_shapes(gm, input_size, in_channels)
    walker = Walker(gm).run()
    if not any(u.kind != "norm" for u in walker.layers):
        raise TraceError(f"{type(model).__name__} has no conv or linear layer the tracer can slim")
    names = _group_names(walker)
    _pin(walker, names, list(fixed))
    return _result(type(model).__name__, walker, names)


def _group_names(walker: Walker) -> dict[int, str]:
    """root -> name: the layer (or node) that opened the set's oldest element."""
    names, used = {}, set()
    for root in walker.sets.roots():
        name = walker.origin[root]
        name = "input" if name == next(iter(walker.gm.graph.nodes)).name else name
        base, k = name, 1
        while name in used:
            k += 1
            name = f"{base}#{k}"
        names[root], _ = name, used.add(name)
    return names


def _pin(walker: Walker, names: dict[int, str], fixed: list[str]) -> None:
    by_group = {n: r for r, n in names.items()}
    by_layer = {u.name: u.output for u in walker.layers}
    for name in fixed:
        if name in by_group:
            walker.sets.fix(by_group[name], "fixed=", f"pinned by the user (fixed=['{name}'])")
        elif name in by_layer:
            walker.fix(by_layer[name], "fixed=", f"pinned by the user (fixed=['{name}'])")
        else:
            close = difflib.get_close_matches(name, list(dict.fromkeys([*by_layer, *by_group])), n=3)
            hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
            raise TraceError(f"fixed: {name!r} is neither a traced layer nor a channel group{hint}")


def _result(model: str, walker: Walker, names: dict[int, str]) -> TracedGroups:
    sets = walker.sets

    def ref(ch: Chans) -> ChannelRef:
        parts = tuple(names[sets.find(p)] for p in ch.parts)
        if len(parts) == 1:
            g = sets.info(ch.parts[0]).per_group
            return parts[0] if g == 1 else PerGroup(parts, g)
        return parts

    layers = tuple(TracedLayer(u.name, u.kind, ref(u.input), ref(u.output), u.groups, u.input.per, u.kernel,
                               u.positions) for u in walker.layers)
    producers: dict[int, list[str]] = {r: [] for r in names}
    consumers: dict[int, list[str]] = {r: [] for r in names}
    for u in walker.layers:
        for p in u.input.parts:
            consumers[sets.find(p)].append(u.name)
        if u.kind not in ("norm", "depthwise"):
            for p in u.output.parts:
                producers[sets.find(p)].append(u.name)
    groups = {}
    for root, name in names.items():
        if not (producers[root] or consumers[root] or name == "input"):
            continue                     # a tensor inside an unknown op's chain that no layer touches
        s = sets.info(root)
        groups[name] = TracedGroup(name, s.size, s.per_group, tuple(s.fixed), tuple(producers[root]),
                                   tuple(dict.fromkeys(consumers[root])))
    return TracedGroups(model, groups, layers)
