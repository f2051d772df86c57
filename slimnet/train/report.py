"""What a run reports besides checkpoints (rank 0 only): log lines, a progress bar,
``config.yaml``, ``metrics.jsonl`` (valid JSON: non-finite values as null) and TensorBoard events."""
from __future__ import annotations

import json
from pathlib import Path

from ..config import to_yaml
from ..utils import atomic_write_text, json_safe

__all__ = ["Progress", "RunReport"]


class Progress:
    """A tqdm bar over an epoch's steps (nothing when disabled)."""

    def __init__(self, enabled: bool, total: int, desc: str, initial: int = 0):
        self.bar = None
        if enabled:
            from tqdm import tqdm
            self.bar = tqdm(total=total, desc=desc, initial=initial, leave=False, dynamic_ncols=True)

    def update(self, **postfix):
        if self.bar is not None:
            self.bar.set_postfix(postfix, refresh=False)
            self.bar.update(1)

    def close(self):
        if self.bar is not None:
            self.bar.close()


class RunReport:
    """Log lines, config.yaml, metrics.jsonl and TensorBoard events of a run in ``out_dir``;
    on ranks other than 0 (``main`` false) it writes and prints nothing."""

    def __init__(self, out_dir: Path, main: bool):
        self.out_dir, self.main = out_dir, main
        self.metrics_path = out_dir / "metrics.jsonl"
        self.writer = None

    def log(self, msg: str) -> None:
        if self.main:
            print(msg, flush=True)

    def open(self, exp, resumed_epoch: int | None, step: int) -> None:
        """Write config.yaml and open TensorBoard; a resumed run (``resumed_epoch``: the epochs its
        checkpoint has seen) drops the metrics lines and events of later epochs first."""
        if resumed_epoch is not None and self.metrics_path.exists():
            keep = [ln for ln in self.metrics_path.read_text().splitlines()
                    if ln.strip() and json.loads(ln).get("epoch", 0) <= resumed_epoch]
            atomic_write_text(self.metrics_path, "".join(ln + "\n" for ln in keep))
        atomic_write_text(self.out_dir / "config.yaml", to_yaml(exp))
        from torch.utils.tensorboard import SummaryWriter
        self.writer = SummaryWriter(str(self.out_dir / "tb"), purge_step=step if resumed_epoch is not None else None)

    @staticmethod
    def logs_step(step: int) -> bool:
        """Whether :meth:`step` logs after optimizer step ``step`` (the first and every 10th)."""
        return step % 10 == 0 or step == 1

    def step(self, step: int, lr: float, labels: list, values: list, grad_norm: float | None = None) -> None:
        """The learning rate, per-label mean losses and the global gradient norm (before clipping)
        after optimizer step ``step`` (the first and every 10th)."""
        if self.writer is None or not self.logs_step(step):
            return
        self.writer.add_scalar("train/lr", lr, step)
        if grad_norm is not None:
            self.writer.add_scalar("train/grad_norm", grad_norm, step)
        for label in dict.fromkeys(labels):
            vals = [v for lab, v in zip(labels, values) if lab == label]
            self.writer.add_scalar(f"train/loss_{label}", sum(vals) / len(vals), step)

    def epoch(self, record: dict, epochs: int) -> None:
        """One epoch's record: a metrics.jsonl line, TensorBoard scalars and a log line."""
        if not self.main:
            return
        epoch, step, ips = record["epoch"], record["step"], record["images_per_s"]
        train_loss, results = record["train_loss"], record["eval"]
        with open(self.metrics_path, "a") as f:       # non-finite values as null: valid JSON
            f.write(json.dumps(json_safe(record), allow_nan=False) + "\n")
        self.writer.add_scalar("train/images_per_s", ips, step)
        for lab, v in train_loss.items():
            self.writer.add_scalar(f"epoch/train_loss_{lab}", v, epoch)
        for lab, r in results.items():
            for k in ("top1", "top5", "loss"):
                self.writer.add_scalar(f"eval/{k}_{lab}", r[k], epoch)
        self.writer.flush()
        acc = ", ".join(f"{lab} {r['top1']:.2f}%" for lab, r in results.items())
        self.log(f"epoch {epoch}/{epochs}: loss " + " ".join(f"{lab} {v:.3f}" for lab, v in train_loss.items()) +
                 (f" | top-1 {acc}" if acc else "") + f" | {ips:.0f} img/s, {record['time']:.0f}s")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
