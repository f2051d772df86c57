"""Reading experiment configs: YAML files with ``_base_`` inheritance, dotted overrides, typed
conversion to the schema's dataclasses (then :func:`~slimnet.config.validation.validate`), and
writing them back."""
from __future__ import annotations

import dataclasses
import difflib
import os
import typing
from typing import Any, Literal, Union

import yaml

from .schema import Config, ConfigError
from .validation import validate

__all__ = ["load_config", "from_dict", "load_yaml_with_bases", "deep_merge", "parse_override", "apply_overrides",
           "to_yaml", "flatten"]


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
