"""Timing helpers shared by the benchmarks.

Wall-clock medians after warm-up; CUDA work is synchronised before each clock read. For A/B
comparisons use ``time_interleaved``: A and B alternate repeat by repeat, so slow drifts of the
machine (other processes, thermal state, frequency scaling) hit both sides equally.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import time
from typing import Callable, Mapping

import torch

from slimnet.utils import atomic_write_text


def _sync(device=None) -> None:
    if torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda"):
        torch.cuda.synchronize()


def time_fn(fn: Callable[[], object], repeats: int = 20, warmup: int = 3, device=None) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeats`` calls, after ``warmup`` calls."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def time_interleaved(fns: Mapping[str, Callable[[], object]], repeats: int = 20, warmup: int = 3,
                     device=None) -> dict[str, list[float]]:
    """Time several functions side by side: every repeat runs each of them once, in an order that
    alternates between repeats (A B, B A, ...) so neither always runs first. Returns the list of
    per-call times in seconds for every name; take ``statistics.median`` of each."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    _sync(device)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            t0 = time.perf_counter()
            fns[name]()
            _sync(device)
            times[name].append(time.perf_counter() - t0)
    return times


def median_ms(times: list[float]) -> float:
    return statistics.median(times) * 1e3


def machine_info() -> dict:
    """What the numbers were measured on."""
    return {"torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
            "processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None}


def markdown_table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_json(path: str, data) -> None:
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def tb_scalars(tb_dir: str, tag: str) -> list[tuple[int, float]]:
    """(step, value) of every event of the scalar ``tag`` in a TensorBoard folder, in event order
    (empty when the run never logged it)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    ea = EventAccumulator(tb_dir, size_guidance={"scalars": 0})
    ea.Reload()
    if tag not in ea.Tags()["scalars"]:
        return []
    return [(e.step, e.value) for e in ea.Scalars(tag)]
