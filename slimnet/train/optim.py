"""Optimizer and learning-rate schedule: parameter groups (which weights decay), SGD / AdamW, and
the per-iteration schedule factor."""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from ..nn import parameters_with_decay_roles

__all__ = ["param_groups", "make_optimizer", "make_scheduler", "lr_factor"]


def param_groups(net: nn.Module, optim_cfg) -> list[dict]:
    """Two groups: weight-decayed and not. Each layer names its parameters' roles
    (``slimnet.nn.decay_roles_of``): conv / linear weights always decay; norm parameters, biases and
    depthwise weights decay when ``optim.decay_bn`` / ``decay_bias`` / ``decay_depthwise`` say so."""
    decayed = {"weight": True, "norm": optim_cfg.decay_bn, "bias": optim_cfg.decay_bias,
               "depthwise": optim_cfg.decay_depthwise}
    decay, no_decay = [], []
    for p, role in parameters_with_decay_roles(net):
        if p.requires_grad:
            (decay if decayed[role] else no_decay).append(p)
    return [{"params": decay, "weight_decay": optim_cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(net: nn.Module, o) -> torch.optim.Optimizer:
    """SGD or AdamW (``optim.name``) over :func:`param_groups`."""
    groups = param_groups(net, o)
    if o.name == "sgd":
        return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov)
    return torch.optim.AdamW(groups, lr=o.lr, betas=tuple(o.betas), eps=o.eps)


def make_scheduler(optimizer: torch.optim.Optimizer, o, epochs: int, steps_per_epoch: int):
    """The schedule of :func:`lr_factor`, stepped once per optimizer step."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, o, epochs, steps_per_epoch))


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
