"""Does channel reordering by importance help the narrow widths of a trained model?

Trains (or reads) a plain torchvision ResNet-18 on Fashion-MNIST (``train.mode: fixed`` at full
width, ``configs/fashion_mnist/traced_resnet18.yaml`` at 16 px), makes it a traced supernet holding
those weights, and evaluates uniform widths on the 10,000 test images (BN statistics calibrated
per width on the held-out split, under the one calibration policy) with the channels as trained
and after ``slimnet.reorder_channels`` with each criterion (``activation`` averaged over the
calibration images). No training after the reordering: the
narrow widths show what the leading channels alone carry.

Then (``--finetune N``) the use it is made for: a universally slimmable supernet trained from the
same weights for one epoch on N training images, once with the channels as trained and once
reordered by each criterion, and its uniform widths evaluated (``pretrained`` below is the
``package.module:function`` model the runs name).

    PYTHONPATH=. python bench/reorder_fashion_mnist.py --out bench/results/reorder_fashion_mnist.json
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import slimnet  # noqa: E402
from slimnet.checkpoint import load_checkpoint, load_supernet  # noqa: E402
from slimnet.commands.common import checkpoint_experiment  # noqa: E402
from slimnet.loaders import calibration_batches, evaluation_batches, experiment_data  # noqa: E402
from slimnet.trace.sources import build_source  # noqa: E402
from slimnet.utils import atomic_write_text  # noqa: E402

CONFIG = "configs/fashion_mnist/traced_resnet18.yaml"
TRAIN = ["train.mode=fixed", "train.widths=[1.0]", "eval.widths=null", "data.input_size=16", "model.min_width=0.25"]


def train(out_dir: Path, epochs: int) -> Path:
    cmd = [sys.executable, "-m", "slimnet.cli", "train", "--config", CONFIG, "--quiet", *TRAIN,
           f"train.epochs={epochs}", f"experiment.output_dir={out_dir}"]
    print("$", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)
    return out_dir / "last.pt"


def pretrained(num_classes: int = 10, in_channels: int = 1, checkpoint: str = "", criterion: str | None = None):
    """The trained child's weights as a plain model (a GraphModule), its channels reordered by
    ``criterion`` (None: as trained): what ``slimnet train`` starts the supernet from."""
    path = Path(checkpoint)
    data = None
    if criterion == "activation":
        exp = checkpoint_experiment(load_checkpoint(path))
        bundle = experiment_data(exp)
        data = calibration_batches(bundle, 2000, exp.experiment.seed, 500, torch.device("cpu"), True)
    net = supernet_of(path, criterion, data)
    return net.export(net.space.max()).train()


def finetune(path: Path, criterion: str | None, images: int, work: Path) -> dict:
    """One epoch of universal training from the weights (reordered), on ``images`` training images."""
    out = work / f"finetune_{criterion or 'as_trained'}"
    kwargs = "{checkpoint: " + str(path) + (f", criterion: {criterion}" if criterion else "") + "}"
    cmd = [sys.executable, "-m", "slimnet.cli", "train", "--config", CONFIG, "--quiet", "--fresh",
           "model.name=bench.reorder_fashion_mnist:pretrained", f"model.kwargs={kwargs}", "train.mode=universal",
           "data.input_size=16", "model.min_width=0.25", f"data.subset={images}", "train.epochs=1",
           "optim.lr=0.05", "optim.warmup_epochs=0", "eval.widths=[1.0,0.75,0.5,0.35,0.25]",
           f"experiment.output_dir={out}"]
    print("$", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    return {w: r["top1"] for w, r in record["eval"].items()}


@torch.no_grad()
def top1(net, batches) -> float:
    correct = total = 0
    for x, y in batches:
        correct += int((net(x).argmax(1) == y).sum())
        total += len(y)
    return 100.0 * correct / total


def supernet_of(path: Path, criterion: str | None, data=None):
    """The trained child's weights in a fresh copy of its model, traced as a supernet (reordered;
    ``data``: the held-out batches the activation criterion averages over)."""
    ckpt = load_checkpoint(path)
    child, _ = load_supernet(path)
    spec = dict(ckpt["model"]["kwargs"])
    name = ckpt["model"]["name"]
    extra = {k: v for k, v in spec.items() if k not in ("num_classes", "in_channels", "input_size", "max_width",
                                                         "min_width", "bn", "channels", "fixed", "leaf_modules")}
    model = build_source(name, spec["num_classes"], spec["in_channels"], **extra)
    model.load_state_dict(child.state_dict())
    net = slimnet.slimmable(model, spec["input_size"], min_width=spec["min_width"], in_channels=spec["in_channels"])
    if criterion:
        slimnet.reorder_channels(net, criterion, data if criterion == "activation" else None,
                                 num_images=2000)
    return net.eval()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", help="a trained full-width child (train.mode fixed); trained here when absent")
    ap.add_argument("--work", default="checkpoints/bench_reorder", help="where the model is trained")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--widths", type=float, nargs="+", default=[1.0, 0.75, 0.5, 0.35, 0.25])
    ap.add_argument("--calib-images", type=int, default=2000)
    ap.add_argument("--finetune", type=int, default=0, metavar="N",
                    help="also train a supernet from the weights (as trained / reordered) for an epoch on N images")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    t0 = time.time()
    path = Path(args.checkpoint) if args.checkpoint else train(ROOT / args.work, args.epochs)
    exp = checkpoint_experiment(load_checkpoint(path))
    bundle = experiment_data(exp)
    device = torch.device("cpu")
    # fixed batches, the same on every pass: built once for every criterion and width
    calib = calibration_batches(bundle, args.calib_images, exp.experiment.seed, 500, device, True)
    test = evaluation_batches(bundle, bundle.test, 500, device, True)
    rows = {}
    for criterion in (None, "bn", "l1", "activation"):
        net = supernet_of(path, criterion, calib)
        label = criterion or "as trained"
        rows[label] = {}
        for w in args.widths:
            cfg = net.space.uniform(w)
            slimnet.calibrate_bn(net, cfg, calib, num_images=args.calib_images)
            net.set_channels(cfg)
            rows[label][str(w)] = round(top1(net, test), 2)
            print(f"{label:>10}  width {w}: {rows[label][str(w)]:.2f}%", flush=True)
    result = {"command": "python " + " ".join(sys.argv), "model": CONFIG, "train_overrides": TRAIN,
              "epochs": args.epochs, "calib_images": args.calib_images, "test_images": len(bundle.test),
              "top1": rows}
    if args.finetune:
        result["finetune_images"] = args.finetune
        result["finetune_top1"] = {c or "as trained": finetune(path, c, args.finetune, ROOT / args.work)
                                   for c in (None, "bn", "l1", "activation")}
    result["seconds"] = round(time.time() - t0)
    atomic_write_text(args.out, json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
