"""``slimnet trace``: which channels of any CNN slimnet can slim, which it fixes and why, and the MACs range.

    slimnet trace --model torchvision:densenet121 --input-size 224
    slimnet trace --model timm:mobilenetv3_large_100 --num-classes 10 --min-width 0.35 --json report.json
    slimnet trace --model my_package.models:build_net --in-channels 1 --input-size 28 --fixed head.fc

The model is built with random weights (``slimnet.trace.sources.build_source``: nothing is
downloaded), traced with torch.fx on one image (``slimnet.trace_report``) and the report printed
as a table, or as JSON (``--json``: to stdout, ``--json PATH``: written to PATH atomically). A model
that cannot be built or traced prints one line saying why (and what to try) and exits with 2.
"""
from __future__ import annotations

import json

from ..trace import TraceError, trace_report
from ..trace.sources import build_source
from ..utils import atomic_write_text, check_output_file
from .common import add_debug, check_counts


def add_arguments(p):
    p.add_argument("--model", required=True,
                   help="torchvision:NAME, timm:NAME or package.module:function (e.g. torchvision:resnet18)")
    p.add_argument("--input-size", type=int, default=224, help="side of the example image traced (default 224)")
    p.add_argument("--in-channels", type=int, default=3, help="input channels (default 3)")
    p.add_argument("--num-classes", type=int, default=1000, help="classes of the model's head (default 1000)")
    p.add_argument("--min-width", type=float, default=0.25,
                   help="width of every slimmable group for the low end of the MACs range (default 0.25)")
    p.add_argument("--fixed", nargs="+", action="extend", default=[], metavar="NAME",
                   help="layers or channel groups to keep at their channel count")
    p.add_argument("--leaf-modules", nargs="+", action="extend", default=[], metavar="NAME",
                   help="submodules torch.fx keeps whole (code it cannot trace); their channels are fixed")
    p.add_argument("--json", nargs="?", const="-", default=None, metavar="PATH",
                   help="print the report as JSON, or write it to PATH")
    add_debug(p)


def run(args) -> int:
    check_counts(args, input_size=1, in_channels=1, num_classes=1)
    if not 0 < args.min_width <= 1:
        raise TraceError(f"--min-width must be in (0, 1], got {args.min_width}")
    if args.json not in (None, "-"):
        check_output_file(args.json, "--json")
    model = build_source(args.model, num_classes=args.num_classes, in_channels=args.in_channels)
    report = trace_report(model, args.input_size, args.in_channels, fixed=args.fixed,
                          leaf_modules=args.leaf_modules, min_width=args.min_width)
    if args.json is None:
        print(report)
        return 0
    text = json.dumps({"source": args.model, **report.to_dict()}, indent=2) + "\n"
    if args.json == "-":
        print(text, end="")
    else:
        atomic_write_text(args.json, text)
        print(f"wrote the trace report of {args.model} to {args.json}")
    return 0
