"""A search's files: one channel JSON per reached budget, the trajectory (JSONL, CSV) and a plot.

Every file name starts with ``prefix`` (default ``autoslim_``): ``<prefix>150M.json``,
``<prefix>params_2M.json``, ``<prefix>trajectory.jsonl`` / ``.csv`` / ``.png``, and the
resumable state ``<prefix>state.json`` (written by the search itself, see ``state_file``).
"""
from __future__ import annotations

import csv
import io
import json
import os
from typing import Iterable

from ..utils import atomic_write_text, json_safe
from .budgets import OUTPUT_PREFIX, Budget
from .run import SearchResult

TRAJECTORY_FIELDS = ["step", "group", "channels", "macs", "params", "latency_ms", "top1", "loss", "candidates",
                     "elapsed_s", "iteration"]
TRAJECTORY_FILES = ("trajectory.jsonl", "trajectory.csv", "trajectory.png")


def state_file(out_dir: str | os.PathLike, prefix: str = OUTPUT_PREFIX) -> str:
    return os.path.join(os.fspath(out_dir), f"{prefix}state.json")


def output_names(budgets: Iterable[Budget], prefix: str = OUTPUT_PREFIX) -> list[str]:
    """The file names of a search's results: the channel JSONs of these budgets, then the
    trajectory files."""
    return [f"{b.file_stem(prefix)}.json" for b in budgets] + [prefix + name for name in TRAJECTORY_FILES]


def write_outputs(result: SearchResult, out_dir: str | os.PathLike, plot: bool = True,
                  prefix: str = OUTPUT_PREFIX) -> dict[str, str]:
    """Write one channel JSON per reached budget, the trajectory (JSONL + CSV) and a plot of
    accuracy against MACs. Returns {what: path}: budget labels, ``trajectory_jsonl``,
    ``trajectory_csv`` and ``plot``."""
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    paths = {}
    for b in result.budgets:
        cfg = result.configs.get(b.label)
        if cfg is not None:
            p = os.path.join(out_dir, f"{b.file_stem(prefix)}.json")
            cfg.save(p)
            paths[b.label] = p
    p = os.path.join(out_dir, f"{prefix}trajectory.jsonl")
    atomic_write_text(p, "".join(json.dumps(json_safe(r), allow_nan=False) + "\n" for r in result.trajectory))
    paths["trajectory_jsonl"] = p
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=TRAJECTORY_FIELDS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in result.trajectory:
        w.writerow(r)
    p = os.path.join(out_dir, f"{prefix}trajectory.csv")
    atomic_write_text(p, buf.getvalue())
    paths["trajectory_csv"] = p
    if plot:
        from ..plots import plot_trajectory
        p = plot_trajectory([r for r in result.trajectory if r["top1"] is not None],
                            os.path.join(out_dir, f"{prefix}trajectory.png"),
                            marks={label: cfg for label, cfg in result.configs.items() if cfg is not None})
        if p:
            paths["plot"] = p
    return paths
