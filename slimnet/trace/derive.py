"""Walk a traced graph once, node by node, tying channel dimensions by the rules of ``rules.py``.

Each tensor with a channel dim (dim 1 of an ``(N, C, ...)`` or ``(N, F)`` tensor) gets a
``Chans``: the union-find elements its channels are made of, in order (one for most tensors,
several for a channel concatenation) and ``per``, the features per channel after a flatten
(channel-major: channel ``c`` owns features ``c*per ... c*per + per - 1``). Anything the rules do
not cover fixes the channels it touches, recording the node and the reason.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass

import torch.fx as fx
import torch.nn as nn
from torch.fx.passes.shape_prop import TensorMetadata

from . import rules
from .slicing import ChannelSlicing
from .unionfind import ChannelSets


@dataclass(frozen=True)
class Chans:
    parts: tuple[int, ...]
    per: int = 1


@dataclass
class LayerUse:
    """One call of a conv, linear or channel-wise layer: what it reads and writes."""
    name: str
    kind: str            # conv | depthwise | grouped | linear | norm
    input: Chans
    output: Chans
    groups: int = 1
    kernel: int = 1      # kernel positions (kh * kw)
    positions: int = 1   # output positions per image (H * W of a conv's output)


def _shape(x):
    tm = x.meta.get("tensor_meta") if isinstance(x, fx.Node) else None
    return tuple(tm.shape) if isinstance(tm, TensorMetadata) else None


class Walker(ChannelSlicing):
    """One pass over the graph in order: ``env`` maps each node to its output's ``Chans`` (None
    without a channel dim), ``layers`` collects every conv / linear / norm call, ``sets`` the ties."""

    def __init__(self, gm: fx.GraphModule):
        self.gm, self.sets = gm, ChannelSets()
        self.modules = dict(gm.named_modules())
        self.env: dict[fx.Node, Chans | None] = {}
        self.layers: list[LayerUse] = []
        self.origin: dict[int, str] = {}          # element -> the module or node that opened it
        self.concats: list[tuple[str, Chans]] = []
        self.split_reasons: dict[fx.Node, str] = {}  # a split node -> why its pieces are fixed
        self.split_parts: dict[fx.Node, list[Chans]] = {}   # a split node -> its pieces

    def run(self) -> "Walker":
        for node in self.gm.graph.nodes:
            self.env[node] = getattr(self, f"_{node.op}")(node)
        for name, ch in self.concats:
            if any(self.sets.info(p).per_group > 1 for p in ch.parts):
                self.fix(ch, name, "concatenated with other groups but read per group by a grouped conv")
        return self

    # -- helpers --------------------------------------------------------------------------------
    def chans(self, x) -> Chans | None:
        return self.env.get(x) if isinstance(x, fx.Node) else None

    def new(self, size: int, origin: str) -> Chans:
        e = self.sets.new(size)
        self.origin[e] = origin
        return Chans((e,))

    def fresh(self, node: fx.Node, reason: str | None) -> Chans | None:
        """New channels for ``node``'s output (fixed, with ``reason``, when given)."""
        shape = _shape(node)
        if shape is None or len(shape) < 2:
            return None
        ch = self.new(shape[1], node.name)
        if reason:
            self.fix(ch, node.name, reason)
        return ch

    def fix(self, ch: Chans | None, node: str, reason: str) -> None:
        for p in ch.parts if ch else ():
            self.sets.fix(p, node, reason)

    def sizes(self, ch: Chans) -> tuple[int, ...]:
        return tuple(self.sets.info(p).size for p in ch.parts)

    def tie(self, a: Chans, b: Chans, node: str) -> None:
        if a.per == b.per and self.sizes(a) == self.sizes(b):
            for x, y in zip(a.parts, b.parts):
                self.sets.union(x, y, node)
            return
        reason = f"ties channels laid out as {self.sizes(a)} x{a.per} to {self.sizes(b)} x{b.per}"
        self.fix(a, node, reason)
        self.fix(b, node, reason)

    def inputs(self, node: fx.Node) -> list[fx.Node]:
        return list(node.all_input_nodes)

    def unknown(self, node: fx.Node, reason: str) -> Chans | None:
        """Fix every channel ``node`` reads; its output's channels are new and fixed."""
        touched = [self.chans(a) for a in self.inputs(node) if self.chans(a) is not None]
        for ch in touched:
            self.fix(ch, node.name, reason)
        return self.fresh(node, reason) if touched or _shape(node) is not None else None

    # -- node kinds -----------------------------------------------------------------------------
    def _placeholder(self, node):
        return self.fresh(node, "the model's input")

    def _get_attr(self, node):
        return None

    def _output(self, node):
        for a in self.inputs(node):
            self.fix(self.chans(a), node.name, "the model's output")

    def _call_module(self, node):
        m, x = self.modules[node.target], self.chans(node.args[0]) if node.args else None
        if isinstance(m, nn.Conv2d):
            return self.conv(node, m, x)
        if isinstance(m, nn.Linear):
            return self.linear(node, m, x)
        if isinstance(m, rules.CHANNELWISE_MODULES) and x is not None:
            self.layers.append(LayerUse(node.target, "norm", x, x))
            return x
        if isinstance(m, nn.Flatten):
            return self.flatten(node, x, m.start_dim, m.end_dim)
        if rules.is_pass_module(m):
            return x
        return self.unknown(node, f"module {type(m).__name__} ('{node.target}') is not known to the tracer")

    def _call_function(self, node):
        t = node.target
        if t in rules.PASS_FUNCTIONS or rules.target_name(t) in rules.PASS_FUNCTION_NAMES:
            return self.chans(node.args[0])
        if t in rules.ELEMENTWISE_FUNCTIONS:
            return self.elementwise(node)
        if t in rules.CAT_FUNCTIONS:
            return self.cat(node)
        if t in rules.FLATTEN_FUNCTIONS:
            return self.flatten(node, self.chans(node.args[0]), rules.arg(node, 1, "start_dim", 0),
                                rules.arg(node, 2, "end_dim", -1))
        if t in rules.REDUCE_FUNCTIONS:
            return self.reduce(node)
        if t is operator.getitem:
            return self.getitem(node)
        if t is getattr:
            return None
        return self.other(node, rules.target_name(t), t in rules.SPLIT_FUNCTIONS, t in rules.RESHAPE_FUNCTIONS)

    def _call_method(self, node):
        t = node.target
        if t in rules.PASS_METHODS:
            return self.chans(node.args[0])
        if t in rules.ELEMENTWISE_METHODS:
            return self.elementwise(node)
        if t in rules.REDUCE_METHODS:
            return self.reduce(node)
        if t == "flatten":
            return self.flatten(node, self.chans(node.args[0]), rules.arg(node, 1, "start_dim", 0),
                                rules.arg(node, 2, "end_dim", -1))
        if t in ("view", "reshape"):
            return self.reshape(node)
        if t in ("size", "dim"):
            return None
        return self.other(node, f".{t}()", t in rules.SPLIT_METHODS, t in rules.RESHAPE_METHODS)

    def other(self, node, what: str, split: bool, reshape: bool):
        if split:
            return self.split(node, what)
        if reshape:
            return self.unknown(node, f"{what} reorders or reshapes the channel dim (e.g. a channel shuffle)")
        return self.unknown(node, f"{what} is not known to the tracer")

    # -- layers ---------------------------------------------------------------------------------
    def conv(self, node, m: nn.Conv2d, x: Chans | None) -> Chans:
        if x is None or x.per != 1:
            x = self.unknown(node, f"conv '{node.target}' reads a tensor the tracer does not know")
        g, name = m.groups, node.target
        if g == 1:
            out, kind = self.new(m.out_channels, name), "conv"
        elif g == m.in_channels == m.out_channels:
            out, kind = x, "depthwise"
        else:
            out, kind = self.new(m.out_channels, name), "grouped"
            if len(x.parts) > 1:
                self.fix(x, name, "a grouped conv reads a concatenation")
            elif g == m.in_channels:
                self.fix(x, name, f"one input channel per group ({g} groups, {m.out_channels} outputs)")
                self.fix(out, name, f"one input channel per group ({g} groups, {m.out_channels} outputs)")
            else:
                self.sets.read_per_group(x.parts[0], g, name)
                self.sets.read_per_group(out.parts[0], g, name)
        positions = math.prod(_shape(node)[2:])
        return self.record(LayerUse(name, kind, x, out, g, math.prod(m.kernel_size), positions))

    def linear(self, node, m: nn.Linear, x: Chans | None) -> Chans:
        shape = _shape(node.args[0])
        out = self.new(m.out_features, node.target)
        if x is None or shape is None or len(shape) != 2:
            # features on the last dim of an (N, ..., features) tensor (channels-last MLPs): the layer's
            # input and output are fixed groups of in_features / out_features, not of dim 1
            reason = f"linear '{node.target}' reads a tensor of shape {shape}, not (N, features)"
            self.unknown(node, reason)
            x = self.new(m.in_features, node.name)
            self.fix(x, node.name, reason)
            self.fix(out, node.name, reason)
        positions = math.prod(shape[1:-1]) if shape else 1
        return self.record(LayerUse(node.target, "linear", x, out, 1, 1, positions))

    def record(self, use: LayerUse) -> Chans:
        """Keep a layer call; a layer called again (shared weights) ties its channels to the first call's."""
        first = next((u for u in self.layers if u.name == use.name), None)
        if first is not None:
            self.tie(first.input, use.input, use.name)
            self.tie(first.output, use.output, use.name)
        self.layers.append(use)
        return use.output

    # -- tensor operations ----------------------------------------------------------------------
    def elementwise(self, node) -> Chans | None:
        """Feature maps combined elementwise share channels; a tensor that broadcasts over the
        channel dim (size 1 there, or too few dims) leaves them alone: a gate ``(N, C, 1, 1)``
        is a feature map too, so squeeze-and-excitation ties the gate to the block."""
        out = _shape(node)
        if out is None or len(out) < 2:
            return self.unknown(node, f"{node.name} combines channels into a tensor without a channel dim")
        tied, foreign = [], None
        for a in self.inputs(node):
            shape = _shape(a)
            if shape is None:
                continue
            at = 1 - (len(out) - len(shape))
            if at < 0 or shape[at] == 1:
                continue
            if len(shape) == len(out) and self.chans(a) is not None:
                tied.append(self.chans(a))
            else:
                foreign = a
        for ch in tied[1:]:
            self.tie(tied[0], ch, node.name)
        if foreign is not None:
            reason = f"combined elementwise with '{foreign.name}', whose channels are not a traced feature map's"
            for ch in tied:
                self.fix(ch, node.name, reason)
            return tied[0] if tied else self.fresh(node, reason)
        if tied:
            return tied[0]
        return next((self.chans(a) for a in self.inputs(node) if _shape(a) and len(_shape(a)) == len(out)), None)

    def cat(self, node) -> Chans | None:
        items, out = node.args[0], _shape(node)
        if out is None or len(out) < 2:
            return self.unknown(node, "concatenates into a tensor without a channel dim")
        dim = rules.arg(node, 1, "dim", 0) % len(out)
        chans = [self.chans(a) for a in items]
        if any(c is None or c.per != 1 for c in chans):
            return self.unknown(node, "concatenates tensors the tracer does not know")
        if dim != 1:
            for c in chans[1:]:
                self.tie(chans[0], c, node.name)
            return chans[0]
        cat = Chans(tuple(p for c in chans for p in c.parts))
        self.concats.append((node.name, cat))
        return cat

    def flatten(self, node, x: Chans | None, start: int, end: int) -> Chans | None:
        shape = _shape(node.args[0])
        if x is None or shape is None:
            return self.unknown(node, "flattens a tensor the tracer does not know")
        start, end = start % len(shape), end % len(shape)
        if start >= 2 or start == end:
            return x
        if start == 1 and end == len(shape) - 1:
            return Chans(x.parts, x.per * math.prod(shape[2:]))
        return self.unknown(node, f"flattens dims {start}..{end}, mixing the channels with the batch or in part")

    def reshape(self, node) -> Chans | None:
        x, before, after = self.chans(node.args[0]), _shape(node.args[0]), _shape(node)
        if x is not None and before == after:
            return x
        if x is not None and before and after and len(after) == 2 and after[1] == math.prod(before[1:]):
            return Chans(x.parts, x.per * math.prod(before[2:]))       # view(N, -1): channel-major
        return self.unknown(node, f".{node.target}() reshapes the channel dim ({before} -> {after})")

    def reduce(self, node) -> Chans | None:
        x, shape = self.chans(node.args[0]), _shape(node.args[0])
        dims = rules.arg(node, 1, "dim", None)
        if x is None or shape is None or dims is None:
            return self.unknown(node, f"{node.name} reduces over every dim, channels included")
        dims = {d % len(shape) for d in ((dims,) if isinstance(dims, int) else dims)}
        if dims & {0, 1}:
            return self.unknown(node, f"{node.name} reduces over the channel or batch dim")
        return x

    @staticmethod
    def shape_of(node) -> tuple | None:
        return _shape(node)
