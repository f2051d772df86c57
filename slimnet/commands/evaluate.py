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
from .common import (add_checkpoint_args, add_data_args, add_debug, batches, check_counts, config_of, data_settings,
                     ensure_calibrated, load_bundle, preload)


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
    p.add_argument("--calibrate-seed", type=int, default=0, help="seed of the random draw of calibration images")
    p.add_argument("--recalibrate", action="store_true",
                   help="(re)calibrate the BN statistics of every evaluated config, also those already stored and "
                        "those of a shared-BN supernet (the S-Nets ablation's repair); not for switchable BN")
    p.add_argument("--test-subset", type=int, default=None, help="evaluate on the first N test images only")
    p.add_argument("--json", dest="json_out", help="write the results as JSON here")
    p.add_argument("--plot", help="write a PNG of top-1 against MACs here")
    add_data_args(p)
    add_debug(p)


def _eval_rows(model, loader_images, labels, batch_size, device):
    data = [(x, y) for x, y in zip(batches(loader_images, batch_size), batches(labels, batch_size))]
    return evaluate(model, data, device=device)


def run(args) -> int:
    check_counts(args, calibrate_images=2, test_subset=1, batch_size=1, heldout_size=0)
    for flag, value in (("--json", args.json_out), ("--plot", args.plot)):
        if value:
            check_output_file(value, flag)
    device = pick_device(args.device)
    rows = []
    if args.child:
        if args.width or args.widths or args.channels:
            raise ValueError("--child evaluates one exported model: drop --width/--widths/--channels")
        child = load_child(args.child).to(device)
        settings = data_settings({}, args, child)
        bundle = load_bundle(settings, "evaluation", child)
        images, labels = preload(bundle.test)
        cfg = child.child_config
        cost = profile(cfg.space, cfg)
        m = _eval_rows(child, images, labels, args.batch_size, device)
        rows.append({"name": os.path.basename(args.child), "macs": cost.macs, "params": cost.params,
                     "top1": m["top1"], "top5": m["top5"], "loss": m["loss"], "images": m["images"]})
    else:
        from .common import resolve_checkpoint
        path = resolve_checkpoint(args)
        net, ckpt = load_supernet(path)
        widths = list(args.width) + (parse_range(args.widths) if args.widths else [])
        if net.is_child and (widths or args.channels or args.recalibrate):
            raise ValueError(f"{path} holds a fixed child (trained alone, plain BN): evaluate it without "
                             "--width/--widths/--channels/--recalibrate")
        net.to(device)
        if net.is_child:
            items = [(os.path.basename(os.path.dirname(os.path.abspath(path))) or "child", net.child_config)]
        else:
            items = [(f"width {w:g}", config_of(net, width=w)) for w in widths]
            items += [(os.path.basename(c), config_of(net, channels=c)) for c in args.channels]
            if not items:
                items = [(f"width {w:g}", net.space.uniform(w)) for w in (net.space.max_width, net.space.min_width)]
            ensure_calibrated(net, [c for _, c in items], ckpt, args, args.calibrate_images, force=args.recalibrate)
        settings = data_settings(ckpt, args, net)
        bundle = load_bundle(settings, "evaluation", net)
        images, labels = preload(bundle.test)
        for name, cfg in items:
            if not net.is_child:
                net.set_channels(cfg)
            cost = profile(net.space, cfg)
            m = _eval_rows(net, images, labels, args.batch_size, device)
            rows.append({"name": name, "key": cfg.key, "macs": cost.macs, "params": cost.params,
                         "top1": m["top1"], "top5": m["top5"], "loss": m["loss"], "images": m["images"]})
        if not net.is_child:
            net.set_channels(net.space.max())
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
