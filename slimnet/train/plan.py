"""What a run trains and evaluates: labelled channel configs (largest first), built by the
training mode (:mod:`slimnet.train.modes`), and the helpers modes build them with."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ExperimentConfigError as ConfigError
from ..models import build
from ..profile import profile

__all__ = ["TrainPlan", "entry_label", "model_arch", "prototype", "resolve_entries", "spread_configs",
           "best_label"]


@dataclass
class TrainPlan:
    """What the engine trains and evaluates: labelled configs, largest first.

    ``mode``: the :class:`~slimnet.train.modes.TrainingMode` that made the plan;
    ``train_configs``: the configs every step trains (empty when the mode samples them);
    ``eval_configs``: the configs evaluated after an epoch; ``calibrate``: whether BN statistics
    are calibrated before each evaluation."""
    mode: Any
    train_configs: list = field(default_factory=list)   # [(label, ChannelConfig)]
    eval_configs: list = field(default_factory=list)    # [(label, ChannelConfig)]
    calibrate: bool = False


def entry_label(entry) -> str:
    """A width's label is its value ('0.5'); a channel JSON's, its file name without suffix."""
    return str(float(entry)) if isinstance(entry, (int, float)) else Path(entry).stem


def model_arch(exp, num_classes: int, in_channels: int, input_size: int) -> dict:
    """The ``build()`` arguments of the experiment's model (before the mode adds its own)."""
    m = exp.model
    return dict(num_classes=num_classes, in_channels=in_channels, input_size=input_size,
                max_width=m.max_width, min_width=m.min_width, **m.kwargs)


def prototype(name: str, arch: dict):
    """The model on the meta device (no memory): its channel space, before the real build."""
    with torch.device("meta"):
        return build(name, **arch)


def resolve_entries(entries, space, key: str, check_min: bool = False) -> list:
    """[(label, ChannelConfig)] of widths / channel JSONs in ``space``; a bad entry fails naming
    ``key``. ``check_min``: refuse configs below the space's trained minimum (sampled supernets)."""
    out = []
    for e in entries:
        try:
            c = space.uniform(e) if isinstance(e, float) else space.load(e, check_min=check_min)
        except ValueError as err:
            raise ConfigError(f"{key}: {entry_label(e)}: {err}") from None
        out.append((entry_label(e), c))
    return out


def spread_configs(space, count: int = 4) -> list:
    """``count`` uniform widths from max to min, each distinct config once."""
    hi, lo = space.max_width, space.min_width
    widths = sorted({round(float(w), 3) for w in np.linspace(hi, lo, count)}, reverse=True)
    out = []
    for w in widths:   # rounding can map nearby widths to one config: keep each config once
        c = space.uniform(w)
        if all(c != other for _, other in out):
            out.append((entry_label(w), c))
    return out


def best_label(plan: TrainPlan, exp) -> str:
    """The label of the evaluated config whose top-1 picks best.pt (``eval.best_width``)."""
    want = exp.eval.best_width
    entries = plan.eval_configs
    if want in ("max", "min"):
        macs = [(profile(c.space, c).macs, lab) for lab, c in entries]
        return (max if want == "max" else min)(macs)[1]
    label = entry_label(want) if isinstance(want, float) else str(want)
    if isinstance(want, str):
        with contextlib.suppress(ValueError):
            label = entry_label(float(want))
    labels = [lab for lab, _ in entries]
    if label not in labels:
        raise ConfigError(f"eval.best_width: {want!r} is not one of the evaluated widths {labels} (or max / min)")
    return label
