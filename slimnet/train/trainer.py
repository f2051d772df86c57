"""The training engine: one plain loop for every slimmable training mode.

Modes (``train.mode``):

* ``switchable``  S-Nets: a fixed list of widths (or channel JSONs), every one each step, private
  (switchable) BN per entry; ``model.bn: shared`` is the naive shared-BN ablation.
* ``universal``   US-Nets: the sandwich rule over uniform widths: max + min + ``num_random``
  random widths in [min_width, max_width] per step; BN statistics are calibrated before eval.
* ``autoslim``    the AutoSlim supernet: max + min + ``num_random`` per-layer random channel
  configs per step (``space.random``), calibrated BN.
* ``fixed``       one config trained alone, as a *plain child* (``build(..., channels=cfg)``: real
  small tensors, ordinary BatchNorm, no slicing). Its checkpoint keeps the supernet format with
  ``channels`` in the model spec, so ``load_supernet`` rebuilds exactly that child.

One step, for each micro-batch (``train.accum_steps``, every k-th sample): the widths in order,
the largest first; each width does forward, loss and backward at once, so its graph is freed
before the next width runs (peak memory: one width's activations). The largest width learns
from the labels; the others from its detached output (inplace distillation) unless
``train.distill: none``. Gradients accumulate; one optimizer step. Under DDP every backward but
the last runs in ``no_sync()``: one gradient all-reduce per step.

Reproducibility: everything random is a function of (seed, step) or (seed, epoch, sample): the
widths of a step come from ``random.Random`` seeded by (seed, step) (identical on every rank),
the global torch RNG (dropout) is reseeded each step from (seed, step, rank), the data order is a
permutation seeded by (seed, epoch), and each sample's augmentation runs under a seed of
(seed, epoch, index). So a run resumed mid-epoch from ``last.pt`` ends with the weights of an
uninterrupted run, with any number of data workers. RNG states are saved too, for the record.

Design notes:

* ``fixed`` mode trains a plain child, not a supernet pinned to one config: identical maths
  (BN over the same channels), no slicing overhead, and weight decay / momentum touch only the
  weights that exist. The checkpoint's model spec carries ``channels``, so ``load_supernet``
  returns that child (``net.is_child``); export it by saving it, not with ``export()``.
* DDP with switchable BN: the last (synced) backward reaches only the last width's private BN.
  DDP would leave the gradients the other BNs accumulated under ``no_sync`` un-reduced (each
  rank would keep its own), so ``train_step`` adds ``0 * sum(p)`` of the private BN parameters
  to the last loss: all parameters are in the final graph and one all-reduce covers them
  (``find_unused_parameters`` is not needed). BN running statistics stay per rank
  (``broadcast_buffers=False``) and are averaged over ranks before evaluation and checkpoints.
* Batch size is per process; ``train.accum_steps=k`` splits it into k micro-batches of every
  k-th sample (BN sees each micro-batch alone, as each DDP rank sees its own batch).
* ``train.compile``: see the ``train.compile`` check in ``_train`` for what is supported.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as tdist
import torch.nn as nn

from ..calibrate import calibrate_bn
from ..checkpoint import load_checkpoint, model_spec, nonfinite_entries, save_checkpoint
from ..config import Config, ConfigError, flatten, to_yaml
from ..loaders import Loaders, build_loaders, experiment_data, mix
from ..losses import cross_entropy, distill_loss
from ..metrics import evaluate, summarize
from ..models import build
from ..nn import SlimBatchNorm2d, SwitchableBatchNorm2d
from ..ops import use_fast_depthwise_
from ..profile import profile
from ..space import read_channel_json
from ..utils import atomic_write_text, check_output_dir, clean_stale_temps, json_safe, pick_device

__all__ = ["train", "TrainingDiverged", "build_model", "WidthSampler", "param_groups", "lr_factor",
           "RESUME_SAFE_KEYS"]

# Keys that may change between a checkpoint and the run resuming it (everything else must match).
RESUME_SAFE_KEYS = {
    "experiment.name", "experiment.output_dir", "experiment.device", "data.root", "data.workers",
    "data.eval_batch_size", "data.download", "train.epochs", "train.checkpoint_every",
    "train.debug_nan_at_step", "train.debug_step_delay", "train.compile",
}
RESUME_SAFE_PREFIXES = ("eval.",)


class TrainingDiverged(RuntimeError):
    """A non-finite loss: training stopped before the optimizer step that would spread it."""


# --------------------------------------------------------------------------------------------
# Distributed set-up
# --------------------------------------------------------------------------------------------
@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    created: bool = False      # we initialised the process group (and destroy it at the end)

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device_name: str) -> tuple[DistInfo, torch.device]:
    """Join the process group ``torchrun`` describes in the environment (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(), pick_device(device_name)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    created = False
    if not tdist.is_initialized():
        tdist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        created = True
    return DistInfo(rank, world, local_rank, created), device


def _all_reduce_sum(t: torch.Tensor, dist: DistInfo) -> torch.Tensor:
    if dist.enabled:
        tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
    return t


def _average_bn_buffers(net: nn.Module, dist: DistInfo) -> None:
    """Per-rank BN running statistics -> their mean, so every rank (and the checkpoint) agrees."""
    if not dist.enabled:
        return
    for buf in net.buffers():
        if buf.is_floating_point():
            tdist.all_reduce(buf, op=tdist.ReduceOp.SUM)
            buf.div_(dist.world)


# --------------------------------------------------------------------------------------------
# Model and widths
# --------------------------------------------------------------------------------------------
def _label(entry) -> str:
    return str(float(entry)) if isinstance(entry, (int, float)) else Path(entry).stem


@dataclass
class TrainPlan:
    """What the engine trains and evaluates: labelled configs, largest first."""
    mode: str
    train_configs: list = field(default_factory=list)   # [(label, ChannelConfig)] switchable / fixed
    eval_configs: list = field(default_factory=list)    # [(label, ChannelConfig)]
    calibrate: bool = False


def build_model(cfg: Config, num_classes: int, in_channels: int, input_size: int):
    """(net, plan) for the experiment. Widths outside the model's range fail here, naming them."""
    m, t = cfg.model, cfg.train
    arch = dict(num_classes=num_classes, in_channels=in_channels, input_size=input_size,
                max_width=m.max_width, min_width=m.min_width, **m.kwargs)

    def proto(**over):
        with torch.device("meta"):
            return build(m.name, **{**arch, **over})

    def resolve(entries, space, key, check_min=False):   # check_min: universal supernets' trained range
        out = []
        for e in entries:
            try:
                c = space.uniform(e) if isinstance(e, float) else space.load(e, check_min=check_min)
            except ValueError as err:
                raise ConfigError(f"{key}: {_label(e)}: {err}") from None
            out.append((_label(e), c))
        return out

    if t.mode == "fixed":
        if m.channels is not None:
            try:
                data = read_channel_json(m.channels)
            except ValueError as err:
                raise ConfigError(f"model.channels: {err}") from None
            for k in ("max_width", "min_width"):   # the searched supernet's range, so the JSON checks out
                if k in data:
                    arch[k] = data[k]
            entry = m.channels
        else:
            entry = t.widths[0]
            if arch["min_width"] is None or arch["min_width"] > entry:
                arch["min_width"] = min(entry, arch["max_width"])
        ((label, child_cfg),) = resolve([entry], proto().space, "model.channels" if m.channels else "train.widths")
        # a plain child whose depthwise convs train with slimnet's faster kernel (same state dict)
        net = use_fast_depthwise_(build(m.name, **arch, channels=dict(child_cfg.channels)))
        plan = TrainPlan("fixed", [(label, net.child_config)], [(label, net.child_config)], calibrate=False)
        return net, plan

    if t.mode == "switchable":
        floats = [w for w in t.widths if isinstance(w, float)]
        if arch["min_width"] is None and floats:
            arch["min_width"] = min(min(floats), arch["max_width"])
        space = proto().space
        configs = resolve(t.widths, space, "train.widths")
        configs.sort(key=lambda lc: -profile(space, lc[1]).macs)      # the largest is the teacher
        bn = m.bn or "switchable"
        net = build(m.name, **arch, bn=bn, switchable=[dict(c.channels) for _, c in configs])
        train_configs = [(lab, net.space.config(dict(c.channels))) for lab, c in configs]
        if cfg.eval.widths is not None:
            eval_configs = resolve(cfg.eval.widths, net.space, "eval.widths")
            eval_configs = [(lab, net.space.config(dict(c.channels))) for lab, c in eval_configs]
        else:
            eval_configs = list(train_configs)
        calib = bool(cfg.eval.calibrate)            # optional for S-Nets (private BN has running stats)
        return net, TrainPlan("switchable", train_configs, eval_configs, calib)

    net = build(m.name, **arch, bn=m.bn or "universal")
    space = net.space
    if cfg.eval.widths is not None:
        eval_configs = resolve(cfg.eval.widths, space, "eval.widths", check_min=True)
    else:
        hi, lo = space.max_width, space.min_width
        widths = sorted({round(float(w), 3) for w in np.linspace(hi, lo, 4)}, reverse=True)
        eval_configs = []
        for w in widths:   # rounding can map nearby widths to one config: keep each config once
            c = space.uniform(w)
            if all(c != other for _, other in eval_configs):
                eval_configs.append((_label(w), c))
    calib = True if cfg.eval.calibrate is None else cfg.eval.calibrate
    return net, TrainPlan(t.mode, [], eval_configs, calib)


class WidthSampler:
    """The labelled configs of one step, largest first. Random choices come from a
    ``random.Random`` seeded by (seed, step) only, so every DDP rank (and a resumed run) draws the
    same widths without communicating."""

    def __init__(self, net, plan: TrainPlan, cfg: Config):
        self.net, self.plan, self.seed = net, plan, cfg.experiment.seed
        self.num_random = cfg.train.num_random
        if plan.mode in ("universal", "autoslim"):
            space = net.space
            self.lo, self.hi = space.min_width, space.max_width
            if plan.mode == "universal":
                self.max, self.min = space.uniform(self.hi), space.uniform(self.lo)
            else:
                self.max, self.min = space.max(), space.min()

    def labels(self) -> list[str]:
        if self.plan.mode in ("switchable", "fixed"):
            return [lab for lab, _ in self.plan.train_configs]
        return ["max"] + ["random"] * self.num_random + ["min"]

    def configs(self, step: int) -> list:
        if self.plan.mode in ("switchable", "fixed"):
            return list(self.plan.train_configs)
        rng = random.Random(self.seed * 1_000_003 + step)
        space = self.net.space
        if self.plan.mode == "universal":
            rand = [space.uniform(rng.uniform(self.lo, self.hi)) for _ in range(self.num_random)]
        else:
            rand = [space.random(rng) for _ in range(self.num_random)]
        return [("max", self.max)] + [("random", c) for c in rand] + [("min", self.min)]


# --------------------------------------------------------------------------------------------
# Optimizer and schedule
# --------------------------------------------------------------------------------------------
_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, SlimBatchNorm2d, SwitchableBatchNorm2d)


def _is_depthwise(mod: nn.Module) -> bool:
    if getattr(mod, "depthwise", False):
        return True
    return isinstance(mod, nn.Conv2d) and mod.groups > 1 and mod.groups == mod.in_channels == mod.out_channels


def param_groups(net: nn.Module, optim_cfg) -> list[dict]:
    """Two groups: weight-decayed (conv / linear weights) and not (BN, biases, depthwise)."""
    decay, no_decay = [], []
    for mod in net.modules():
        for name, p in mod.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            if isinstance(mod, _NORMS):
                use = optim_cfg.decay_bn
            elif name == "bias":
                use = optim_cfg.decay_bias
            elif isinstance(mod, nn.Conv2d) and _is_depthwise(mod):
                use = optim_cfg.decay_depthwise
            else:
                use = True
            (decay if use else no_decay).append(p)
    return [{"params": decay, "weight_decay": optim_cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(net: nn.Module, o) -> torch.optim.Optimizer:
    groups = param_groups(net, o)
    if o.name == "sgd":
        return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov)
    return torch.optim.AdamW(groups, lr=o.lr, betas=tuple(o.betas), eps=o.eps)


def lr_factor(step: int, o, epochs: int, steps_per_epoch: int) -> float:
    """Multiplier of ``optim.lr`` at optimizer step ``step`` (0-based), per iteration."""
    total = max(1, epochs * steps_per_epoch)
    warm = int(round(o.warmup_epochs * steps_per_epoch))
    if step < warm:
        return o.warmup_start + (1.0 - o.warmup_start) * step / warm
    floor = o.min_lr / o.lr
    progress = min(1.0, (step - warm) / max(1, total - warm))
    if o.schedule == "cosine":
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    if o.schedule == "linear":
        return floor + (1 - floor) * (1 - progress)
    if o.schedule == "step":
        epoch = step / steps_per_epoch
        return o.gamma ** sum(1 for mstone in o.milestones if epoch >= mstone)
    if o.schedule == "exponential":   # x gamma at every epoch boundary (the reference's exp_decaying)
        return o.gamma ** (step // steps_per_epoch)
    return 1.0


# --------------------------------------------------------------------------------------------
# Checkpoint helpers
# --------------------------------------------------------------------------------------------
def _rng_state() -> dict:
    """Every RNG's state as tensors, numbers and lists (checkpoints load with weights_only=True)."""
    version, mt, gauss = random.getstate()
    kind, key, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(),
             "python": {"version": version, "state": list(mt), "gauss": gauss},
             "numpy": {"kind": str(kind), "key": torch.from_numpy(key.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    py, n = state["python"], state["numpy"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    np.random.set_state((n["kind"], n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    if "cuda" in state and torch.cuda.is_available():
        with contextlib.suppress(Exception):
            torch.cuda.set_rng_state_all(state["cuda"])


def check_resume_compatible(ckpt: dict, net, cfg: Config, path: str) -> None:
    """Raise naming every key where the checkpoint's model or config differs from this run's."""
    problems = []
    spec = model_spec(net)
    old = ckpt.get("model", {})
    if old.get("name") != spec["name"]:
        problems.append(f"model: checkpoint {old.get('name')!r}, now {spec['name']!r}")
    else:
        ok, nk = old.get("kwargs", {}), spec["kwargs"]
        for k in sorted(set(ok) | set(nk)):
            if ok.get(k) != nk.get(k):
                problems.append(f"model.{k}: checkpoint {ok.get(k)!r}, now {nk.get(k)!r}")
    old_cfg = flatten(ckpt.get("config") or {})
    new_cfg = flatten(cfg.to_dict())
    for k in sorted(set(old_cfg) | set(new_cfg)):
        if k in RESUME_SAFE_KEYS or k.startswith(RESUME_SAFE_PREFIXES):
            continue
        if old_cfg.get(k) != new_cfg.get(k):
            problems.append(f"{k}: checkpoint {old_cfg.get(k)!r}, now {new_cfg.get(k)!r}")
    if problems:
        shown = "; ".join(problems[:12]) + (f"; ... ({len(problems)} in all)" if len(problems) > 12 else "")
        raise ConfigError(f"cannot resume from {path}: it was made by another model or config. Mismatched keys: "
                          f"{shown}. Use --fresh to start over, or another experiment.name / output_dir.")


# --------------------------------------------------------------------------------------------
# The output folder: a fresh run replaces the previous one only once it has a checkpoint
# --------------------------------------------------------------------------------------------
REPLACED = ".replaced"   # the previous run's outputs while a fresh run in the folder has no checkpoint yet


def _run_outputs(out_dir: Path) -> list[Path]:
    """A run's outputs and what was derived from its checkpoints (search results)."""
    found = [out_dir / n for n in ("last.pt", "best.pt", "metrics.jsonl", "config.yaml", "tb")
             if (out_dir / n).exists()]
    return found + sorted(p for p in out_dir.glob("autoslim_*") if p.is_file())


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    elif p.exists() or p.is_symlink():
        p.unlink()


def _stage_previous_run(out_dir: Path, log) -> bool:
    """Move the previous run's outputs aside (``<out>/.replaced/``) before a fresh run starts;
    True when there was one. Nothing is deleted before the fresh run has a checkpoint."""
    outputs = _run_outputs(out_dir)
    if not outputs:
        return False
    aside = out_dir / REPLACED
    aside.mkdir()
    for p in outputs:
        os.replace(p, aside / p.name)
    log(f"moved the previous run's outputs aside to {aside}/ ({', '.join(p.name for p in outputs)}): they come back "
        "if this run stops before its first checkpoint, and are removed once it has one")
    return True


def _finish_replacing(out_dir: Path, log) -> None:
    """The fresh run has its first good checkpoint: the previous run's outputs go (saying which)."""
    aside = out_dir / REPLACED
    if not aside.is_dir():
        return
    names = sorted(p.name for p in aside.iterdir())
    shutil.rmtree(aside)
    searched = [n for n in names if n.startswith("autoslim_")]
    log(f"replaced the previous run in {out_dir}/: removed its " + ", ".join(n for n in names if n not in searched) +
        (f" and the search results of its supernet ({', '.join(searched)})" if searched else ""))
    children = sorted(str(p.relative_to(out_dir)) for pattern in ("*.pt", "*/*.pt") for p in out_dir.glob(pattern)
                      if p.name not in ("last.pt", "best.pt") and p.with_suffix(".json").is_file())
    if children:
        log(f"note: {', '.join(children)}: children exported from the previous supernet are kept (standalone models) "
            "but do not come from this run's checkpoints")


def _restore_previous_run(out_dir: Path, log) -> None:
    """A fresh run stopped (or was killed) before its first checkpoint: its partial outputs go,
    the previous run's come back."""
    aside = out_dir / REPLACED
    if not aside.is_dir() or (out_dir / "last.pt").is_file():
        return
    for p in _run_outputs(out_dir):
        _remove(p)
    names = []
    for p in sorted(aside.iterdir()):
        os.replace(p, out_dir / p.name)
        names.append(p.name)
    aside.rmdir()
    log(f"restored the previous run's outputs in {out_dir}/ ({', '.join(names)}): the run that replaces them "
        "stopped before writing its first checkpoint")


def _recover_output_dir(out_dir: Path, log) -> None:
    """What a killed run left: stale temporary files go; previous outputs a fresh run had moved
    aside come back (it had no checkpoint) or go (it had one, killed before removing them)."""
    if not out_dir.is_dir():
        return
    removed = clean_stale_temps(out_dir)
    if removed:
        log(f"removed temporary files left by a killed write in {out_dir}/: {', '.join(removed)}")
    if (out_dir / REPLACED).is_dir():
        if (out_dir / "last.pt").is_file():
            _finish_replacing(out_dir, log)
        else:
            _restore_previous_run(out_dir, log)


# --------------------------------------------------------------------------------------------
# The engine
# --------------------------------------------------------------------------------------------
def _autocast(device: torch.device, amp: str):
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def width_loss(cfg: Config, index: int, logits, targets, teacher, distill_ramp: float = 1.0):
    """Hard-label loss for the teacher (index 0) and when distillation is off; otherwise inplace
    distillation from the teacher's detached logits (plus an optional weighted hard-label term).
    ``distill_ramp`` < 1 (``train.distill_warmup_epochs``) blends the student's hard-label loss
    in: ``ramp * distillation + (1 - ramp) * hard labels``."""
    t = cfg.train
    if index == 0 or teacher is None:
        return cross_entropy(logits, targets, t.label_smoothing)
    kw = {"alpha_min": t.alpha_min, "alpha_max": t.alpha_max, "clip": t.alpha_clip} if t.distill == "alpha" else {}
    loss = t.distill_weight * distill_loss(t.distill, logits, teacher, t.temperature, **kw)
    hard = t.hard_label_weight + (1.0 - distill_ramp)
    if distill_ramp < 1.0:
        loss = distill_ramp * loss
    if hard:
        loss = loss + hard * cross_entropy(logits, targets, t.label_smoothing)
    return loss


def distill_ramp(step: int, steps_per_epoch: int, warmup_epochs: float) -> float:
    """Weight of distillation in the students' loss at ``step`` (1 once the warm-up is over)."""
    if warmup_epochs <= 0:
        return 1.0
    return min(1.0, step / (warmup_epochs * steps_per_epoch))


def train_step(model, raw, configs, images, targets, cfg: Config, scaler, autocast, step: int, ddp: bool,
               ghost_params=(), ramp: float = 1.0):
    """Forward + backward of every width of one step (gradients accumulate; no optimizer step).
    Returns the per-width mean losses as one detached float32 tensor.

    ``ghost_params`` (DDP with switchable BN): the private BN parameters. The synced (last)
    backward only reaches the last width's BN, and DDP would not all-reduce the gradients the
    other widths' BNs accumulated under ``no_sync`` (it leaves a parameter the final graph does not
    use with its local gradient). Adding ``0 * sum(p)`` for them to the last loss puts every
    parameter in the final graph: their hooks fire, the accumulated gradients are all-reduced with
    the rest, in the same single all-reduce.
    """
    k = cfg.train.accum_steps
    distill = cfg.train.distill != "none"
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
                loss = width_loss(cfg, j, logits, y, teacher, ramp)
                if cfg.train.debug_nan_at_step == step and j == len(configs) - 1:
                    loss = loss * float("nan")
                backward_loss = loss / k
                if last and ghost_params:
                    backward_loss = backward_loss + 0.0 * torch.stack([p.sum() for p in ghost_params]).sum()
                scaler.scale(backward_loss).backward()
            if j == 0 and distill:
                teacher = logits.detach()
            losses[j] += loss.detach().float() / k
            del logits, loss
    return losses


def _evaluate_all(raw, plan: TrainPlan, loaders: Loaders, cfg: Config, device, dist: DistInfo, autocast) -> dict:
    out = {}
    for label, c in plan.eval_configs:
        if not raw.is_child:
            if plan.calibrate:
                calibrate_bn(raw, c, loaders.calib, cfg.eval.calib_images, device=device)
            raw.set_channels(c)
        with autocast:
            r = evaluate(raw, loaders.eval, device)
        sums = torch.tensor([r["correct1"], r["correct5"], r["loss_sum"], r["images"]], dtype=torch.float64,
                            device=device)
        sums[3] = float(loaders.eval_images_rank)     # exact count (summarize() floors it at 1)
        sums = _all_reduce_sum(sums, dist).tolist()
        s = summarize(*sums)
        out[label] = {"top1": s["top1"], "top5": s["top5"], "loss": s["loss"],
                      "macs": profile(raw.space, c).macs}
    return out


def _best_label(plan: TrainPlan, cfg: Config) -> str:
    want = cfg.eval.best_width
    entries = plan.eval_configs
    if want in ("max", "min"):
        macs = [(profile(c.space, c).macs, lab) for lab, c in entries]
        return (max if want == "max" else min)(macs)[1]
    label = _label(want) if isinstance(want, float) else str(want)
    if isinstance(want, str):
        with contextlib.suppress(ValueError):
            label = _label(float(want))
    labels = [lab for lab, _ in entries]
    if label not in labels:
        raise ConfigError(f"eval.best_width: {want!r} is not one of the evaluated widths {labels} (or max / min)")
    return label


class _Progress:
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


def _log(dist: DistInfo, msg: str) -> None:
    if dist.main:
        print(msg, flush=True)


def train(cfg: Config | str, *, resume: bool | str | None = None, fresh: bool = False, quiet: bool = False) -> dict:
    """Train the experiment ``cfg`` (a validated :class:`slimnet.config.Config`, or a YAML path).

    ``resume``: None resumes automatically when ``<output_dir>/last.pt`` exists (unless
    ``fresh``); True requires it; a path resumes from that checkpoint. ``fresh`` ignores an
    existing run and replaces it once this run has written its first good checkpoint (its
    outputs wait in ``<output_dir>/.replaced/`` and come back if this run stops before). Returns a summary dict: output_dir, last (path), best
    ({top1, epoch, label}), eval (the last evaluation per width), step, epochs, model (the trained,
    unwrapped network).
    Under ``torchrun`` each process calls this; only rank 0 writes files and logs.
    """
    if isinstance(cfg, (str, os.PathLike)):
        from ..config import load_config
        cfg = load_config(os.fspath(cfg))
    if fresh and resume:
        raise ConfigError("--fresh and --resume contradict each other; pick one")
    dist, device = init_distributed(cfg.experiment.device)
    try:
        return _train(cfg, dist, device, resume, fresh, quiet)
    except BaseException:
        if dist.main:   # a fresh run that failed before its first checkpoint: the previous run comes back
            with contextlib.suppress(Exception):
                _restore_previous_run(Path(cfg.output_dir()), lambda m: _log(dist, m))
        raise
    finally:
        if dist.created and tdist.is_initialized():
            tdist.destroy_process_group()


def _train(cfg: Config, dist: DistInfo, device: torch.device, resume, fresh: bool, quiet: bool) -> dict:
    t, d = cfg.train, cfg.data
    out_dir = Path(cfg.output_dir())
    last_path, best_path = out_dir / "last.pt", out_dir / "best.pt"
    metrics_path, tb_dir = out_dir / "metrics.jsonl", out_dir / "tb"
    if t.amp == "fp16" and device.type != "cuda":
        raise ConfigError("train.amp: fp16 needs CUDA (GradScaler); use bf16 on CPU")
    if t.compile and t.mode in ("universal", "autoslim"):
        raise ConfigError(f"train.compile: torch.compile does not fit {t.mode} mode: every step runs new channel "
                          "counts, so it would recompile every step. It works for fixed and switchable modes.")
    check_output_dir(out_dir, "experiment.output_dir")
    if dist.main:
        _recover_output_dir(out_dir, lambda m: _log(dist, m))
    if dist.enabled:   # every rank decides about resuming after the recovery
        tdist.barrier()
    resume_path = None
    if isinstance(resume, str):
        resume_path = resume
        if not os.path.isfile(resume_path):
            raise FileNotFoundError(f"--resume: checkpoint {resume_path} does not exist")
    elif resume:
        if not last_path.is_file():
            raise FileNotFoundError(f"--resume: {last_path} does not exist (nothing to resume); drop --resume "
                                    "to start a new run")
        resume_path = str(last_path)
    elif not fresh and last_path.is_file():
        resume_path = str(last_path)

    # data (missing datasets fail here, with data.py's message) and model
    bundle = experiment_data(cfg)
    if d.root is None and bundle.root is not None:
        d.root = bundle.root      # config.yaml and the checkpoints record the folder actually read
    torch.manual_seed(cfg.experiment.seed)
    raw, plan = build_model(cfg, bundle.num_classes, bundle.in_channels, bundle.input_size)
    best_label = _best_label(plan, cfg)
    loaders = build_loaders(cfg, bundle, device, plan.calibrate, dist.rank, dist.world)
    steps_per_epoch = loaders.sampler.batches_per_epoch
    widths = WidthSampler(raw, plan, cfg)

    raw.to(device)
    if t.channels_last:
        raw.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(raw, cfg.optim)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, cfg.optim, t.epochs, steps_per_epoch))
    scaler = torch.amp.GradScaler(device.type, enabled=t.amp == "fp16")

    start_epoch, start_batch, step = 0, 0, 0
    best = {"top1": -1.0, "epoch": 0, "label": best_label}
    carried_sums = None
    if resume_path is not None:
        ckpt = load_checkpoint(resume_path, map_location="cpu")
        missing = [k for k in ("optimizer", "scheduler", "scaler", "rng", "epoch", "batch", "step") if k not in ckpt]
        if missing:
            raise ConfigError(f"cannot resume from {resume_path}: it is not a training checkpoint (no {missing}); "
                              "resume from last.pt (best.pt and exported files hold the model only)")
        check_resume_compatible(ckpt, raw, cfg, resume_path)
        if ckpt.get("batch", 0) and ckpt.get("world_size", 1) != dist.world:
            raise ConfigError(f"cannot resume mid-epoch from {resume_path}: it ran on {ckpt.get('world_size')} "
                              f"processes, this run has {dist.world} (the data order differs); resume from an "
                              "epoch-end checkpoint or use the same number of processes")
        raw.load_state_dict(ckpt["model_state"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        _set_rng_state(ckpt["rng"])
        start_epoch, start_batch, step = ckpt["epoch"], ckpt["batch"], ckpt["step"]
        best = ckpt.get("best", best)
        carried_sums = ckpt.get("epoch_loss")
        _log(dist, f"resuming from {resume_path}: epoch {start_epoch + 1}, batch {start_batch}, step {step}")
        del ckpt

    model = raw
    ddp = dist.enabled
    ghost_params: list = []
    if ddp:
        if plan.mode == "switchable" and raw.bn_mode == "switchable":   # see train_step
            ghost_params = [p for mod in raw.modules() if isinstance(mod, SwitchableBatchNorm2d)
                            for p in mod.parameters()]
        with warnings.catch_warnings():   # broadcast_buffers=False: BN statistics stay per rank until
            warnings.simplefilter("ignore", FutureWarning)   # _average_bn_buffers (epoch end, checkpoints)
            model = nn.parallel.DistributedDataParallel(
                raw, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False)
    if t.compile:
        import torch._dynamo as dynamo
        dynamo.config.cache_size_limit = max(dynamo.config.cache_size_limit, 4 * len(plan.train_configs) + 8)
        model = torch.compile(model)
    autocast = _autocast(device, t.amp)

    writer = None
    replacing = False
    if dist.main:
        out_dir.mkdir(parents=True, exist_ok=True)
        if resume_path is None:
            replacing = _stage_previous_run(out_dir, lambda m: _log(dist, m))
        elif metrics_path.exists():     # drop lines of epochs the checkpoint has not seen
            keep = [ln for ln in metrics_path.read_text().splitlines()
                    if ln.strip() and json.loads(ln).get("epoch", 0) <= start_epoch]
            atomic_write_text(metrics_path, "".join(ln + "\n" for ln in keep))
        atomic_write_text(out_dir / "config.yaml", to_yaml(cfg))
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(str(tb_dir), purge_step=step if resume_path else None)
        n_params = sum(p.numel() for p in raw.parameters())
        _log(dist, f"slimnet train: {t.mode} {cfg.model.name} ({n_params / 1e6:.2f}M params), "
                   f"{len(bundle.train)} training images, {steps_per_epoch} steps/epoch x {t.epochs} epochs, "
                   f"device {device}" + (f" x {dist.world} processes" if ddp else ""))
        _log(dist, f"writing to {out_dir}/: last.pt, best.pt, config.yaml, metrics.jsonl, tb/ (TensorBoard)")
        if resume_path is not None and start_epoch < t.epochs and (out_dir / "autoslim_state.json").exists():
            _log(dist, f"note: the search results in {out_dir}/ (autoslim_*) belong to the weights before this run; "
                       "slimnet autoslim on the new checkpoint starts its search afresh")

    labels = widths.labels()
    uniq = list(dict.fromkeys(labels))
    show_bar = not quiet and dist.main and sys.stderr.isatty()
    images_per_step = d.batch_size * dist.world
    results: dict = {}
    ckpt_meta = {"path": None, "step": None, "replacing": replacing}

    def kept() -> str:
        """What is intact when the run stops: the truly last good checkpoint (none is ever written
        with non-finite values)."""
        if ckpt_meta["path"]:
            return f"the last good checkpoint {ckpt_meta['path']} (step {ckpt_meta['step']}) is intact"
        if resume_path:
            return f"{resume_path} (the checkpoint this run resumed from) is intact"
        if ckpt_meta["replacing"]:
            return f"no checkpoint was written yet, so the previous run's outputs are put back in {out_dir}/"
        return "no checkpoint was written yet"

    def check_finite(when: str) -> None:
        """Every rank (identical parameters; BN buffers averaged): NaN / inf never reach a checkpoint."""
        bad = nonfinite_entries(raw.state_dict())
        if bad:
            raise TrainingDiverged(
                f"non-finite values in the model {when} ({len(bad)} tensor(s): {', '.join(bad[:3])}"
                f"{', ...' if len(bad) > 3 else ''}); refusing to write a checkpoint; {kept()}. Lower optim.lr, add warm-up "
                "or optim.grad_clip, or check the data.")

    def save_last(epoch: int, batch: int, loss_sums) -> None:
        _average_bn_buffers(raw, dist)
        check_finite(f"at step {step} (epoch {epoch + (1 if batch else 0)}, before writing {last_path.name})")
        if dist.main:
            save_checkpoint(last_path, raw, config=cfg.to_dict(), epoch=epoch, batch=batch, step=step,
                            optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                            scaler=scaler.state_dict(), rng=_rng_state(), best=best, epoch_loss=loss_sums,
                            world_size=dist.world,
                            sampler={"seed": cfg.experiment.seed, "epoch": epoch, "batch": batch})
            if ckpt_meta["replacing"]:    # this run has a good checkpoint: the previous run's outputs go
                _finish_replacing(out_dir, lambda m: _log(dist, m))
        ckpt_meta.update(path=str(last_path), step=step, replacing=False)

    if start_epoch >= t.epochs:
        _log(dist, f"nothing to do: {resume_path} already finished {start_epoch} of {t.epochs} epochs "
                   "(raise train.epochs to continue, or --fresh)")
    raw.train()
    for epoch in range(start_epoch, t.epochs):
        first_batch = start_batch if epoch == start_epoch else 0
        loaders.sampler.set_epoch(epoch, first_batch)
        sums = dict(carried_sums) if (carried_sums and first_batch) else {lab: [0.0, 0] for lab in uniq}
        carried_sums = None
        bar = _Progress(show_bar, steps_per_epoch, f"epoch {epoch + 1}/{t.epochs}", first_batch)
        t0, n_images = time.perf_counter(), 0
        for batch, (images, targets) in enumerate(loaders.train, start=first_batch):
            images = images.to(device, non_blocking=True)
            targets = targets.to(device, non_blocking=True)
            if t.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            torch.manual_seed(mix(cfg.experiment.seed, step, dist.rank))    # dropout etc.
            configs = widths.configs(step)
            losses = train_step(model, raw, configs, images, targets, cfg, scaler, autocast, step, ddp, ghost_params,
                                ramp=distill_ramp(step, steps_per_epoch, t.distill_warmup_epochs))
            values = (_all_reduce_sum(losses, dist) / dist.world).tolist()
            for (label, c), v in zip(configs, values):
                if not math.isfinite(v):
                    optimizer.zero_grad(set_to_none=True)
                    raise TrainingDiverged(
                        f"non-finite loss ({v}) at step {step} (epoch {epoch + 1}, batch {batch + 1}) for width "
                        f"{label!r} ({profile(c.space, c).macs / 1e6:.1f}M MACs); stopped before the optimizer "
                        f"step, {kept()}. Lower optim.lr, add warm-up or optim.grad_clip, or check the data.")
            if cfg.optim.grad_clip is not None:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(raw.parameters(), cfg.optim.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            step += 1
            n_images += images_per_step
            for label, v in zip(labels, values):
                sums[label][0] += v
                sums[label][1] += 1
            bar.update(loss=f"{values[0]:.3f}", lr=f"{lr:.3g}")
            if writer is not None and (step % 10 == 0 or step == 1):
                writer.add_scalar("train/lr", lr, step)
                for label in uniq:
                    vals = [v for lab, v in zip(labels, values) if lab == label]
                    writer.add_scalar(f"train/loss_{label}", sum(vals) / len(vals), step)
            if t.checkpoint_every and step % t.checkpoint_every == 0 and batch + 1 < steps_per_epoch:
                save_last(epoch, batch + 1, sums)
            if t.debug_step_delay:
                time.sleep(t.debug_step_delay)
        bar.close()
        train_time = time.perf_counter() - t0
        ips = n_images / max(train_time, 1e-9)

        _average_bn_buffers(raw, dist)
        last_epoch = epoch + 1 == t.epochs
        results = {}
        if (epoch + 1) % cfg.eval.every == 0 or last_epoch:
            results = _evaluate_all(raw, plan, loaders, cfg, device, dist, autocast)
        improved = bool(results) and results[best_label]["top1"] > best["top1"]
        if improved:
            best = {"top1": results[best_label]["top1"], "epoch": epoch + 1, "label": best_label}
        train_loss = {lab: s / max(n, 1) for lab, (s, n) in sums.items()}
        record = {"epoch": epoch + 1, "step": step, "lr": optimizer.param_groups[0]["lr"], "train_loss": train_loss,
                  "eval": results, "images_per_s": ips, "time": time.perf_counter() - t0}
        diverged = bool(nonfinite_entries(raw.state_dict()))   # every rank: identical after averaging
        if dist.main:
            with open(metrics_path, "a") as f:       # non-finite values as null: valid JSON
                f.write(json.dumps(json_safe(record), allow_nan=False) + "\n")
            writer.add_scalar("train/images_per_s", ips, step)
            for lab, v in train_loss.items():
                writer.add_scalar(f"epoch/train_loss_{lab}", v, epoch + 1)
            for lab, r in results.items():
                for k in ("top1", "top5", "loss"):
                    writer.add_scalar(f"eval/{k}_{lab}", r[k], epoch + 1)
            writer.flush()
            acc = ", ".join(f"{lab} {r['top1']:.2f}%" for lab, r in results.items())
            _log(dist, f"epoch {epoch + 1}/{t.epochs}: loss " +
                 " ".join(f"{lab} {v:.3f}" for lab, v in train_loss.items()) +
                 (f" | top-1 {acc}" if acc else "") + f" | {ips:.0f} img/s, {record['time']:.0f}s")
            if improved and not diverged:
                save_checkpoint(best_path, raw, config=cfg.to_dict(), epoch=epoch + 1, batch=0, step=step,
                                metrics=results, best=best)
        if diverged:
            check_finite(f"after epoch {epoch + 1} (step {step}, with its evaluation's BN statistics)")
        save_last(epoch + 1, 0, None)
    if writer is not None:
        writer.close()
    if dist.main and t.epochs > start_epoch:
        _log(dist, f"done: best top-1 {best['top1']:.2f}% at width {best['label']} (epoch {best['epoch']}); "
                   f"checkpoints in {out_dir}/")
    return {"output_dir": str(out_dir), "last": str(last_path), "best": best, "eval": results, "step": step,
            "epochs": t.epochs, "model": raw}
