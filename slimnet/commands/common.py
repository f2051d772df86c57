"""Argument helpers shared by subcommands."""
from __future__ import annotations

import argparse
import os
import re

import torch

from ..calibrate import calibrate_bn
from ..profile import format_count, profile

_SUFFIX = {"": 1, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}


def parse_count(text: str) -> int:
    """'150M', '1.5G', '150e6', '150000000' -> an integer count."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([kKmMgGtT]?)\s*", str(text))
    if not m:
        raise argparse.ArgumentTypeError(
            f"cannot parse {text!r} as a count: use e.g. 150M, 1.5G, 150e6 or 150000000")
    value = float(m.group(1)) * _SUFFIX[m.group(2).upper()]
    if value <= 0:
        raise argparse.ArgumentTypeError(f"count must be positive, got {text!r}")
    if round(value) < 1:
        raise argparse.ArgumentTypeError(f"count {text!r} rounds to 0; give at least 1")
    return int(round(value))


def check_counts(args, **minimum: int) -> None:
    """The one check of every count flag of a command (``check_counts(args, batch_size=1,
    prescreen=0)``): a value below its minimum is refused with a message naming the flag and
    what it accepts, before any work (never a ZeroDivisionError or a silent reinterpretation such
    as ``--search-images -3`` slicing off 3 images). ``None`` (flag not given) passes."""
    for name, low in minimum.items():
        value = getattr(args, name, None)
        if value is not None and value < low:
            accepted = "a positive integer" if low == 1 else f"an integer >= {low}" + (" (0: off)" if low == 0 else "")
            raise ValueError(f"--{name.replace('_', '-')} must be {accepted}, got {value}")


def add_debug(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")


# --------------------------------------------------------------------------------------------
# supernet, data and calibration helpers of the calibrate / export / evaluate / autoslim commands
# --------------------------------------------------------------------------------------------
def add_checkpoint_args(p, required: bool = False) -> None:
    g = p.add_argument_group("checkpoint (one of)")
    g.add_argument("--checkpoint", help="supernet checkpoint (.pt)")
    g.add_argument("--experiment-dir", help="experiment folder: uses DIR/best.pt")
    g.add_argument("--config", help="experiment YAML: uses its output folder's best.pt "
                                    "(checkpoints/<experiment.name>/best.pt by default)")


def resolve_checkpoint(args) -> str:
    """The checkpoint path from --checkpoint, --experiment-dir DIR (DIR/best.pt) or --config."""
    given = [n for n in ("checkpoint", "experiment_dir", "config") if getattr(args, n, None)]
    if len(given) > 1:
        raise ValueError("give only one of --checkpoint, --experiment-dir, --config")
    if not given:
        raise ValueError("which supernet? give --checkpoint PATH, --experiment-dir DIR or --config YAML")
    if args.checkpoint:
        path = args.checkpoint
    elif args.experiment_dir:
        path = os.path.join(args.experiment_dir, "best.pt")
    else:
        from ..config import load_config
        path = os.path.join(load_config(args.config).output_dir(), "best.pt")
    if os.path.isdir(path):
        raise ValueError(f"{path} is a folder; give the slimnet supernet checkpoint file (--checkpoint "
                         f"{os.path.join(path, 'best.pt')}) or the folder as --experiment-dir")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    return path


def add_data_args(p) -> None:
    g = p.add_argument_group("data (default: the checkpoint's experiment config)")
    g.add_argument("--data", help="dataset name (fashion_mnist, cifar10, cifar100, imagefolder)")
    g.add_argument("--data-root", help="dataset folder")
    g.add_argument("--heldout-size", type=int, help="images carved from the training set (seeded)")
    g.add_argument("--heldout-seed", type=int, help="seed of the held-out split")
    g.add_argument("--device", default="auto", help="auto (CUDA when available) | cpu | cuda[:N]")
    g.add_argument("--batch-size", type=int, default=256, help="batch size for calibration / evaluation")


def data_settings(ckpt: dict, args, net=None) -> dict:
    """Dataset settings: CLI flags over the checkpoint's ``config['data']``, with fallbacks."""
    data = dict((ckpt.get("config") or {}).get("data") or {})
    out = {"name": data.get("name"), "root": data.get("root"), "heldout_size": int(data.get("heldout_size") or 0),
           "heldout_seed": int(data.get("heldout_seed") or 0), "input_size": data.get("input_size"),
           "test_subset": None}
    for key, flag in (("name", "data"), ("root", "data_root"), ("heldout_size", "heldout_size"),
                      ("heldout_seed", "heldout_seed")):
        val = getattr(args, flag, None)
        if val is not None:
            out[key] = val
    if getattr(args, "test_subset", None) is not None:
        out["test_subset"] = args.test_subset
    if out["input_size"] is None and net is not None:
        out["input_size"] = net.arch.get("input_size")
    return out


def load_bundle(settings: dict, what: str, net=None):
    """``build_data`` from settings, or a clear error saying which flags are missing; with ``net``,
    data whose image channels or classes do not fit the model are refused by name (not as a
    conv shape error or an out-of-range label deep inside)."""
    if not settings.get("name"):
        raise ValueError(f"{what} needs data, and the checkpoint's config names no dataset: give --data NAME "
                         "[--data-root DIR] (e.g. --data fashion_mnist)")
    from ..data import build_data
    bundle = build_data(settings["name"], settings.get("root"), input_size=settings.get("input_size"),
                        heldout_size=settings.get("heldout_size") or 0, heldout_seed=settings.get("heldout_seed") or 0,
                        augment="default", test_subset=settings.get("test_subset"))
    if net is not None:
        arch = net.arch
        if bundle.in_channels != arch.get("in_channels", bundle.in_channels):
            raise ValueError(f"{what}: {settings['name']} has {bundle.in_channels}-channel images but this model takes "
                             f"{arch['in_channels']}-channel input; give data of the kind it was trained on "
                             "(--data / --data-root)")
        if bundle.num_classes > arch.get("num_classes", bundle.num_classes):
            raise ValueError(f"{what}: {settings['name']} has {bundle.num_classes} classes but this model has "
                             f"{arch['num_classes']} outputs; give data of the kind it was trained on "
                             "(--data / --data-root)")
    return bundle


def preload(dataset, n: int | None = None, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to ``n`` images (a seeded random subset, in dataset order; all when ``n`` is None) of
    a dataset as one tensor, with labels. Random augmentations are seeded too, so the same
    call gives the same tensor."""
    total = len(dataset)
    idx = torch.arange(total)
    if n is not None and n < total:
        idx = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:n].sort().values
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        items = [dataset[int(i)] for i in idx]
    images = torch.stack([torch.as_tensor(x).as_subclass(torch.Tensor) for x, _ in items])
    labels = torch.tensor([int(y) for _, y in items], dtype=torch.long)
    return images, labels


def batches(images: torch.Tensor, batch_size: int):
    return [images[i: i + batch_size] for i in range(0, len(images), batch_size)]


def config_of(net, *, width=None, channels=None):
    """A width or channel JSON as a config of ``net``; either below the supernet's trained minimum
    is refused (an S-Net's own list is checked by ``needs_calibration`` instead)."""
    if channels is not None:
        return net.space.load(channels, check_min=not net.switchable_configs)
    return net.space.uniform(width)


def needs_calibration(net, cfg) -> bool:
    """A universal / shared supernet config without stored statistics."""
    if net.bn_mode == "switchable":
        if cfg not in net.switchable_configs:
            raise ValueError(f"config {cfg.key} is not one of this switchable-BN supernet's "
                             f"{len(net.switchable_configs)} configs (their widths only); use one of those, or "
                             "a universally slimmable supernet")
        return False
    if net.bn_mode == "shared":
        return False
    return cfg.key not in net.calibrated_configs()


def ensure_calibrated(net, cfgs, ckpt, args, num_images: int, log=print, force: bool = False) -> int:
    """Calibrate every config of ``cfgs`` that has no statistics yet (``force``: every config,
    also a shared-BN supernet's); returns how many."""
    if force and net.bn_mode == "switchable":
        raise ValueError("--recalibrate: a switchable-BN supernet keeps private running statistics per width; "
                         "calibration applies to universal and shared BN")
    todo = [c for c in cfgs if force or needs_calibration(net, c)]
    if not todo:
        return 0
    settings = data_settings(ckpt, args, net)
    try:
        bundle = load_bundle(settings, "calibrating BN statistics", net)
    except (ValueError, FileNotFoundError) as e:
        raise ValueError(f"{len(todo)} config(s) have no BN statistics in this universal supernet and calibrating "
                         f"them failed: {e}") from None
    images, _ = preload(bundle.calib, num_images, seed=getattr(args, "calibrate_seed", 0))
    device = next(net.parameters()).device
    for c in todo:
        calibrate_bn(net, c, batches(images, args.batch_size), num_images=num_images, device=device)
    log(f"calibrated BN statistics of {len(todo)} config(s) on {len(images)} images")
    return len(todo)


def describe(net, cfg, width=None, channels=None) -> str:
    cost = profile(net.space, cfg)
    what = f"width {width:g}" if width is not None else (os.path.basename(channels) if channels else cfg.key)
    return f"{what} ({format_count(cost.macs)} MACs, {format_count(cost.params)} params)"
