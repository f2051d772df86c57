"""Search options: one dataclass per strategy, whose fields also declare their command-line flags.

A field made with :func:`option` carries its flag, help and argparse settings, so the strategy's
signature (``greedy_slim(..., **options)``), its resume fingerprint and ``slimnet autoslim``'s
flags all come from the same declaration. :class:`ScoringOptions` holds the fields every
strategy shares (how candidates are scored); a strategy's options dataclass derives from it.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from .budgets import SearchError
from .scorer import BN_SCORING, DEFAULT_BN


def option(default: Any, help: str, flag: str | None = None, minimum: int | None = None, cli: bool = True,
           from_cli: Callable[[Any], Any] | None = None, **argparse_kwargs) -> Any:
    """A dataclass field with its command-line flag (default ``--field-name``), help text, the
    smallest count it accepts (checked by ``commands.common.check_counts``), how a parsed value
    becomes the option (``from_cli``, e.g. ``0`` -> ``None`` for "off") and argparse settings
    (``type``, ``choices``...). ``cli=False``: no flag (the command sets it otherwise)."""
    meta = {"help": help, "flag": flag, "minimum": minimum, "cli": cli, "from_cli": from_cli,
            "argparse": argparse_kwargs}
    return dataclasses.field(default=default, metadata=meta)


def flag_of(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def dest_of(f: dataclasses.Field) -> str:
    """The argparse attribute of a field's flag (``--calib-images`` -> ``calib_images``)."""
    return flag_of(f)[2:].replace("-", "_")


def cli_fields(options_types: Iterable[type]) -> list[dataclasses.Field]:
    """The fields with a flag of these options types, each flag once (shared fields, e.g. the
    scoring options every strategy derives, appear once)."""
    seen, out = set(), []
    for cls in options_types:
        for f in dataclasses.fields(cls):
            if f.metadata.get("cli", False) and flag_of(f) not in seen:
                seen.add(flag_of(f))
                out.append(f)
    return out


def add_option_arguments(group, options_types: Iterable[type]) -> None:
    """Add the flags of these options types' fields to an argparse group."""
    for f in cli_fields(options_types):
        shown = "" if f.default is None else f" (default {f.default:g})" if isinstance(f.default, float) \
            else f" (default {f.default})"
        group.add_argument(flag_of(f), dest=dest_of(f), default=f.default, help=f.metadata["help"] + shown,
                           **f.metadata["argparse"])


def option_minimums(options_type: type) -> dict[str, int]:
    """argparse attribute -> the smallest value its flag accepts, for ``check_counts``."""
    return {dest_of(f): f.metadata["minimum"] for f in cli_fields([options_type])
            if f.metadata.get("minimum") is not None}


def options_from_args(options_type: type, args) -> Any:
    """The options the parsed flags give (fields without a flag keep their default, or take the
    argparse attribute of the same name when the command defines one, e.g. ``batch_size``)."""
    values = {}
    for f in dataclasses.fields(options_type):
        dest = dest_of(f) if f.metadata.get("cli", False) else f.name
        if hasattr(args, dest):
            convert = f.metadata.get("from_cli") or (lambda v: v)
            values[f.name] = convert(getattr(args, dest))
    return options_type(**values)


@dataclass(frozen=True)
class ScoringOptions:
    """How candidates are scored (``CandidateScorer``): shared by every strategy."""

    bn: str = option(DEFAULT_BN, "BN while scoring candidates: batch statistics of the scoring chunks, or "
                     "per-candidate statistics (see bench/bench_search.py)", choices=BN_SCORING)
    calib_num: int | None = option(None, "images for per-candidate BN statistics (bn recalibrate: 2000, subset: "
                                   "500)", flag="--calib-images", minimum=2, type=int)
    batch_size: int = option(500, "scoring chunk (and BN batch) size", cli=False)
    reuse_prefix: bool = option(True, "share the outputs of unchanged stages between candidates", cli=False)

    def replace(self, **values):
        """A copy with these fields changed; unknown names raise TypeError naming the valid ones."""
        unknown = set(values) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise TypeError(f"unknown {type(self).__name__} option(s) {sorted(unknown)}; valid: "
                            f"{', '.join(f.name for f in dataclasses.fields(self))}")
        return dataclasses.replace(self, **values)

    def validate(self) -> None:
        if self.bn not in BN_SCORING:
            raise SearchError(f"bn must be one of {BN_SCORING}, got {self.bn!r}")

    def fingerprint(self, calib_images: int) -> dict:
        """The settings a resumed search must share (``calib_images``: the images actually used)."""
        return {"bn": self.bn, "calib_images": calib_images if self.bn != "batch" else 0,
                "batch_size": self.batch_size}

    def scorer_kwargs(self) -> dict:
        return {"bn": self.bn, "calib_num": self.calib_num, "batch_size": self.batch_size,
                "reuse_prefix": self.reuse_prefix}
