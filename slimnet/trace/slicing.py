"""Channel splits and channel slices (``Walker``'s mixin). A split or slice whose boundaries fall
between the parts of a concatenation would commute with slimming (each piece whole groups), but the
graph holds its sizes as constants, which a narrower config breaks: the groups it reads are fixed,
with that reason, as are those of one that cuts through a group. A slice ``x[:, :n]`` with ``n`` at
least the channel count (GhostNet's) is the whole tensor at every width and keeps them."""
from __future__ import annotations

import torch
import torch.fx as fx
from torch.fx.passes.shape_prop import TensorMetadata

from . import rules

#: Why a split or slice between concatenated groups fixes them: its sizes are constants in the graph.
KEPT_CONSTANT = ("the traced supernet keeps split and slice sizes as traced, so the concatenated groups "
                 "keep their channels")


class ChannelSlicing:
    """Needs the walker's ``chans``, ``sizes``, ``unknown`` and ``shape_of``."""

    def channel_range(self, x, start: int, stop: int):
        """The parts of ``x`` (a ``Chans``) in channels ``[start, stop)``, or None when the range
        cuts a part (or ``x`` was flattened)."""
        if x is None or x.per != 1:
            return None
        picked, offset = [], 0
        for part, size in zip(x.parts, self.sizes(x)):
            if start <= offset and offset + size <= stop:
                picked.append(part)
            elif offset < stop and start < offset + size:
                return None                                     # a part only partly inside
            offset += size
        return type(x)(tuple(picked)) if picked and start < stop else None

    def split(self, node: fx.Node, what: str):
        """``chunk`` / ``split`` / ``tensor_split``: the pieces, kept for the ``getitem`` nodes."""
        x, shape, metas = self.chans(node.args[0]), self.shape_of(node.args[0]), node.meta.get("tensor_meta")
        if x is None or shape is None or not isinstance(metas, (tuple, list)) \
                or not all(isinstance(m, TensorMetadata) for m in metas):
            return self.fix_split(node, f"channel split {what} of a tensor the tracer does not know")
        if node.target in ("unbind", torch.unbind):
            return self.fix_split(node, f"{what} removes a dim")
        dim = rules.arg(node, 2, "dim", 0) % len(shape)
        if dim != 1:
            self.split_parts[node] = [x] * len(metas)           # a split of batch or space keeps the channels
            return None
        pieces, start = [], 0
        for m in metas:
            pieces.append(self.channel_range(x, start, start + m.shape[1]))
            start += m.shape[1]
        sizes = [m.shape[1] for m in metas]
        if any(p is None for p in pieces):
            return self.fix_split(node, f"channel split {what} cuts through a channel group (sizes "
                                        f"{self.sizes(x)} split into {sizes})")
        if len(pieces) > 1:
            return self.fix_split(node, f"channel split {what} into {sizes} at concatenation boundaries: "
                                        f"{KEPT_CONSTANT}")
        self.split_parts[node] = pieces
        return None

    def fix_split(self, node: fx.Node, reason: str):
        self.split_reasons[node] = reason
        return self.unknown(node, reason)

    def getitem(self, node: fx.Node):
        base, index = node.args
        if self.shape_of(base) is None:          # an item of a tuple (a split's piece) or of a size
            if base in self.split_parts and isinstance(index, int):
                return self.split_parts[base][index]
            why = self.split_reasons.get(base, "a tuple the tracer does not know")
            return self.unknown(node, f"a part of '{base.name}' ({why})") if self.shape_of(node) else None
        index = index if isinstance(index, tuple) else (index,)
        if index[0] != slice(None) or len(index) > 1 and not isinstance(index[1], slice) and index[1] is not Ellipsis:
            return self.unknown(node, f"indexes {index} through the batch or channel dim")
        if len(index) == 1 or index[1] is Ellipsis or index[1] == slice(None):
            return self.chans(base)
        total = self.shape_of(base)[1]
        start, stop, step = index[1].indices(total)
        if start == 0 and stop == total and step == 1:
            return self.chans(base)          # x[:, :n] with n >= C: the whole tensor at every width
        piece = self.channel_range(self.chans(base), start, stop) if step == 1 else None
        if piece is not None:
            return self.unknown(node, f"slices channels {start}:{stop} at concatenation boundaries: {KEPT_CONSTANT}")
        return self.unknown(node, f"slices channels {start}:{stop}:{step} through a channel group")
