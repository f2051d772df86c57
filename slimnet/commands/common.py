"""Argument helpers shared by subcommands."""
from __future__ import annotations

import argparse
import copy
import os
import re

import torch

from ..calibrate import calibrate_bn
from ..config import Config, ConfigError, from_dict
from ..loaders import calibration_batches, evaluation_batches, use_memory
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


def checkpoint_experiment(ckpt: dict | None, args=None) -> Config:
    """The experiment config a checkpoint was trained with, read through the typed config loader
    (a child or a checkpoint without one: the defaults), with the data flags of ``args``
    (``--data``, ``--data-root``, ``--heldout-size``, ``--heldout-seed``) applied over it."""
    raw = copy.deepcopy((ckpt or {}).get("config") or {})
    data = raw.setdefault("data", {})
    for key, flag in (("name", "data"), ("root", "data_root"), ("heldout_size", "heldout_size"),
                      ("heldout_seed", "heldout_seed")):
        value = getattr(args, flag, None)
        if value is not None:
            data[key] = value
    data["download"] = False          # the tools never download; `slimnet train` does when asked
    try:
        exp = from_dict(raw, source="the checkpoint's experiment config")
    except ConfigError as e:
        raise ValueError(f"{e} (override data settings with --data / --data-root / --heldout-size)") from None
    if "name" not in data:
        exp.data.name = None          # no dataset known (not the schema's default): load_bundle asks for --data
    return exp


def in_training_memory_format(net, exp: Config):
    """``net`` in the memory format its run trained in: channels_last where the experiment chose it
    (``train.channels_last``, measured faster for that model on its device). Forward passes without
    autograd gain as much (docs/RESULTS.md: 1.8-2.2x for the study's MobileNet v2, 1.0-1.5x for
    ResNet-20 at 16 px), so the search and evaluation run in it too. Values are unchanged but for
    the last bits of another kernel's summation order."""
    if exp.train.channels_last:
        net.to(memory_format=torch.channels_last)
    return net


def load_bundle(exp: Config, what: str, net=None, test_subset: int | None = None):
    """The splits of the experiment's ``data`` section (``test_subset``: the first N test images;
    None: all), or a clear error saying which flags are missing; with ``net``, data whose image
    channels or classes do not fit the model are refused by name (not as a conv shape error or an
    out-of-range label deep inside)."""
    d = exp.data
    if not d.name:
        raise ValueError(f"{what} needs data, and the checkpoint's config names no dataset: give --data NAME "
                         "[--data-root DIR] (e.g. --data fashion_mnist)")
    from ..data import build_data
    input_size = d.input_size if d.input_size is not None or net is None else net.arch.get("input_size")
    bundle = build_data(d.name, d.root, input_size=input_size, heldout_size=d.heldout_size,
                        heldout_seed=d.heldout_seed, exclude_heldout=d.exclude_heldout, augment=d.augment,
                        subset=d.subset, test_subset=test_subset)
    if net is not None:
        arch = net.arch
        if bundle.in_channels != arch.get("in_channels", bundle.in_channels):
            raise ValueError(f"{what}: {d.name} has {bundle.in_channels}-channel images but this model takes "
                             f"{arch['in_channels']}-channel input; give data of the kind it was trained on "
                             "(--data / --data-root)")
        if bundle.num_classes > arch.get("num_classes", bundle.num_classes):
            raise ValueError(f"{what}: {d.name} has {bundle.num_classes} classes but this model has "
                             f"{arch['num_classes']} outputs; give data of the kind it was trained on "
                             "(--data / --data-root)")
    return bundle


def calibration_data(exp: Config, bundle, num_images: int, args, device):
    """Batches of the calibration images under the one policy (``slimnet.loaders.calibration_batches``):
    the experiment's seed unless ``--calibrate-seed`` says otherwise, so the tools calibrate a
    config on the images training calibrated it on."""
    seed = getattr(args, "calibrate_seed", None)
    seed = exp.experiment.seed if seed is None else seed
    memory = use_memory(exp.data.in_memory, bundle)
    return calibration_batches(bundle, num_images, seed, args.batch_size, device, memory)


def test_data(exp: Config, bundle, args, device):
    """The test split as streamed batches (``slimnet.loaders.evaluation_batches``)."""
    return evaluation_batches(bundle, bundle.test, args.batch_size, device, use_memory(exp.data.in_memory, bundle))


def preload(dataset, n: int | None = None, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to ``n`` images (a seeded random subset, in dataset order; all when ``n`` is None) of
    a dataset as one tensor, with labels (the search's held-out images, scored many times)."""
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
    exp = checkpoint_experiment(ckpt, args)
    try:
        bundle = load_bundle(exp, "calibrating BN statistics", net)
    except (ValueError, FileNotFoundError) as e:
        raise ValueError(f"{len(todo)} config(s) have no BN statistics in this universal supernet and calibrating "
                         f"them failed: {e}") from None
    device = next(net.parameters()).device
    data = calibration_data(exp, bundle, num_images, args, device)
    for c in todo:
        used = calibrate_bn(net, c, data, num_images=num_images, device=device)
    log(f"calibrated BN statistics of {len(todo)} config(s) on {used} images")
    return len(todo)


def describe(net, cfg, width=None, channels=None) -> str:
    cost = profile(net.space, cfg)
    what = f"width {width:g}" if width is not None else (os.path.basename(channels) if channels else cfg.key)
    return f"{what} ({format_count(cost.macs)} MACs, {format_count(cost.params)} params)"
