"""Plots (matplotlib, imported lazily with the Agg backend; skipped with a warning without it)."""
from __future__ import annotations

import os
import warnings


def _pyplot():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        warnings.warn("matplotlib is not installed: no plot written (pip install slimnet[plot])")
        return None
    return plt


def plot_accuracy_vs_macs(series, path, title: str = "", xlabel: str = "MACs (M)", ylabel: str = "top-1 (%)"):
    """``series``: list of dicts {label, macs: [...], acc: [...], style: 'line'|'points'}.
    Writes a PNG at ``path``; returns the path, or None when matplotlib is missing."""
    plt = _pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    try:
        for s in series:
            xs = [m / 1e6 for m in s["macs"]]
            if s.get("style", "line") == "line":
                ax.plot(xs, s["acc"], "-", marker=".", markersize=3, label=s.get("label"))
            else:
                ax.plot(xs, s["acc"], "o", label=s.get("label"))
            for x, y, text in zip(xs, s["acc"], s.get("annotations", [])):
                ax.annotate(text, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if title:
            ax.set_title(title)
        ax.grid(alpha=0.3)
        if any(s.get("label") for s in series):
            ax.legend(fontsize=8)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path


def plot_trajectory(trajectory, path, marks=None, title: str = "AutoSlim greedy search"):
    """Held-out accuracy against MACs along a search trajectory; ``marks``: label -> config of
    the budgets (marked on the curve)."""
    series = [{"label": "trajectory (held-out)", "macs": [r["macs"] for r in trajectory],
               "acc": [r["top1"] for r in trajectory], "style": "line"}]
    if marks:
        by_cfg = {tuple(sorted(r["config"].items())): r for r in trajectory}
        pts = [(label, by_cfg.get(tuple(sorted(cfg.channels.items())))) for label, cfg in marks.items()]
        pts = [(label, r) for label, r in pts if r is not None]
        if pts:
            series.append({"label": "budgets", "macs": [r["macs"] for _, r in pts], "acc": [r["top1"] for _, r in pts],
                           "style": "points", "annotations": [label.replace("autoslim_", "") for label, _ in pts]})
    return plot_accuracy_vs_macs(series, path, title=title)
