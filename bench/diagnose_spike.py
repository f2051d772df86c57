"""Replay a training run step by step and record what happens around a loss spike.

The runs are deterministic on CPU at a fixed thread count (data order, augmentation and the
sandwich rule's widths are functions of (seed, step)), so a run that blew up can be replayed
exactly from scratch. For every step in ``--window`` (and every 10th step before it) this records
the per-width losses, the global gradient norm (before any clipping), the parameter tensors with
the largest gradient norms, the largest |gamma| of every BatchNorm and the widths the step drew;
at ``--snapshot`` steps it saves the model (for a closer look offline). It stops after
``--until``. The first ``--check`` logged losses are compared with the original run's TensorBoard
events, when given, to show the replay is the same run.

    python bench/diagnose_spike.py --config configs/bench/fmnist_usnet.yaml --seed 0 \
        --until 2100 --window 2030 2100 --out bench/results/usnet_spike/replay_s0.json \
        --original /work/study2/checkpoints/study_fmnist/usnet_s0/tb
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import tb_scalars  # noqa: E402
from slimnet.config import load_config  # noqa: E402
from slimnet.train.distributed import init_distributed  # noqa: E402
from slimnet.train.trainer import Trainer  # noqa: E402
from slimnet.utils import atomic_write_text  # noqa: E402


class ReplayDone(Exception):
    pass


def channel_fraction(c) -> float:
    """The config's active channels as a fraction of the supernet's (a uniform width's multiplier,
    roughly)."""
    return round(sum(c.values()) / sum(g.max for g in c.space), 4)


class Recorder:
    """Statistics taken just before each optimizer step (an optimizer step pre-hook)."""

    def __init__(self, net, window, snapshots, out_dir):
        self.net, self.window, self.snapshots, self.out_dir = net, window, set(snapshots), out_dir
        self.named = [(n, p) for n, p in net.named_parameters()]
        self.bn_weights = [(n, m.weight) for n, m in net.named_modules()
                           if "BatchNorm" in type(m).__name__ and getattr(m, "weight", None) is not None]
        self.records, self.step, self.pending = [], 0, {}

    def wanted(self, step: int) -> bool:
        lo, hi = self.window
        return lo <= step <= hi or (step + 1) % 10 == 0 or step == 0

    def before_step(self, optimizer, args, kwargs):
        step = self.step
        if not self.wanted(step):
            return
        norms = torch.stack([p.grad.detach().norm() if p.grad is not None else torch.zeros(()) for _, p in self.named])
        top = torch.topk(norms, 5)
        gammas = torch.stack([w.detach().abs().max() for _, w in self.bn_weights])
        g = int(gammas.argmax())
        self.pending = {
            "step": step,
            "grad_norm": float(norms.norm()),
            "top_grads": [[self.named[i][0], round(float(norms[i]), 4)] for i in top.indices.tolist()],
            "max_abs_gamma": [self.bn_weights[g][0], round(float(gammas[g]), 3)],
            "weight_norm": float(torch.stack([p.detach().norm() for _, p in self.named]).norm()),
        }
        if step in self.snapshots:
            torch.save(self.net.state_dict(), self.out_dir / f"snapshot_step{step}.pt")


def make_trainer(exp, recorder_args):
    dist, device = init_distributed(exp.experiment.device)

    class ReplayTrainer(Trainer):
        def set_up(self):
            super().set_up()
            self.recorder = Recorder(self.raw, *recorder_args)
            self.optimizer.register_step_pre_hook(self.recorder.before_step)

        def train_batch(self, epoch, batch, images, targets):
            rec = self.recorder
            rec.step = self.step
            configs = self.widths.configs(self.step)
            values, lr = super().train_batch(epoch, batch, images, targets)
            if rec.pending.get("step") == rec.step:
                rec.pending.update(lr=lr, losses=list(values),
                                   channel_fraction=[channel_fraction(c) for _, c in configs])
                rec.records.append(rec.pending)
                rec.pending = {}
            if self.step > self.until:
                raise ReplayDone
            return values, lr

    return ReplayTrainer(exp, dist, device, quiet=True)


def original_losses(tb_dir: str, n: int) -> dict:
    return dict(tb_scalars(tb_dir, "train/loss_max")[:n])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--until", type=int, required=True, help="last optimizer step to run")
    ap.add_argument("--window", type=int, nargs=2, required=True, metavar=("FROM", "TO"))
    ap.add_argument("--snapshot", type=int, nargs="*", default=[], help="steps whose weights (before the step) are saved")
    ap.add_argument("--out", required=True, help="result JSON")
    ap.add_argument("--original", help="the original run's tb/ folder, to check the replay against")
    ap.add_argument("--check", type=int, default=20, help="logged losses of the original run to compare")
    ap.add_argument("overrides", nargs="*", help="config overrides, key=value")
    args = ap.parse_args(argv)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        exp = load_config(args.config, [f"experiment.output_dir={tmp}", f"experiment.seed={args.seed}",
                                        "train.checkpoint_every=0", *args.overrides])
        trainer = make_trainer(exp, ((args.window[0], args.window[1]), args.snapshot, out.parent))
        trainer.until = args.until
        try:
            trainer.run(fresh=True)
        except ReplayDone:
            pass
    records = trainer.recorder.records
    result = {"command": "python " + " ".join(sys.argv), "threads": torch.get_num_threads(), "records": records}
    if args.original:
        orig = original_losses(args.original, args.check)
        mine = {r["step"] + 1: r["losses"][0] for r in records}
        pairs = [(s, v, mine[s]) for s, v in orig.items() if s in mine]
        result["replay_check"] = {"steps": [s for s, _, _ in pairs],
                                  "max_abs_diff": max((abs(a - b) for _, a, b in pairs), default=math.nan)}
        print(f"replay vs original loss_max over {len(pairs)} logged steps: max |diff| "
              f"{result['replay_check']['max_abs_diff']:.2e}")
    body = ",\n  ".join(json.dumps(r) for r in result.pop("records"))     # one line per step
    head = json.dumps(result, indent=1)[:-2]
    atomic_write_text(out, head + ',\n "records": [\n  ' + body + "\n ]\n}\n")
    print(f"wrote {out} ({len(records)} steps)")


if __name__ == "__main__":
    main()
