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

Modules: ``schema`` (the dataclasses), ``loading`` (YAML, bases, overrides, typed conversion,
output), ``validation`` (the checks; the training mode checks what depends on it, see
:mod:`slimnet.train.modes`).
"""
from __future__ import annotations

from .loading import (
    apply_overrides,
    deep_merge,
    flatten,
    from_dict,
    load_config,
    load_yaml_with_bases,
    parse_override,
    to_yaml,
)
from .schema import (
    Config,
    ConfigError,
    DataConfig,
    EvalConfig,
    ExperimentConfig,
    ModelConfig,
    OptimConfig,
    TrainConfig,
)
from .validation import check_widths, resolve_path, validate

__all__ = ["Config", "ConfigError", "ExperimentConfig", "ModelConfig", "DataConfig", "OptimConfig", "TrainConfig",
           "EvalConfig", "load_config", "from_dict", "load_yaml_with_bases", "deep_merge", "parse_override",
           "apply_overrides", "to_yaml", "flatten", "validate", "resolve_path", "check_widths"]


def __getattr__(name: str):
    """Old names, now held by the training modes (``slimnet.train.modes``): ``MODES`` (the mode
    names) and ``MODE_BN`` (each mode's BN kinds, the default first)."""
    if name in ("MODES", "MODE_BN"):
        from ..train.modes import MODES
        return tuple(MODES) if name == "MODES" else {n: mode.bn_kinds for n, mode in MODES.items()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
