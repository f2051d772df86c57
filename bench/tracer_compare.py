"""torch.fx or torch.export: which captures more of the coverage models' graphs?

For every model of ``bench/trace_coverage.py`` (random weights, eval mode, one image of
``--input-size``): whether ``torch.fx`` symbolic tracing (slimnet's tracer, ``slimnet.trace.graph``)
and ``torch.export.export`` (non-strict) capture the model, with the time each takes and the first
line of the error when one fails. slimnet's tracer is built on fx; this measures that choice.

    PYTHONPATH=. python bench/tracer_compare.py [--input-size 64] [--out table.md]
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

from bench.trace_coverage import MODELS, first_line
from slimnet.trace.graph import trace
from slimnet.trace.sources import build_source
from slimnet.utils import atomic_write_text


def attempt(fn) -> tuple[str, float]:
    start = time.perf_counter()
    try:
        fn()
        status = "yes"
    except Exception as err:     # what each tracer refuses, reported as the table's cell
        status = f"no: {first_line(err, 70)}"
    return status, time.perf_counter() - start


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--input-size", type=int, default=64)
    p.add_argument("--out")
    args = p.parse_args(argv)
    lines = ["| model | torch.fx | s | torch.export | s |", "|---|---|---:|---|---:|"]
    counts = {"fx": 0, "export": 0, "models": 0}
    for name, kwargs, _ in MODELS:
        if name.startswith("timm:"):
            try:
                import timm  # noqa: F401
            except ImportError:
                continue
        torch.manual_seed(0)
        model = build_source(name, 1000, 3, **kwargs).eval()
        x = torch.randn(1, 3, args.input_size, args.input_size)
        fx_status, fx_s = attempt(lambda: trace(model))
        ex_status, ex_s = attempt(lambda: torch.export.export(model, (x,), strict=False))
        counts["models"] += 1
        counts["fx"] += fx_status == "yes"
        counts["export"] += ex_status == "yes"
        lines.append(f"| {name} | {fx_status} | {fx_s:.2f} | {ex_status} | {ex_s:.2f} |")
        print(lines[-1], file=sys.stderr, flush=True)
    lines.append(f"| **captured** | **{counts['fx']} of {counts['models']}** | | **{counts['export']} of "
                 f"{counts['models']}** | |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        atomic_write_text(args.out, text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
