"""YAML experiment configs: a typed schema (dataclasses), ``_base_`` inheritance, dotted overrides.

An experiment file is a YAML mapping with the sections of :class:`Config`::

    _base_: ../base.yaml            # optional; a path relative to this file (or a list of them)
    experiment: {name: usnet, seed: 0}
    model: {name: mobilenet_v2, max_width: 1.0, min_width: 0.35}
    train: {mode: universal, epochs: 250}

``load_config(path, ["optim.lr=0.1", "data.batch_size=128"])`` merges the bases (depth first, the
including file wins), applies the overrides (values parsed as YAML scalars: ``0.1`` is a float,
``[1.0, 0.5]`` a list, ``null`` None), then converts to dataclasses and validates. Unknown keys,
wrong types and bad values raise :class:`ConfigError` naming the dotted key (with close matches
for typos) before any data is read or any model is built.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import os
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Union

import yaml

MODES = ("switchable", "universal", "autoslim", "fixed")
# The BN kinds each mode may use (first = default). S-Nets use private BN per width ("shared" is
# the naive-BN ablation); universal / AutoSlim supernets share BN affine parameters and calibrate
# statistics after training; a fixed child is a plain network with ordinary BN (no choice).
MODE_BN = {"switchable": ("switchable", "shared"), "universal": ("universal",), "autoslim": ("universal",),
           "fixed": ()}


class ConfigError(ValueError):
    """An experiment config that is malformed, mistyped or inconsistent."""


# --------------------------------------------------------------------------------------------
# Schema
# --------------------------------------------------------------------------------------------
@dataclass
class ExperimentConfig:
    name: str = "default"
    output_dir: Optional[str] = None      # default: checkpoints/<name>
    seed: int = 0
    device: str = "auto"                  # auto | cpu | cuda | cuda:N (DDP: cuda:LOCAL_RANK)


@dataclass
class ModelConfig:
    name: str = "mobilenet_v2"
    max_width: float = 1.0
    min_width: Optional[float] = None     # default: the model's (0.25, or the smallest trained width)
    bn: Optional[str] = None              # default: from train.mode (see MODE_BN)
    channels: Optional[str] = None        # channel JSON of a fixed child (train.mode: fixed)
    kwargs: dict = field(default_factory=dict)   # extra build() arguments, e.g. {dropout: 0.0}


@dataclass
class DataConfig:
    name: str = "fashion_mnist"
    root: Optional[str] = None
    download: bool = False
    input_size: Optional[int] = None      # default: the dataset's native size
    heldout_size: int = 0                 # images carved from the training set (seeded)
    heldout_seed: int = 0
    exclude_heldout: bool = False         # train without the held-out images (AutoSlim supernets)
    augment: str = "default"              # default | mobile | none
    subset: Optional[int] = None          # train on the first N images (seeded) only
    test_subset: Optional[int] = None
    batch_size: int = 128                 # per process and per step (split into train.accum_steps)
    eval_batch_size: Optional[int] = None  # default: batch_size
    workers: int = 2                      # per-sample loading processes (image folders)
    in_memory: Optional[bool] = None      # pixels on the device, batch augmentation; default: when
                                          # the dataset is one tensor (fashion_mnist, cifar10/100)


@dataclass
class OptimConfig:
    name: str = "sgd"                     # sgd | adamw
    lr: float = 0.1                       # peak learning rate (after warm-up)
    momentum: float = 0.9
    nesterov: bool = True
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    weight_decay: float = 1e-4            # on conv / linear weights only, unless the flags below
    decay_bn: bool = False
    decay_bias: bool = False
    decay_depthwise: bool = False
    schedule: str = "cosine"              # cosine | linear | step | exponential | constant (per iteration)
    warmup_epochs: float = 0.0
    warmup_start: float = 0.0             # lr factor at the first warm-up step
    milestones: list[float] = field(default_factory=list)   # step schedule, in epochs
    gamma: float = 0.1                    # step: factor at each milestone; exponential: factor per epoch
    min_lr: float = 0.0                   # floor of cosine / linear decay
    grad_clip: Optional[float] = None     # max global grad norm


@dataclass
class TrainConfig:
    mode: str = "autoslim"                # switchable | universal | autoslim | fixed
    epochs: int = 1
    widths: list[Union[float, str]] = field(default_factory=list)  # switchable/fixed: widths or channel JSONs
    num_random: int = 2                   # universal/autoslim: random widths per step (sandwich: + max + min)
    distill: str = "soft_ce"              # soft_ce | kl | alpha | none (all widths on hard labels)
    temperature: float = 1.0
    distill_weight: float = 1.0
    hard_label_weight: float = 0.0        # extra hard-label term for the distilled widths
    distill_warmup_epochs: float = 0.0    # students blend linearly from the hard-label loss to
                                          # distillation over this many epochs (0: the papers')
    label_smoothing: float = 0.0          # on the hard-label losses
    alpha_min: float = -1.0               # alpha-divergence options (distill: alpha)
    alpha_max: float = 1.0
    alpha_clip: float = 5.0
    accum_steps: int = 1                  # micro-batches per step (every k-th sample each)
    amp: str = "none"                     # none | bf16 | fp16 (fp16: CUDA only, with GradScaler)
    channels_last: bool = False
    compile: bool = False                 # torch.compile (fixed and switchable modes only)
    checkpoint_every: int = 0             # also save last.pt every N steps (0: epoch ends only)
    debug_nan_at_step: Optional[int] = None   # test hook: make the loss NaN at this step
    debug_step_delay: float = 0.0             # test hook: sleep this many seconds after each step


@dataclass
class EvalConfig:
    widths: Optional[list[Union[float, str]]] = None   # default: the trained widths / 4 widths max..min
    split: str = "test"                   # test | heldout
    calibrate: Optional[bool] = None      # BN calibration before eval; default: universal/autoslim
    calib_images: int = 2000
    every: int = 1                        # evaluate every N epochs (and always after the last)
    best_width: Union[str, float] = "max"  # which width picks best.pt: max | min | a width | a label
    max_images: Optional[int] = None


@dataclass
class Config:
    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def output_dir(self) -> str:
        return self.experiment.output_dir or os.path.join("checkpoints", self.experiment.name)


# --------------------------------------------------------------------------------------------
# Reading YAML, bases and overrides
# --------------------------------------------------------------------------------------------
def _read_yaml(path: str) -> dict:
    if os.path.isdir(path):
        raise ConfigError(f"config file {path} is a folder; give an experiment YAML file "
                          "(e.g. configs/fashion_mnist/quickstart.yaml)")
    if not os.path.isfile(path):
        what = "is not a regular file" if os.path.exists(path) else "does not exist"
        raise ConfigError(f"config file {path} {what}; give an experiment YAML file")
    with open(path) as f:
        try:
            data = yaml.safe_load(f)
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: invalid YAML ({' '.join(str(e).split())})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: an experiment config must be a YAML mapping, got {type(data).__name__}")
    return data


def deep_merge(base: dict, over: dict) -> dict:
    """``over`` on top of ``base``: mappings merge key by key, anything else replaces."""
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "kwargs":
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def load_yaml_with_bases(path: str, _seen: tuple = ()) -> dict:
    """The raw merged mapping of ``path`` and its ``_base_`` files (paths relative to the includer)."""
    path = os.path.abspath(path)
    if path in _seen:
        raise ConfigError(f"_base_ cycle: {' -> '.join(_seen + (path,))}")
    data = _read_yaml(path)
    bases = data.pop("_base_", None)
    if bases is None:
        return data
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{path}: _base_ must be a path or a list of paths")
    merged: dict = {}
    for b in bases:
        bpath = os.path.join(os.path.dirname(path), b)
        if not os.path.isfile(bpath):
            raise ConfigError(f"{path}: _base_ file {b!r} not found (looked at {bpath})")
        merged = deep_merge(merged, load_yaml_with_bases(bpath, _seen + (path,)))
    return deep_merge(merged, data)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``'optim.lr=0.1'`` -> (['optim', 'lr'], 0.1); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value (e.g. optim.lr=0.1)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r}: bad key {key!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({e})") from None
    return key.split("."), value


def apply_overrides(data: dict, overrides) -> dict:
    data = deep_merge({}, data)
    for text in overrides or ():
        parts, value = parse_override(text)
        node = data
        for p in parts[:-1]:
            nxt = node.get(p)
            if nxt is None:
                nxt = node[p] = {}
            elif not isinstance(nxt, dict):
                raise ConfigError(f"override {text!r}: {p!r} is not a section")
            else:
                nxt = node[p] = dict(nxt)
            node = nxt
        node[parts[-1]] = value
    return data


# --------------------------------------------------------------------------------------------
# Typed conversion
# --------------------------------------------------------------------------------------------
def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is Union:
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if origin is Literal:
        return " | ".join(map(repr, typing.get_args(tp)))
    return {type(None): "null"}.get(tp, getattr(tp, "__name__", str(tp)))


_PLAIN = {dict: "a mapping", bool: "true or false", str: "a string"}   # schema types checked by isinstance alone


def _convert(value, tp, key: str):
    """Check ``value`` against the annotation ``tp``; ints are accepted for floats."""
    origin = typing.get_origin(tp)
    if origin is Union:
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(value, a, key)
            except ConfigError as e:
                errors.append(e)
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
        (inner,) = typing.get_args(tp)
        return [_convert(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp in _PLAIN:
        if not isinstance(value, tp):
            raise ConfigError(f"{key}: expected {_PLAIN[tp]}, got {value!r}")
        return dict(value) if tp is dict else value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            # YAML 1.1 reads '1e-4' (no dot) as a string: accept it as the number it spells
            if isinstance(value, str):
                try:
                    return float(value)
                except ValueError:
                    pass
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    raise TypeError(f"unsupported schema type {tp} for {key}")  # pragma: no cover


def _unknown(key: str, valid) -> ConfigError:
    leaf = key.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(leaf, list(valid), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else f"; valid keys: {', '.join(valid)}"
    return ConfigError(f"unknown config key {key!r}{hint}")


def _build(cls, data, prefix: str):
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for k, v in data.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if k not in names:
            raise _unknown(key, names)
        tp = hints[k]
        if dataclasses.is_dataclass(tp):
            kwargs[k] = _build(tp, v, key)
        else:
            kwargs[k] = _convert(v, tp, key)
    return cls(**kwargs)


def from_dict(data: dict, source: str | None = None) -> Config:
    """Typed, validated :class:`Config` from a plain mapping (e.g. a checkpoint's ``config``)."""
    cfg = _build(Config, data, "")
    validate(cfg, source)
    return cfg


def load_config(path: str | None = None, overrides=None, data: dict | None = None) -> Config:
    """Load ``path`` (with its bases), apply dotted ``overrides``, validate, resolve file paths."""
    raw = load_yaml_with_bases(path) if path is not None else {}
    if data:
        raw = deep_merge(raw, data)
    raw = apply_overrides(raw, overrides)
    return from_dict(raw, source=path)


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------
def _choice(key: str, value, choices) -> None:
    if value not in choices:
        close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(str, choices))}{hint}")


def _check(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{key}: {msg}")


def resolve_path(path: str, source: str | None, key: str) -> str:
    """A file named in a config: relative to the working directory, else to the config file."""
    p = os.path.expanduser(path)
    candidates = [p]
    if source is not None and not os.path.isabs(p):
        candidates.append(os.path.join(os.path.dirname(os.path.abspath(source)), p))
    for c in candidates:
        if os.path.isfile(c):
            return os.path.abspath(c)
    folders = [c for c in candidates if os.path.isdir(c)]
    if folders:
        raise ConfigError(f"{key}: {os.path.abspath(folders[0])} is a folder; give a channel JSON file "
                          "(e.g. autoslim_150M.json)")
    raise ConfigError(f"{key}: file {path!r} not found (looked at {', '.join(map(os.path.abspath, candidates))})")


def _check_widths(key: str, widths, cfg: Config, source) -> list:
    out = []
    lo = cfg.model.min_width
    for i, w in enumerate(widths):
        k = f"{key}[{i}]"
        if isinstance(w, str):
            out.append(resolve_path(w, source, k))
            continue
        _check(math.isfinite(w) and w > 0, k, f"width must be a positive number, got {w}")
        _check(w <= cfg.model.max_width + 1e-9, k,
               f"width {w} is above model.max_width={cfg.model.max_width}; raise model.max_width or drop it")
        if lo is not None:
            _check(w >= lo - 1e-9, k, f"width {w} is below model.min_width={lo}; lower model.min_width or drop it")
        out.append(float(w))
    if len(set(map(str, out))) != len(out):
        raise ConfigError(f"{key}: duplicate entries in {widths}")
    return out


def validate(cfg: Config, source: str | None = None) -> None:
    """Raise :class:`ConfigError` naming the key of the first bad value."""
    from .data import AUGMENTS, canonical_name
    from .losses import DISTILL_KINDS
    from .models import MODELS

    e, m, d, o, t, ev = cfg.experiment, cfg.model, cfg.data, cfg.optim, cfg.train, cfg.eval
    _check(bool(e.name) and "/" not in e.name, "experiment.name", f"must be a non-empty name without '/', got {e.name!r}")
    _choice("model.name", m.name, sorted(MODELS))
    _check(math.isfinite(m.max_width) and m.max_width > 0, "model.max_width", f"must be positive, got {m.max_width}")
    if m.min_width is not None:
        _check(0 < m.min_width <= m.max_width, "model.min_width",
               f"must be in (0, model.max_width={m.max_width}], got {m.min_width}")
    for k in ("num_classes", "in_channels", "input_size", "max_width", "min_width", "bn", "switchable", "channels"):
        _check(k not in m.kwargs, f"model.kwargs.{k}", "set by the engine (from data / model / train); remove it")
    try:
        d.name = canonical_name(d.name)
    except ValueError as err:
        raise ConfigError(f"data.name: {err}") from None
    _choice("data.augment", d.augment, AUGMENTS)
    _check(d.batch_size >= 1, "data.batch_size", f"must be >= 1, got {d.batch_size}")
    _check(d.eval_batch_size is None or d.eval_batch_size >= 1, "data.eval_batch_size", "must be >= 1")
    _check(d.workers >= 0, "data.workers", f"must be >= 0, got {d.workers}")
    _check(d.heldout_size >= 0, "data.heldout_size", f"must be >= 0, got {d.heldout_size}")
    _check(d.input_size is None or d.input_size >= 8, "data.input_size", f"must be >= 8, got {d.input_size}")
    for k in ("subset", "test_subset"):
        v = getattr(d, k)
        _check(v is None or v >= 1, f"data.{k}", f"must be a positive number of images or null, got {v}")
    _check(not d.exclude_heldout or d.heldout_size > 0, "data.exclude_heldout", "needs data.heldout_size > 0")
    if d.root is not None:
        d.root = os.path.abspath(os.path.expanduser(d.root))

    _check(t.epochs >= 1, "train.epochs", f"must be >= 1, got {t.epochs}")   # before what is relative to it
    _choice("optim.name", o.name, ("sgd", "adamw"))
    _check(math.isfinite(o.lr) and o.lr > 0, "optim.lr", f"must be positive, got {o.lr}")
    _check(0 <= o.momentum < 1, "optim.momentum", f"must be in [0, 1), got {o.momentum}")
    _check(not (o.nesterov and o.name == "sgd" and o.momentum == 0), "optim.nesterov", "needs optim.momentum > 0")
    _check(len(o.betas) == 2 and all(0 <= b < 1 for b in o.betas), "optim.betas", f"need two values in [0, 1), got {o.betas}")
    _check(o.weight_decay >= 0, "optim.weight_decay", f"must be >= 0, got {o.weight_decay}")
    _choice("optim.schedule", o.schedule, ("cosine", "linear", "step", "exponential", "constant"))
    _check(0 <= o.warmup_epochs <= t.epochs, "optim.warmup_epochs", f"must be in [0, train.epochs={t.epochs}], got {o.warmup_epochs}")
    _check(0 <= o.warmup_start <= 1, "optim.warmup_start", f"must be in [0, 1], got {o.warmup_start}")
    _check(0 <= o.min_lr <= o.lr, "optim.min_lr", f"must be in [0, optim.lr], got {o.min_lr}")
    _check(0 < o.gamma <= 1, "optim.gamma", f"must be in (0, 1], got {o.gamma}")
    _check(list(o.milestones) == sorted(o.milestones) and all(x > 0 for x in o.milestones), "optim.milestones",
           f"must be increasing positive epochs, got {o.milestones}")
    _check(o.schedule != "step" or bool(o.milestones), "optim.milestones", "schedule 'step' needs milestones")
    _check(o.grad_clip is None or o.grad_clip > 0, "optim.grad_clip", "must be positive or null")

    _choice("train.mode", t.mode, MODES)
    _check(t.num_random >= 0, "train.num_random", f"must be >= 0, got {t.num_random}")
    _choice("train.distill", t.distill, DISTILL_KINDS + ("none",))
    _check(t.temperature > 0, "train.temperature", f"must be > 0, got {t.temperature}")
    _check(t.distill_weight >= 0 and t.hard_label_weight >= 0, "train.distill_weight",
           "distill_weight and hard_label_weight must be >= 0")
    _check(t.distill_warmup_epochs >= 0, "train.distill_warmup_epochs",
           f"must be >= 0 (0: distill from the first step), got {t.distill_warmup_epochs}")
    _check(0 <= t.label_smoothing < 1, "train.label_smoothing", f"must be in [0, 1), got {t.label_smoothing}")
    _check(t.alpha_min <= t.alpha_max, "train.alpha_min", "must be <= train.alpha_max")
    _check(t.alpha_clip > 1, "train.alpha_clip", "must be > 1")
    _check(t.accum_steps >= 1, "train.accum_steps", f"must be >= 1, got {t.accum_steps}")
    _check(d.batch_size >= t.accum_steps, "data.batch_size",
           f"{d.batch_size} cannot be split into train.accum_steps={t.accum_steps} micro-batches")
    _choice("train.amp", t.amp, ("none", "bf16", "fp16"))
    _check(t.checkpoint_every >= 0, "train.checkpoint_every", "must be >= 0")
    _check(t.debug_step_delay >= 0, "train.debug_step_delay", "must be >= 0")

    # mode <-> BN kind and widths
    allowed = MODE_BN[t.mode]
    if t.mode == "fixed":
        _check(m.bn is None, "model.bn", "train.mode 'fixed' trains a plain child with ordinary BatchNorm; "
               "remove model.bn")
        _check((m.channels is None) != (len(t.widths) == 0) and len(t.widths) <= 1, "train.widths",
               "train.mode 'fixed' needs exactly one of model.channels (a channel JSON) or one train.widths entry")
    else:
        _check(m.channels is None, "model.channels", f"a channel JSON is for train.mode 'fixed' (this is {t.mode!r}); "
               "to train several searched configs jointly list them in train.widths with mode 'switchable'")
        if m.bn is not None and m.bn not in allowed:
            raise ConfigError(f"model.bn: {m.bn!r} conflicts with train.mode {t.mode!r}, which uses "
                              f"{' or '.join(map(repr, allowed))} BN; remove model.bn or change the mode")
    if t.mode == "switchable":
        _check(len(t.widths) >= 1, "train.widths", "switchable mode needs the list of widths / channel JSONs")
    if t.mode in ("universal", "autoslim"):
        _check(not t.widths, "train.widths", f"{t.mode} mode samples widths in [model.min_width, model.max_width] "
               "each step; remove train.widths (use eval.widths for evaluation)")
    if m.channels is not None:
        m.channels = resolve_path(m.channels, source, "model.channels")
    t.widths = _check_widths("train.widths", t.widths, cfg, source)

    _choice("eval.split", ev.split, ("test", "heldout"))
    _check(ev.split != "heldout" or d.heldout_size > 0, "eval.split", "'heldout' needs data.heldout_size > 0")
    _check(ev.calib_images >= 2, "eval.calib_images", f"must be >= 2, got {ev.calib_images}")
    _check(ev.every >= 1, "eval.every", f"must be >= 1, got {ev.every}")
    _check(ev.max_images is None or ev.max_images >= 1, "eval.max_images", "must be positive or null")
    if ev.widths is not None:
        _check(t.mode != "fixed", "eval.widths", "a fixed child has exactly one config; remove eval.widths")
        _check(len(ev.widths) >= 1, "eval.widths", "must not be empty (null for the default)")
        if t.mode == "switchable" and m.bn != "shared":
            trained = {str(w) for w in t.widths}
            extra = [w for w in _check_widths("eval.widths", ev.widths, cfg, source) if str(w) not in trained]
            _check(not extra, "eval.widths", f"{extra} are not among train.widths; switchable BN only has "
                   "statistics for the widths it was trained with")
        ev.widths = _check_widths("eval.widths", ev.widths, cfg, source)
    if isinstance(ev.best_width, str):
        _check(bool(ev.best_width), "eval.best_width", "must be max, min, a width or a label")


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------
def to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=None)


def flatten(data: dict, prefix: str = "") -> dict:
    """{'a': {'b': 1}} -> {'a.b': 1} (``model.kwargs`` stays one value)."""
    out = {}
    for k, v in data.items():
        key = f"{prefix}.{k}" if prefix else k
        if isinstance(v, dict) and key != "model.kwargs":
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out
