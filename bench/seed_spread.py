"""Why do seeds of one recipe end far apart? Per run: test top-1 after each epoch and the global
gradient norms it logged (TensorBoard ``train/grad_norm``, every 10th step, before clipping).

Each ``--runs LABEL=DIR`` is a folder of study runs (``bench/study_fashion_mnist.py --runs DIR``,
one subfolder per job with metrics.jsonl and tb/); every run in it is summarised, and the spread
over seeds is given per width. The short-schedule S-Net, 4 seeds, without and with the clip:

    python bench/study_fashion_mnist.py --part snet --seeds 0 1 2 3 --jobs 1 --runs RUNS/noclip \
        --results RUNS/results_noclip --report-md RUNS/noclip.md --report-png RUNS/noclip.png \
        --override train.epochs=2 --override data.subset=40000 --override optim.warmup_epochs=0.2 \
        --override optim.grad_clip=null --override model.kwargs.dropout=0.2
    (the same with optim.grad_clip=5 into RUNS/clip)
    python bench/seed_spread.py --runs "no clip=RUNS/noclip" "clip 5=RUNS/clip" \
        --out bench/results/snet_seed_spread.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[0] = ROOT       # the repository root, not bench/

from bench.common import markdown_table, tb_scalars, write_json  # noqa: E402


def summarise_run(run_dir: str) -> dict:
    rows = [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl"))]
    steps = rows[0]["step"]                                    # steps per epoch
    norms = sorted(dict(tb_scalars(os.path.join(run_dir, "tb"), "train/grad_norm")).items())
    per_epoch = []
    for r in rows:
        lo, hi = r["step"] - steps, r["step"]
        v = [n for s, n in norms if lo < s <= hi]
        per_epoch.append({
            "epoch": r["epoch"],
            "top1": {w: e["top1"] for w, e in r["eval"].items()},
            "train_loss": {w: round(x, 4) for w, x in r["train_loss"].items()},
            "grad_norm": {"logged": len(v), "median": round(statistics.median(v), 2) if v else None,
                          "max": round(max(v), 1) if v else None, "above_5": sum(n > 5 for n in v),
                          "above_20": sum(n > 20 for n in v)}})
    with open(os.path.join(run_dir, "config.yaml")) as f:
        seed = yaml.safe_load(f)["experiment"]["seed"]
    return {"run": os.path.basename(run_dir), "seed": seed, "epochs": per_epoch}


def summarise(label: str, runs_dir: str) -> dict:
    runs = [summarise_run(os.path.join(runs_dir, d)) for d in sorted(os.listdir(runs_dir))
            if os.path.exists(os.path.join(runs_dir, d, "metrics.jsonl"))]
    final = [r["epochs"][-1]["top1"] for r in runs]
    widths = list(final[0]) if final else []
    spread = {w: {"mean": round(statistics.fmean(f[w] for f in final), 2),
                  "min": min(f[w] for f in final), "max": max(f[w] for f in final)} for w in widths}
    return {"label": label, "runs_dir": runs_dir, "runs": runs, "final_top1": spread}


def table(groups: list[dict]) -> str:
    head = ["recipe", "seed", "final top-1 (widths)", "epoch-1 top-1 (widths)",
            "epoch 1: median / max grad norm", "epoch 1: logged steps > 20"]
    rows = []
    for g in groups:
        for r in g["runs"]:
            first, last = r["epochs"][0], r["epochs"][-1]
            gn = first["grad_norm"]
            rows.append([g["label"], r["seed"], " / ".join(f"{v:.2f}" for v in last["top1"].values()),
                         " / ".join(f"{v:.2f}" for v in first["top1"].values()),
                         f"{gn['median']} / {gn['max']}", f"{gn['above_20']} of {gn['logged']}"])
        rows.append([g["label"], "range", " / ".join(f"{s['min']:.2f}-{s['max']:.2f}" for s in g["final_top1"].values()),
                     "", "", ""])
    return markdown_table(head, rows)


def init_grad_norms(batch: int = 128, seed: int = 0) -> list[dict]:
    """Global gradient norm of one cross-entropy step at initialisation: torchvision's own MobileNet
    v2 (10 classes) at the study's 28x28 grey input against a larger input, and slimnet's at width
    1.0. At 28x28 the last stages run at 1x1 spatial size, where BN normalises over the batch only."""
    import torch
    import torchvision

    import slimnet

    def norm(net, x):
        torch.manual_seed(seed)
        y = torch.randint(0, 10, (x.shape[0],))
        net.train()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        return round(float(torch.nn.utils.clip_grad_norm_(net.parameters(), float("inf"))), 2)

    rows = []
    for size, channels in ((28, 1), (56, 1), (112, 3), (224, 3)):
        torch.manual_seed(seed)
        tv = torchvision.models.mobilenet_v2(num_classes=10)
        if channels == 1:   # a grey stem, initialised as torchvision initialises its convs
            tv.features[0][0] = torch.nn.Conv2d(1, 32, 3, 2, 1, bias=False)
            torch.nn.init.kaiming_normal_(tv.features[0][0].weight, mode="fan_out")
        x = torch.randn(batch, channels, size, size, generator=torch.Generator().manual_seed(seed))
        rows.append({"model": "torchvision mobilenet_v2", "input": f"{channels}x{size}x{size}", "grad_norm": norm(tv, x)})
    torch.manual_seed(seed)
    net = slimnet.build("mobilenet_v2", num_classes=10, in_channels=1, input_size=28, max_width=1.0,
                        min_width=0.35, downsample="imagenet")
    net.set_width(1.0)
    x = torch.randn(batch, 1, 28, 28, generator=torch.Generator().manual_seed(seed))
    rows.append({"model": "slimnet mobilenet_v2 (study), width 1.0", "input": "1x28x28", "grad_norm": norm(net, x)})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", nargs="+", required=True, metavar="LABEL=DIR")
    p.add_argument("--out", help="result JSON")
    args = p.parse_args(argv)
    init = init_grad_norms()
    print(markdown_table(["model", "input", "gradient norm at initialisation (batch 128)"],
                         [[r["model"], r["input"], r["grad_norm"]] for r in init]) + "\n")
    groups = []
    for spec in args.runs:
        label, sep, path = spec.partition("=")
        if not sep or not os.path.isdir(path):
            p.error(f"--runs: expected LABEL=DIR with an existing folder, got {spec!r}")
        groups.append(summarise(label, path))
    print(table(groups))
    if args.out:
        write_json(args.out, {"init_grad_norm": init, "groups": groups})
    return 0


if __name__ == "__main__":
    sys.exit(main())
