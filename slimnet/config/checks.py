"""The checks every part of config validation uses, the training modes' included: each raises
:class:`ConfigError` naming the dotted key. Below validation in the import graph, so the modes
(:mod:`slimnet.train.modes`) use them without importing what asks them."""
from __future__ import annotations

import difflib
import math
import os

from ..errors import ExperimentConfigError as ConfigError
from .schema import Config

__all__ = ["check", "check_widths", "choice", "resolve_path"]


def choice(key: str, value, choices, also: str = "") -> None:
    """``value`` must be one of ``choices`` (the error suggests the closest; ``also`` says what
    else is accepted)."""
    if value not in choices:
        close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(str, choices))}{also}{hint}")


def check(cond: bool, key: str, msg: str) -> None:
    """Raise ``ConfigError('key: msg')`` unless ``cond``."""
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


def check_widths(key: str, widths, exp: Config, source) -> list:
    """Widths within [model.min_width, model.max_width] as floats, channel JSON paths resolved;
    no duplicates."""
    out = []
    lo = exp.model.min_width
    for i, w in enumerate(widths):
        k = f"{key}[{i}]"
        if isinstance(w, str):
            out.append(resolve_path(w, source, k))
            continue
        check(math.isfinite(w) and w > 0, k, f"width must be a positive number, got {w}")
        check(w <= exp.model.max_width + 1e-9, k,
              f"width {w} is above model.max_width={exp.model.max_width}; raise model.max_width or drop it")
        if lo is not None:
            check(w >= lo - 1e-9, k, f"width {w} is below model.min_width={lo}; lower model.min_width or drop it")
        out.append(float(w))
    if len(set(map(str, out))) != len(out):
        raise ConfigError(f"{key}: duplicate entries in {widths}")
    return out
