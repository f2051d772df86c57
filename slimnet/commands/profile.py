"""``slimnet profile``: MACs, params (and optionally latency) of a model at a width or config."""
from __future__ import annotations

import json

import torch

from .. import build, profile
from ..profile import format_count, measure_latency
from ..space import ConfigError, read_channel_json
from ..utils import pick_device
from .common import add_debug, check_counts


def add_arguments(p):
    p.add_argument("--model", required=True, help="registry name, e.g. mobilenet_v2, resnet50")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--width", type=float, help="uniform width multiplier")
    which.add_argument("--channels", help="channel config JSON file (e.g. autoslim_150M.json)")
    # defaults: the --channels file's values, else ImageNet's (224, 1000 classes, 3 channels)
    p.add_argument("--input-size", type=int, default=None)
    p.add_argument("--num-classes", type=int, default=None)
    p.add_argument("--in-channels", type=int, default=None)
    p.add_argument("--max-width", type=float, default=None,
                   help="supernet max width (default: the width, or the JSON file's max_width)")
    p.add_argument("--latency", action="store_true", help="also measure the child's forward latency")
    p.add_argument("--batch-size", type=int, default=1, help="batch size for --latency")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_debug(p)


def run(args) -> int:
    check_counts(args, batch_size=1)   # the model checks input_size, num_classes, in_channels
    if args.max_width is not None and not args.max_width > 0:
        raise ConfigError(f"--max-width must be a positive number, got {args.max_width}")
    max_width = args.max_width
    data = {}
    if args.channels:
        data = read_channel_json(args.channels)
        max_width = max_width or data.get("max_width", 1.0)
    else:
        if not args.width > 0:
            raise ConfigError(f"--width must be a positive number, got {args.width}")
        max_width = max_width or max(1.0, args.width)
    # architecture arguments: the command line, else the channels file, else ImageNet defaults
    for name, default in (("input_size", 224), ("num_classes", 1000), ("in_channels", 3)):
        if getattr(args, name) is None:
            setattr(args, name, data.get(name, default))
    kwargs = dict(num_classes=args.num_classes, in_channels=args.in_channels, input_size=args.input_size,
                  max_width=max_width, min_width=min(max_width, args.width or max_width, 0.25))
    with torch.device("meta"):
        net = build(args.model, **kwargs)
    cfg = net.space.load(args.channels, check_min=False) if args.channels else net.space.uniform(args.width)
    cost = profile(net.space, cfg, input_size=args.input_size)
    result = {"model": args.model, "input_size": args.input_size, "macs": cost.macs, "params": cost.params,
              "pool_macs": cost.pool_macs, "channels": dict(cfg.channels)}
    if args.latency:
        device = pick_device(args.device)
        child = build(args.model, **kwargs, channels=cfg).to(device)
        shape = (args.batch_size, args.in_channels, args.input_size, args.input_size)
        result["latency_ms"] = measure_latency(child, shape, device=device)
        result["device"] = str(device)
    if args.json:
        print(json.dumps(result))
    else:
        what = f"width {args.width}" if args.width is not None else args.channels
        print(f"{args.model} at {what}, {args.input_size}x{args.input_size}: "
              f"{format_count(cost.macs)} MACs ({cost.macs:,}), {format_count(cost.params)} params ({cost.params:,})")
        if args.latency:
            print(f"latency: {result['latency_ms']:.2f} ms (batch {args.batch_size}, {result['device']}, median)")
    return 0
