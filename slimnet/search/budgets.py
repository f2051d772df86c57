"""Budgets: what a search must fit under (MACs, parameters or measured latency), and their checks."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

from ..errors import SearchError
from ..profile import format_count, profile
from ..space import ChannelConfig

BUDGET_WHAT = {"macs": "MACs", "params": "params", "latency": "latency"}
OUTPUT_PREFIX = "autoslim_"   # default prefix of a search's files and of budget labels




@dataclass(frozen=True)
class Budget:
    kind: str      # "macs" | "params" | "latency" (value in microseconds)
    value: int

    @property
    def name(self) -> str:
        """150M MACs -> '150M', params 2M -> 'params_2M', latency 2.5 ms -> 'latency_2.5ms'."""
        if self.kind == "latency":
            return f"latency_{self.value / 1000:g}ms"
        text = _short(self.value)
        return text if self.kind == "macs" else f"params_{text}"

    @property
    def label(self) -> str:
        """The budget's identity in search states and results, and its file name under the default
        prefix: 'autoslim_150M', 'autoslim_params_2M', 'autoslim_latency_2.5ms'."""
        return self.file_stem(OUTPUT_PREFIX)

    def file_stem(self, prefix: str = OUTPUT_PREFIX) -> str:
        return f"{prefix}{self.name}"

    def show(self, value: float | None = None) -> str:
        """``value`` (default: the budget's) in this budget's unit, for messages."""
        v = self.value if value is None else value
        return f"{v / 1000:.4g} ms" if self.kind == "latency" else f"{format_count(v)} {BUDGET_WHAT[self.kind]}"


def _short(n: int) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{float(f'{n / scale:.4g}'):g}{unit}"
    return str(int(n))


def make_budgets(macs: Sequence[int] = (), params: Sequence[int] = (), latency_ms: Sequence[float] = (), *,
                 flops: Sequence[int] = ()) -> list[Budget]:
    """Budgets sorted by kind, largest first. ``flops=`` is the old name of ``macs=`` (both count
    multiply-accumulates) and adds to it."""
    for v in latency_ms:
        if not (v > 0 and math.isfinite(v)):
            raise SearchError(f"latency budget must be a positive number of milliseconds, got {v}")
        if round(v * 1000) < 1:
            raise SearchError(f"latency budget {v} ms rounds to 0 microseconds (latencies are kept in whole "
                              "microseconds): give at least 0.001 ms")
    budgets = ([Budget("macs", int(v)) for v in [*macs, *flops]] + [Budget("params", int(v)) for v in params]
               + [Budget("latency", int(round(v * 1000))) for v in latency_ms])
    for b in budgets:
        if b.value <= 0:
            raise SearchError(f"budget must be positive, got {b.value}")
    if not budgets:
        raise SearchError("give at least one budget (macs=[...], params=[...] and/or latency_ms=[...])")
    return sorted(set(budgets), key=lambda b: (b.kind, -b.value))


def check_budgets(space, budgets: Sequence[Budget], input_size: int | None = None,
                  latency: Callable[[ChannelConfig], int] | None = None) -> list[str]:
    """Raise if a budget is below the min config; return warnings for budgets at/above the max.
    Latency budgets need ``latency`` (config -> microseconds, e.g. :class:`ChildLatency`)."""
    lo, hi = profile(space, space.min(), input_size), profile(space, space.max(), input_size)
    notes = []
    for b in budgets:
        if b.kind == "latency":
            if latency is None:
                raise SearchError("latency budgets are measured: pass latency= (e.g. ChildLatency(net, input_size))")
            low, high = latency(space.min()), latency(space.max())
        else:
            low, high = (lo.macs, hi.macs) if b.kind == "macs" else (lo.params, hi.params)
        if b.value < low:
            if b.kind == "latency":
                got, has, use = b.show(), f"{b.show(low)} (measured on this device)", b.show(low)
            else:
                got, has, use = f"{format_count(b.value)} ({b.value:,})", f"{b.show(low)} ({low:,})", f"{low:,}"
            raise SearchError(f"{BUDGET_WHAT[b.kind]} budget {got} is below the smallest config of this supernet: "
                              f"its min config has {has}; use a budget >= {use}")
        if b.value >= high:
            notes.append(f"budget {b.show()} is at or above the max config "
                         f"({b.show(high)}): its result is the max config")
    return notes
