#!/usr/bin/env python
"""Overhead of slimmable layers: supernet at a config vs. the plain child of that config.

Times one forward + backward (train mode, batch of random images, CPU by default) of a
MobileNet v2 supernet (max_width 1.0, min_width 0.35, universal BN) switched to a uniform width,
against a plain child built directly at the same channels, interleaved repeat by repeat. The
ratio supernet / child is the price of slicing; the target is <= 1.10 at every width.

    python bench/bench_ops.py                     # widths 0.35 0.5 0.75 1.0, batch 64, 32x32
    python bench/bench_ops.py --quick --batch-size 2   # smoke test
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys

import torch

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # repo root, not bench/
import slimnet  # noqa: E402
from bench.common import machine_info, markdown_table, time_interleaved, write_json  # noqa: E402

TARGET = 1.10
DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "bench_ops.json")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="mobilenet_v2")
    p.add_argument("--widths", type=float, nargs="+", default=[0.35, 0.5, 0.75, 1.0])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--input-size", type=int, default=32)
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--repeats", type=int, default=30, help="timed forward+backward steps per model and width")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch.set_num_threads (default: all cores)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--quick", action="store_true", help="a few repeats, for a smoke test")
    p.add_argument("--out", default=DEFAULT_OUT, help="JSON results file")
    args = p.parse_args(argv)
    if args.quick:
        args.repeats, args.warmup = 2, 1
    for name in ("batch_size", "repeats", "threads", "input_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


def train_step(model, x):
    """One forward + backward; gradients are dropped (set_to_none) so both sides allocate alike."""
    def step():
        model.zero_grad(set_to_none=True)
        model(x).sum().backward()
    return step


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    kwargs = dict(num_classes=args.num_classes, input_size=args.input_size, max_width=1.0, min_width=0.35)
    supernet = slimnet.build(args.model, bn="universal", **kwargs).to(device).train()
    x = torch.randn(args.batch_size, 3, args.input_size, args.input_size, device=device)
    rows, results = [], []
    for width in args.widths:
        cfg = supernet.set_width(width)
        # timing only: the child has its own random weights, nothing is copied
        child = slimnet.build(args.model, channels=cfg, **kwargs).to(device).train()
        times = time_interleaved({"supernet": train_step(supernet, x), "child": train_step(child, x)},
                                 repeats=args.repeats, warmup=args.warmup, device=device)
        sup, ch = (statistics.median(times[k]) * 1e3 for k in ("supernet", "child"))
        macs = slimnet.profile(supernet.space, cfg).macs
        ratio = sup / ch
        results.append({"width": width, "macs": macs, "supernet_ms": round(sup, 3), "child_ms": round(ch, 3),
                        "ratio": round(ratio, 4), "meets_target": ratio <= TARGET})
        rows.append([width, f"{macs / 1e6:.1f}M", f"{sup:.2f}", f"{ch:.2f}", f"{ratio:.3f}"])
        print(f"width {width}: supernet {sup:.2f} ms, child {ch:.2f} ms, ratio {ratio:.3f}", flush=True)
        del child
    title = (f"{args.model}, forward+backward, train mode, batch {args.batch_size}, "
             f"{args.input_size}x{args.input_size}, {device.type}, {torch.get_num_threads()} threads, "
             f"median of {args.repeats} interleaved repeats (target ratio <= {TARGET})")
    print()
    print(title)
    print()
    print(markdown_table(["width", "MACs", "supernet ms", "child ms", "ratio"], rows))
    write_json(args.out, {"benchmark": "bench_ops", "description": title, "model": args.model,
                          "batch_size": args.batch_size, "input_size": args.input_size,
                          "repeats": args.repeats, "target_ratio": TARGET, "machine": machine_info(),
                          "results": results})
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
