"""Validation of an experiment config, section by section: the first bad value raises
:class:`ConfigError` naming its dotted key. What depends on the training mode (BN kind, widths,
channel JSONs) the mode checks itself (:mod:`slimnet.train.modes`)."""
from __future__ import annotations

import math
import os

from .checks import check, check_widths, choice, resolve_path
from .schema import Config, ConfigError

__all__ = ["validate", "check", "choice", "check_widths", "resolve_path"]


def validate(exp: Config, source: str | None = None) -> None:
    """Raise :class:`ConfigError` naming the key of the first bad value; resolve file paths."""
    _validate_experiment_and_model(exp)
    _validate_data(exp)
    check(exp.train.epochs >= 1, "train.epochs", f"must be >= 1, got {exp.train.epochs}")   # before what is relative to it
    _validate_optim(exp)
    mode = _validate_train(exp)
    mode.validate(exp, source)           # model.bn, model.channels, train.widths for this mode
    _validate_reorder(exp)
    m, t = exp.model, exp.train
    if m.channels is not None:
        m.channels = resolve_path(m.channels, source, "model.channels")
    t.widths = check_widths("train.widths", t.widths, exp, source)
    _validate_eval(exp, mode, source)


def _validate_experiment_and_model(exp: Config) -> None:
    from ..models import MODELS

    e, m = exp.experiment, exp.model
    check(bool(e.name) and "/" not in e.name, "experiment.name", f"must be a non-empty name without '/', got {e.name!r}")
    traced = isinstance(m.name, str) and ":" in m.name
    if not traced:
        choice("model.name", m.name, sorted(MODELS),
               also=", nor a model to trace ('torchvision:NAME', 'timm:NAME' or 'package.module:function')")
    check(math.isfinite(m.max_width) and m.max_width > 0, "model.max_width", f"must be positive, got {m.max_width}")
    check(not traced or m.max_width >= 1.0, "model.max_width",
          f"a traced model ({m.name}) is its own widths at 1.0; a supernet of it can be wider, not narrower: "
          f"use >= 1.0, got {m.max_width}")
    if m.min_width is not None:
        check(0 < m.min_width <= m.max_width, "model.min_width",
              f"must be in (0, model.max_width={m.max_width}], got {m.min_width}")
    for k in ("num_classes", "in_channels", "input_size", "max_width", "min_width", "bn", "switchable", "channels"):
        check(k not in m.kwargs, f"model.kwargs.{k}", "set by the engine (from data / model / train); remove it")


def _validate_reorder(exp: Config) -> None:
    from ..reorder import CRITERIA

    m = exp.model
    if m.reorder is None:
        return
    choice("model.reorder", m.reorder, CRITERIA)
    check(exp.train.mode != "fixed", "model.reorder", "sorts a supernet's channels; a fixed child has no narrower widths")
    check(m.bn != "switchable" and not (exp.train.mode == "switchable" and m.bn is None), "model.reorder",
          "switchable BN keeps a private BN of each width's leading channels: reorder with universal or shared BN")


def _validate_data(exp: Config) -> None:
    from ..data import AUGMENTS, canonical_name

    d = exp.data
    try:
        d.name = canonical_name(d.name)
    except ValueError as err:
        raise ConfigError(f"data.name: {err}") from None
    choice("data.augment", d.augment, AUGMENTS)
    check(d.batch_size >= 1, "data.batch_size", f"must be >= 1, got {d.batch_size}")
    check(d.eval_batch_size is None or d.eval_batch_size >= 1, "data.eval_batch_size", "must be >= 1")
    check(d.workers >= 0, "data.workers", f"must be >= 0, got {d.workers}")
    check(d.heldout_size >= 0, "data.heldout_size", f"must be >= 0, got {d.heldout_size}")
    check(d.input_size is None or d.input_size >= 8, "data.input_size", f"must be >= 8, got {d.input_size}")
    for k in ("subset", "test_subset"):
        v = getattr(d, k)
        check(v is None or v >= 1, f"data.{k}", f"must be a positive number of images or null, got {v}")
    check(not d.exclude_heldout or d.heldout_size > 0, "data.exclude_heldout", "needs data.heldout_size > 0")
    if d.root is not None:
        d.root = os.path.abspath(os.path.expanduser(d.root))


def _validate_optim(exp: Config) -> None:
    o, t = exp.optim, exp.train
    choice("optim.name", o.name, ("sgd", "adamw"))
    check(math.isfinite(o.lr) and o.lr > 0, "optim.lr", f"must be positive, got {o.lr}")
    check(0 <= o.momentum < 1, "optim.momentum", f"must be in [0, 1), got {o.momentum}")
    check(not (o.nesterov and o.name == "sgd" and o.momentum == 0), "optim.nesterov", "needs optim.momentum > 0")
    check(len(o.betas) == 2 and all(0 <= b < 1 for b in o.betas), "optim.betas", f"need two values in [0, 1), got {o.betas}")
    check(o.weight_decay >= 0, "optim.weight_decay", f"must be >= 0, got {o.weight_decay}")
    choice("optim.schedule", o.schedule, ("cosine", "linear", "step", "exponential", "constant"))
    check(0 <= o.warmup_epochs <= t.epochs, "optim.warmup_epochs", f"must be in [0, train.epochs={t.epochs}], got {o.warmup_epochs}")
    check(0 <= o.warmup_start <= 1, "optim.warmup_start", f"must be in [0, 1], got {o.warmup_start}")
    check(0 <= o.min_lr <= o.lr, "optim.min_lr", f"must be in [0, optim.lr], got {o.min_lr}")
    check(0 < o.gamma <= 1, "optim.gamma", f"must be in (0, 1], got {o.gamma}")
    check(list(o.milestones) == sorted(o.milestones) and all(x > 0 for x in o.milestones), "optim.milestones",
          f"must be increasing positive epochs, got {o.milestones}")
    check(o.schedule != "step" or bool(o.milestones), "optim.milestones", "schedule 'step' needs milestones")
    check(o.grad_clip is None or o.grad_clip > 0, "optim.grad_clip", "must be positive or null")


def _validate_train(exp: Config):
    """The generic ``train`` checks; returns the training mode."""
    from ..losses import DISTILL_KINDS
    from ..train.modes import get_mode

    d, t = exp.data, exp.train
    mode = get_mode(t.mode)
    check(t.num_random >= 0, "train.num_random", f"must be >= 0, got {t.num_random}")
    choice("train.distill", t.distill, DISTILL_KINDS + ("none",))
    check(t.temperature > 0, "train.temperature", f"must be > 0, got {t.temperature}")
    check(t.distill_weight >= 0 and t.hard_label_weight >= 0, "train.distill_weight",
          "distill_weight and hard_label_weight must be >= 0")
    check(t.distill_warmup_epochs >= 0, "train.distill_warmup_epochs",
          f"must be >= 0 (0: distill from the first step), got {t.distill_warmup_epochs}")
    check(0 <= t.label_smoothing < 1, "train.label_smoothing", f"must be in [0, 1), got {t.label_smoothing}")
    check(t.alpha_min <= t.alpha_max, "train.alpha_min", "must be <= train.alpha_max")
    check(t.alpha_clip > 1, "train.alpha_clip", "must be > 1")
    check(t.accum_steps >= 1, "train.accum_steps", f"must be >= 1, got {t.accum_steps}")
    check(d.batch_size >= t.accum_steps, "data.batch_size",
          f"{d.batch_size} cannot be split into train.accum_steps={t.accum_steps} micro-batches")
    choice("train.amp", t.amp, ("none", "bf16", "fp16"))
    check(t.checkpoint_every >= 0, "train.checkpoint_every", "must be >= 0")
    check(t.debug_step_delay >= 0, "train.debug_step_delay", "must be >= 0")
    return mode


def _validate_eval(exp: Config, mode, source) -> None:
    d, ev = exp.data, exp.eval
    choice("eval.split", ev.split, ("test", "heldout"))
    check(ev.split != "heldout" or d.heldout_size > 0, "eval.split", "'heldout' needs data.heldout_size > 0")
    check(ev.calib_images >= 2, "eval.calib_images", f"must be >= 2, got {ev.calib_images}")
    check(ev.every >= 1, "eval.every", f"must be >= 1, got {ev.every}")
    check(ev.max_images is None or ev.max_images >= 1, "eval.max_images", "must be positive or null")
    if ev.widths is not None:
        mode.validate_eval_widths(exp, source)
        check(len(ev.widths) >= 1, "eval.widths", "must not be empty (null for the default)")
        ev.widths = check_widths("eval.widths", ev.widths, exp, source)
    if isinstance(ev.best_width, str):
        check(bool(ev.best_width), "eval.best_width", "must be max, min, a width or a label")
