"""``slimnet train``: train a supernet (or a fixed child) from a YAML experiment config.

    slimnet train --config configs/fashion_mnist/quickstart.yaml
    slimnet train --config configs/cifar/usnet_mobilenet_v2.yaml optim.lr=0.1 data.batch_size=128
    torchrun --nproc_per_node 4 tools/train.py --config configs/imagenet/us_mobilenet_v2.yaml

Files go to ``checkpoints/<experiment.name>/`` (``experiment.output_dir`` to change):
last.pt, best.pt, config.yaml (the resolved config), metrics.jsonl and tb/ (TensorBoard).
A run whose last.pt exists resumes automatically (``--fresh`` starts over: the previous run's
outputs move to .replaced/ and are removed only once the new run has written its first good
checkpoint; if it stops before, they come back).
"""
from __future__ import annotations

from .common import add_debug


def add_arguments(p):
    p.add_argument("--config", required=True, help="experiment YAML file")
    when = p.add_mutually_exclusive_group()
    when.add_argument("--resume", nargs="?", const=True, default=None, metavar="CKPT",
                      help="resume from <output_dir>/last.pt (or from CKPT); the default already resumes "
                           "when last.pt exists")
    when.add_argument("--fresh", action="store_true",
                      help="start over in the output dir; the previous run is replaced only once this run has "
                           "written its first checkpoint (kept if it fails before)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N (overrides experiment.device)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="dotted overrides, values parsed as YAML, e.g. optim.lr=0.1 data.batch_size=128")
    add_debug(p)


def run(args) -> int:
    from ..config import load_config, to_yaml

    overrides = list(args.overrides)
    if args.device:
        overrides.append(f"experiment.device={args.device}")
    exp = load_config(args.config, overrides)
    if args.print_config:
        print(to_yaml(exp), end="")
        return 0
    from ..train import train

    train(exp, resume=args.resume, fresh=args.fresh, quiet=args.quiet)
    return 0
