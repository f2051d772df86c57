"""``slimnet calibrate``: compute BN statistics of widths / channel configs of a supernet and
write them into a checkpoint (atomically; in place by default, or ``--out`` a new file).
"""
from __future__ import annotations

import os
import sys

from ..calibrate import calibrate_bn
from ..checkpoint import load_supernet, save_checkpoint
from ..utils import check_output_file, clean_stale_temps, pick_device
from .common import (
    add_checkpoint_args,
    add_data_args,
    add_debug,
    calibration_data,
    check_counts,
    checkpoint_experiment,
    config_of,
    describe,
    load_bundle,
    needs_calibration,
    resolve_checkpoint,
)


# --------------------------------------------------------------------------------------------
# the command
# --------------------------------------------------------------------------------------------
def add_arguments(p):
    add_checkpoint_args(p)
    p.add_argument("--width", type=float, action="append", default=[], help="uniform width (repeatable)")
    p.add_argument("--channels", action="append", default=[], help="channel config JSON (repeatable)")
    p.add_argument("--images", type=int, default=2000, help="calibration images (default 2000, as the paper)")
    p.add_argument("--calibrate-seed", type=int, default=None,
                   help="seed of the draw of calibration images (default: the experiment's seed, so the images "
                        "training calibrated on)")
    p.add_argument("--out", help="write the calibrated checkpoint here (default: replace the input atomically)")
    add_data_args(p)
    add_debug(p)


def run(args) -> int:
    if not args.width and not args.channels:
        raise ValueError("nothing to calibrate: give --width W and/or --channels FILE (both repeatable)")
    check_counts(args, images=2, batch_size=1, heldout_size=0)
    path = resolve_checkpoint(args)
    out = args.out or path
    check_output_file(out, "--out" if args.out else "the checkpoint")
    device = pick_device(args.device)
    net, ckpt = load_supernet(path)
    if net.is_child:
        raise ValueError(f"{path} holds a fixed child, not a supernet: nothing to calibrate")
    net.to(device)
    cfgs = [(config_of(net, width=w), f"width {w:g}") for w in args.width]
    cfgs += [(config_of(net, channels=c), os.path.basename(c)) for c in args.channels]
    if net.bn_mode == "switchable":
        for cfg, label in cfgs:
            needs_calibration(net, cfg)  # raises for configs outside the switchable list
    exp = checkpoint_experiment(ckpt, args)
    bundle = load_bundle(exp, "calibration", net)
    if len(bundle.calib) < args.images:
        print(f"note: only {len(bundle.calib)} calibration images available (asked for {args.images})",
              file=sys.stderr)
    data = calibration_data(exp, bundle, args.images, args, device)
    for cfg, label in cfgs:
        used = calibrate_bn(net, cfg, data, num_images=args.images, device=device)
        print(f"calibrated {label} [{cfg.key}] on {used} images: {describe(net, cfg)}")
    net.set_channels(net.space.max())
    extra = {k: v for k, v in ckpt.items() if k not in ("format", "model", "model_state")}
    clean_stale_temps(os.path.dirname(os.path.abspath(out)))
    save_checkpoint(out, net.cpu(), **extra)
    print(f"wrote {out} ({len(net.calibrated_configs())} calibrated config(s) stored)")
    return 0

