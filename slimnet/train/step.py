"""One training step under the sandwich rule, and the loss of each width in it.

For each micro-batch (``accum_steps``, every k-th sample) the widths run in order, the largest
first; each does forward, loss and backward at once, so its graph is freed before the next width
runs (peak memory: one width's activations). The largest width learns from the labels; the others
from its detached output (inplace distillation) unless distillation is off. Gradients accumulate;
the caller makes the optimizer step. Under DDP every backward but the last runs in ``no_sync()``:
one gradient all-reduce per step.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from ..losses import cross_entropy, distill_loss

__all__ = ["DistillLoss", "StepOptions", "train_step", "width_loss", "distill_ramp", "autocast_context"]


@dataclass(frozen=True)
class DistillLoss:
    """The loss of the width at ``index`` of a step: hard labels for the teacher (index 0) and
    when there is no teacher; otherwise inplace distillation from the teacher's detached logits
    (plus an optional weighted hard-label term). ``distill_ramp`` < 1 blends the student's
    hard-label loss in: ``ramp * distillation + (1 - ramp) * hard labels``."""
    kind: str = "soft_ce"                 # a slimnet.losses distillation kind (or none)
    temperature: float = 1.0
    weight: float = 1.0
    hard_label_weight: float = 0.0
    label_smoothing: float = 0.0
    alpha: dict = field(default_factory=dict)   # alpha-divergence options (kind alpha)

    @classmethod
    def from_experiment(cls, exp) -> "DistillLoss":
        t = exp.train
        alpha = {"alpha_min": t.alpha_min, "alpha_max": t.alpha_max, "clip": t.alpha_clip} if t.distill == "alpha" else {}
        return cls(t.distill, t.temperature, t.distill_weight, t.hard_label_weight, t.label_smoothing, alpha)

    def __call__(self, index: int, logits, targets, teacher, distill_ramp: float = 1.0):
        if index == 0 or teacher is None:
            return cross_entropy(logits, targets, self.label_smoothing)
        loss = self.weight * distill_loss(self.kind, logits, teacher, self.temperature, **self.alpha)
        hard = self.hard_label_weight + (1.0 - distill_ramp)
        if distill_ramp < 1.0:
            loss = distill_ramp * loss
        if hard:
            loss = loss + hard * cross_entropy(logits, targets, self.label_smoothing)
        return loss


@dataclass(frozen=True)
class StepOptions:
    """What :func:`train_step` needs to know: the loss of a width
    (``loss(index, logits, targets, teacher, ramp)``), micro-batches per step, whether the
    largest width teaches the others, and a test hook that makes the last width's loss NaN."""
    loss: Callable = field(default_factory=DistillLoss)
    accum_steps: int = 1
    distill: bool = True
    nan_at_step: Optional[int] = None

    @classmethod
    def from_experiment(cls, exp) -> "StepOptions":
        t = exp.train
        return cls(DistillLoss.from_experiment(exp), t.accum_steps, t.distill != "none", t.debug_nan_at_step)


def width_loss(exp, index: int, logits, targets, teacher, distill_ramp: float = 1.0):
    """The loss :class:`DistillLoss` computes, with its options read from the experiment config
    ``exp`` (``train.distill``, ``train.temperature``, ...)."""
    return DistillLoss.from_experiment(exp)(index, logits, targets, teacher, distill_ramp)


def distill_ramp(step: int, steps_per_epoch: int, warmup_epochs: float) -> float:
    """Weight of distillation in the students' loss at ``step`` (1 once the warm-up is over)."""
    if warmup_epochs <= 0:
        return 1.0
    return min(1.0, step / (warmup_epochs * steps_per_epoch))


def autocast_context(device: torch.device, amp: str):
    """The autocast context of ``train.amp`` (none | bf16 | fp16)."""
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def train_step(model, raw, configs, images, targets, options, scaler, autocast, step: int, ddp: bool = False,
               ghost_params=(), ramp: float = 1.0):
    """Forward + backward of every width of one step (gradients accumulate; no optimizer step).
    Returns the per-width mean losses as one detached float32 tensor.

    ``model`` runs the forward (``raw`` itself, or its DDP / compiled wrapper); ``raw`` switches
    channels. ``options``: a :class:`StepOptions` (an experiment config is read into one).
    ``ghost_params`` (DDP with switchable BN): the private BN parameters. The synced (last)
    backward only reaches the last width's BN, and DDP would not all-reduce the gradients the
    other widths' BNs accumulated under ``no_sync`` (it leaves a parameter the final graph does not
    use with its local gradient). Adding ``0 * sum(p)`` for them to the last loss puts every
    parameter in the final graph: their hooks fire, the accumulated gradients are all-reduced with
    the rest, in the same single all-reduce.
    """
    if not isinstance(options, StepOptions):
        options = StepOptions.from_experiment(options)
    k = options.accum_steps
    losses = torch.zeros(len(configs), device=images.device)
    for i in range(k):
        x, y = (images, targets) if k == 1 else (images[i::k].contiguous(), targets[i::k])
        teacher = None
        for j, (_label, c) in enumerate(configs):
            if not raw.is_child:
                raw.set_channels(c)
            last = i == k - 1 and j == len(configs) - 1
            sync = model.no_sync() if ddp and not last else contextlib.nullcontext()
            with sync:
                with autocast:
                    logits = model(x)
                loss = options.loss(j, logits, y, teacher, ramp)
                if options.nan_at_step == step and j == len(configs) - 1:
                    loss = loss * float("nan")
                backward_loss = loss / k
                if last and ghost_params:
                    backward_loss = backward_loss + 0.0 * torch.stack([p.sum() for p in ghost_params]).sum()
                scaler.scale(backward_loss).backward()
            if j == 0 and options.distill:
                teacher = logits.detach()
            losses[j] += loss.detach().float() / k
            del logits, loss
    return losses
