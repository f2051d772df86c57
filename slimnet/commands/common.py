"""Argument helpers shared by subcommands."""
from __future__ import annotations

import argparse
import re

_SUFFIX = {"": 1, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}


def parse_count(text: str) -> int:
    """'150M', '1.5G', '150e6', '150000000' -> an integer count."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([kKmMgGtT]?)\s*", str(text))
    if not m:
        raise argparse.ArgumentTypeError(
            f"cannot parse {text!r} as a count: use e.g. 150M, 1.5G, 150e6 or 150000000")
    value = float(m.group(1)) * _SUFFIX[m.group(2).upper()]
    if value <= 0:
        raise argparse.ArgumentTypeError(f"count must be positive, got {text!r}")
    return int(round(value))


def add_debug(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
