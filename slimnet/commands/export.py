"""``slimnet export``: one width / channel config of a supernet as a standalone child model
(state dict + config JSON, optionally TorchScript and ONNX, each checked against PyTorch)."""
from __future__ import annotations

import os

import torch

from ..checkpoint import load_supernet
from ..export import check_export, export, export_onnx, export_torchscript, save_child
from ..profile import format_count, measure_latency, profile
from ..utils import check_output_dir, clean_stale_temps, pick_device
from .common import (
    add_checkpoint_args,
    add_data_args,
    add_debug,
    check_counts,
    config_of,
    ensure_calibrated,
    needs_calibration,
    resolve_checkpoint,
)


def add_arguments(p):
    add_checkpoint_args(p)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--channels", help="channel config JSON (e.g. autoslim_150M.json)")
    which.add_argument("--width", type=float, help="uniform width multiplier")
    p.add_argument("--out", required=True, help="output folder (child.pt, child.json, child.ts, child.onnx)")
    p.add_argument("--name", default="child", help="file name stem (default: child)")
    p.add_argument("--torchscript", action="store_true", help="also write a traced TorchScript model (.ts)")
    p.add_argument("--onnx", action="store_true", help="also write ONNX (needs onnx + onnxruntime)")
    p.add_argument("--calibrate-images", type=int, default=2000,
                   help="images to calibrate BN with when the config has no statistics yet (universal supernets)")
    p.add_argument("--no-latency", action="store_true", help="skip the latency measurement")
    p.add_argument("--latency-batch", type=int, default=1, help="batch size of the latency measurement")
    add_data_args(p)
    add_debug(p)


def check_name(name: str) -> str:
    """``--name`` is a file name stem inside ``--out``: no folders, no '..', nothing hidden."""
    if not name or name in (".", "..") or name.startswith(".") or any(c in name for c in "/\\\0") \
            or os.path.basename(name) != name:
        raise ValueError(f"--name must be a plain file name stem such as 'child' or 'mbv2_150M' (no '/', '\\', "
                         f"'..' or leading '.'; files go into --out), got {name!r}")
    return name


def run(args) -> int:
    check_name(args.name)
    check_counts(args, calibrate_images=2, latency_batch=1, batch_size=1, heldout_size=0)
    check_output_dir(args.out, "--out")
    path = resolve_checkpoint(args)
    device = pick_device(args.device)
    if args.onnx:  # fail before any work when the packages are missing
        from ..export import _onnx_modules
        _onnx_modules()
    net, ckpt = load_supernet(path)
    if net.is_child:
        raise ValueError(f"{path} holds a fixed child already, not a supernet")
    net.to(device)
    cfg = config_of(net, width=args.width, channels=args.channels)
    if needs_calibration(net, cfg):
        ensure_calibrated(net, [cfg], ckpt, args, args.calibrate_images)
    child = export(net, cfg)
    size = net.arch["input_size"]
    example = torch.randn(4, net.arch["in_channels"], size, size, device=device,
                          generator=torch.Generator(device=device).manual_seed(0))
    diff = check_export(net, child, cfg, example)
    if not diff <= 1e-4:
        raise RuntimeError(f"exported child differs from the supernet at this config by {diff:.3g}")
    os.makedirs(args.out, exist_ok=True)
    clean_stale_temps(args.out)
    stem = os.path.join(args.out, args.name)
    save_child(child, stem + ".pt")
    cost = profile(net.space, cfg)
    print(f"child: {stem}.pt + {stem}.json  ({format_count(cost.macs)} MACs = {cost.macs:,}, "
          f"{format_count(cost.params)} params = {cost.params:,}); max |child - supernet| = {diff:.2e}")
    if args.torchscript:
        d = export_torchscript(child, stem + ".ts", example)
        print(f"TorchScript: {stem}.ts (max abs diff vs PyTorch {d:.2e})")
    if args.onnx:
        d = export_onnx(child.cpu(), stem + ".onnx", example.cpu())
        print(f"ONNX: {stem}.onnx (onnxruntime vs PyTorch max abs diff {d:.2e})")
        child.to(device)
    if not args.no_latency:
        shape = (args.latency_batch, net.arch["in_channels"], size, size)
        t_child = measure_latency(child, shape, device=device)
        net.set_channels(cfg)
        t_super = measure_latency(net, shape, device=device)
        net.set_channels(net.space.max())
        print(f"latency (batch {args.latency_batch}, {device}, median): child {t_child:.2f} ms, "
              f"supernet at this config {t_super:.2f} ms ({t_super / max(t_child, 1e-9):.2f}x)")
    return 0
