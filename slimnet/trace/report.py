"""``trace_report(model, input_size)``: what the tracer can slim in a model, what it fixes and why."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch.nn as nn

from ..nn.refs import ref_groups
from .graph import TraceError
from .groups import TracedGroup, TracedGroups, TracedLayer, trace_groups
from .macs import macs


def _names(items: tuple[str, ...], limit: int = 2) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" +{len(items) - limit}" if len(items) > limit else "") if items else "-"


@dataclass(frozen=True)
class TraceReport:
    """The traced groups of one model, as a report.

    ``slimmable`` / ``fixed``: the groups (name, channel count, required multiple, writers, readers;
    a fixed group also says which graph node fixed it and why). ``fixed_layers``: conv / linear
    layers none of whose channels can be slimmed. ``macs``: MACs per image of the model as traced
    and at ``min_width`` (every slimmable group at that fraction, see ``macs.uniform_counts``).
    ``str(report)`` is a table; ``to_dict()`` the same as plain data (for JSON).
    """

    traced: TracedGroups
    input_size: tuple[int, int]
    min_width: float = 0.25

    @property
    def macs(self) -> tuple[int, int]:
        """(MACs at min_width, MACs of the model as traced)"""
        return macs(self.traced, self.min_width), macs(self.traced, 1.0)

    @property
    def model(self) -> str:
        return self.traced.model

    @property
    def slimmable(self) -> list[TracedGroup]:
        return self.traced.slimmable()

    @property
    def fixed(self) -> list[TracedGroup]:
        return self.traced.fixed()

    @property
    def fixed_layers(self) -> list[TracedLayer]:
        free = {g.name for g in self.slimmable}
        return [layer for layer in self.traced.layers if layer.kind != "norm"
                and not free & set(ref_groups(layer.input) + ref_groups(layer.output))]

    def to_dict(self) -> dict:
        def group(g: TracedGroup) -> dict:
            return {"name": g.name, "channels": g.channels, "multiple_of": g.multiple_of, "producers": list(g.producers),
                    "consumers": list(g.consumers), "fixed": [{"node": n, "reason": r} for n, r in g.fixed]}

        return {"model": self.model, "input_size": list(self.input_size), "min_width": self.min_width,
                "macs": {"min": self.macs[0], "max": self.macs[1]},
                "slimmable": [group(g) for g in self.slimmable], "fixed": [group(g) for g in self.fixed],
                "fixed_layers": [layer.name for layer in self.fixed_layers]}

    def __str__(self) -> str:
        convs = [layer for layer in self.traced.layers if layer.kind != "norm"]
        lines = [f"{self.model} traced at {self.input_size[0]}x{self.input_size[1]}: {len(self.slimmable)} slimmable "
                 f"channel groups, {len(self.fixed)} fixed; {len(convs)} conv/linear layers, "
                 f"{len(self.fixed_layers)} not slimmed",
                 f"MACs per image: {self.macs[1] / 1e6:.2f}M as traced, {self.macs[0] / 1e6:.2f}M at width "
                 f"{self.min_width} (every slimmable group)", ""]
        width = max([len(g.name) for g in self.traced.groups.values()] + [5])
        lines.append(f"{'group':<{width}}  {'channels':>8}  {'multiple':>8}  {'written by':<40}  read by")
        for g in self.slimmable:
            lines.append(f"{g.name:<{width}}  {g.channels:>8}  {g.multiple_of:>8}  {_names(g.producers):<40}  "
                         f"{_names(g.consumers)}")
        if self.fixed:
            lines += ["", "fixed groups (kept at their channel count):"]
            for g in self.fixed:
                node, reason = g.fixed[0]
                more = f" (and {len(g.fixed) - 1} more reasons)" if len(g.fixed) > 1 else ""
                lines.append(f"  {g.name:<{width}}  {g.channels:>6}  at '{node}': {reason}{more}")
        if self.fixed_layers:
            lines += ["", "layers not slimmed: " + ", ".join(layer.name for layer in self.fixed_layers)]
        return "\n".join(lines)


def trace_report(model: nn.Module, input_size=224, in_channels: int = 3, fixed: Iterable[str] = (),
                 leaf_modules: Iterable = (), min_width: float = 0.25) -> TraceReport:
    """Trace ``model`` (see ``trace_groups``) and report its channel groups: what is slimmable,
    what is fixed and why, and its MACs range down to ``min_width``. ``print(report)`` gives the table."""
    if not 0 < min_width <= 1:
        raise TraceError(f"min_width must be in (0, 1], got {min_width!r}")
    traced = trace_groups(model, input_size, in_channels, fixed=fixed, leaf_modules=leaf_modules)
    size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    return TraceReport(traced, size, float(min_width))
