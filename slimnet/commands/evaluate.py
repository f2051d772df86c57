"""``slimnet evaluate``: top-1 / top-5 of supernet widths / channel configs (calibrating BN
where needed) or of an exported child, on the test split; table, optional JSON and plot."""
from __future__ import annotations

import json
import os

from ..checkpoint import load_supernet
from ..export import load_child
from ..metrics import evaluate
from ..profile import format_count, profile
from ..utils import atomic_write_text, check_output_file, json_safe, pick_device
from .common import (
    add_checkpoint_args,
    add_data_args,
    add_debug,
    check_counts,
    checkpoint_experiment,
    config_of,
    ensure_calibrated,
    in_training_memory_format,
    load_bundle,
    resolve_checkpoint,
    test_data,
)


def parse_range(text: str) -> list[float]:
    """'0.35:1.0:0.05' -> [0.35, 0.4, ..., 1.0] (both ends included)."""
    try:
        lo, hi, step = (float(t) for t in text.split(":"))
    except ValueError:
        raise ValueError(f"--widths takes START:STOP:STEP (e.g. 0.35:1.0:0.05), got {text!r}") from None
    if step <= 0 or hi < lo:
        raise ValueError(f"--widths {text!r}: need STEP > 0 and STOP >= START")
    n = int(round((hi - lo) / step))
    out = [round(lo + i * step, 6) for i in range(n + 1)]
    if out[-1] < hi - 1e-9:
        out.append(hi)
    return out


def add_arguments(p):
    add_checkpoint_args(p)
    p.add_argument("--child", help="an exported child (.pt written by slimnet export) instead of a supernet")
    p.add_argument("--width", type=float, action="append", default=[], help="uniform width (repeatable)")
    p.add_argument("--widths", help="a range of widths START:STOP:STEP, e.g. 0.35:1.0:0.05")
    p.add_argument("--channels", action="append", default=[], help="channel config JSON (repeatable)")
    p.add_argument("--calibrate-images", type=int, default=2000, help="BN calibration images for uncalibrated configs")
    p.add_argument("--calibrate-seed", type=int, default=None,
                   help="seed of the draw of calibration images (default: the experiment's seed, so the images "
                        "training calibrated on)")
    p.add_argument("--recalibrate", action="store_true",
                   help="(re)calibrate the BN statistics of every evaluated config, also those already stored and "
                        "those of a shared-BN supernet (the S-Nets ablation's repair); not for switchable BN")
    p.add_argument("--test-subset", type=int, default=None, help="evaluate on the first N test images only")
    p.add_argument("--json", dest="json_out", help="write the results as JSON here")
    p.add_argument("--plot", help="write a PNG of top-1 against MACs here")
    add_data_args(p)
    add_debug(p)


def _row(name: str, cfg, metrics: dict, with_key: bool = True) -> dict:
    """One result row: the config's name (and key), its MACs and params, its test metrics."""
    cost = profile(cfg.space, cfg)
    return {"name": name, **({"key": cfg.key} if with_key else {}), "macs": cost.macs, "params": cost.params,
            "top1": metrics["top1"], "top5": metrics["top5"], "loss": metrics["loss"], "images": metrics["images"]}


def _child_rows(args, device) -> list[dict]:
    """One row: an exported child on the test split (``--data`` names it: a child has no config)."""
    if args.width or args.widths or args.channels:
        raise ValueError("--child evaluates one exported model: drop --width/--widths/--channels")
    child = load_child(args.child).to(device)
    exp = checkpoint_experiment(None, args)
    bundle = load_bundle(exp, "evaluation", child, test_subset=args.test_subset)
    cfg = child.child_config
    metrics = evaluate(child, test_data(exp, bundle, args, device), device=device)
    return [_row(os.path.basename(args.child), cfg, metrics, with_key=False)]


def _supernet_items(net, ckpt, path: str, args) -> list[tuple[str, object]]:
    """(name, config) of every evaluated config, calibrated where needed."""
    widths = list(args.width) + (parse_range(args.widths) if args.widths else [])
    if net.is_child:
        if widths or args.channels or args.recalibrate:
            raise ValueError(f"{path} holds a fixed child (trained alone, plain BN): evaluate it without "
                             "--width/--widths/--channels/--recalibrate")
        return [(os.path.basename(os.path.dirname(os.path.abspath(path))) or "child", net.child_config)]
    items = [(f"width {w:g}", config_of(net, width=w)) for w in widths]
    items += [(os.path.basename(c), config_of(net, channels=c)) for c in args.channels]
    if not items:
        items = [(f"width {w:g}", net.space.uniform(w)) for w in (net.space.max_width, net.space.min_width)]
    ensure_calibrated(net, [c for _, c in items], ckpt, args, args.calibrate_images, force=args.recalibrate)
    return items


def _supernet_rows(args, device) -> list[dict]:
    """A supernet's widths / channel configs (or a fixed-child checkpoint) on the test split."""
    path = resolve_checkpoint(args)
    net, ckpt = load_supernet(path)
    exp = checkpoint_experiment(ckpt, args)
    in_training_memory_format(net.to(device), exp)      # before calibration: both run faster in it
    items = _supernet_items(net, ckpt, path, args)
    bundle = load_bundle(exp, "evaluation", net, test_subset=args.test_subset)
    test = test_data(exp, bundle, args, device)
    rows = []
    for name, cfg in items:
        if not net.is_child:
            net.set_channels(cfg)
        rows.append(_row(name, cfg, evaluate(net, test, device=device)))
    if not net.is_child:
        net.set_channels(net.space.max())
    return rows


def run(args) -> int:
    check_counts(args, calibrate_images=2, test_subset=1, batch_size=1, heldout_size=0)
    for flag, value in (("--json", args.json_out), ("--plot", args.plot)):
        if value:
            check_output_file(value, flag)
    device = pick_device(args.device)
    rows = _child_rows(args, device) if args.child else _supernet_rows(args, device)
    print(f"{'model':>24} {'MACs':>9} {'params':>9} {'top-1':>7} {'top-5':>7}   ({rows[0]['images']} test images)")
    for r in rows:
        print(f"{r['name']:>24} {format_count(r['macs']):>9} {format_count(r['params']):>9} "
              f"{r['top1']:>6.2f}% {r['top5']:>6.2f}%")
    if args.json_out:
        atomic_write_text(args.json_out, json.dumps(json_safe({"results": rows}), indent=2, allow_nan=False) + "\n")
        print(f"wrote {args.json_out}")
    if args.plot:
        from ..plots import plot_accuracy_vs_macs
        out = plot_accuracy_vs_macs(accuracy_series(rows), args.plot, title="test top-1 vs MACs")
        if out:
            print(f"wrote {out}")
    return 0


def accuracy_series(rows: list[dict]) -> list[dict]:
    """Plot series of evaluated rows: uniform widths as one line, channel configs (searched or
    given as JSON) and children as separate points, so no line zig-zags between the two kinds."""
    uniform = sorted((r for r in rows if r["name"].startswith("width ")), key=lambda r: r["macs"])
    configs = sorted((r for r in rows if not r["name"].startswith("width ")), key=lambda r: r["macs"])
    series = []
    if uniform:
        series.append({"label": "uniform widths", "macs": [r["macs"] for r in uniform],
                       "acc": [r["top1"] for r in uniform], "style": "line",
                       "annotations": [r["name"][len("width "):] for r in uniform]})
    if configs:
        series.append({"label": "channel configs", "macs": [r["macs"] for r in configs],
                       "acc": [r["top1"] for r in configs], "style": "points",
                       "annotations": [os.path.splitext(r["name"])[0].replace("autoslim_", "") for r in configs]})
    return series
