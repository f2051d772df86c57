"""Channel spaces and channel configs: the one object everything downstream takes.

A model declares its *channel groups* explicitly: channels that must stay equal (outputs summed by
a residual add, a depthwise conv and the layer feeding it) share one group. A ``ChannelConfig``
maps every group to an active channel count. A uniform width multiplier is only one way to make
a config (``space.uniform(w)``); random per-layer samples, AutoSlim search results and user JSON
files are others. Configs are immutable, hashable and compared by value, never by float width.
"""
from __future__ import annotations

import difflib
import hashlib
import json
import math
import os
import random as _random
from dataclasses import dataclass
from typing import Callable, Iterator, Mapping

from .errors import ChannelConfigError
from .utils import atomic_write_text


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``value`` to the nearest multiple of ``divisor``, never more than 10% below it.

    This is the standard MobileNet width rule (also torchvision's), so a uniform child of a
    supernet has exactly the channels of the standard model at that width multiplier.
    """
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


@dataclass(frozen=True)
class ChannelGroup:
    """One group of tied channels.

    ``base`` is the channel count at width 1.0. ``expand_of``/``expand_ratio`` say that at a
    uniform width the group has exactly ``expand_ratio`` times the channels of another group (the
    hidden width of an inverted residual, as torchvision computes it). ``keep_base`` keeps the
    group at ``base`` for widths <= 1 (MobileNet v2's last 1280-channel conv). ``multiple_of`` is
    a hard constraint every config must meet (ShuffleNet: its group count), unlike ``divisor``,
    which only guides rounding. ``reorderable`` is False when something outside the slimmable
    layers depends on the channels' order (ShuffleNet's channel shuffle), so
    ``slimnet.reorder_channels`` leaves the group as it is.
    """

    name: str
    base: int
    max: int
    min: int
    divisor: int = 8
    expand_of: str | None = None
    expand_ratio: int = 1
    keep_base: bool = False
    multiple_of: int = 1
    reorderable: bool = True


ConfigError = ChannelConfigError   # the name this module (and slimnet.ConfigError) has always used


def _closest(name: str, names) -> str:
    close = difflib.get_close_matches(name, list(names), n=3)
    return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""


class ChannelSpace:
    """The ordered channel groups of one model, with the model's construction arguments.

    ``arch`` holds the keyword arguments that rebuild the model (num_classes, in_channels,
    input_size, max_width, min_width, ...): configs carry them into JSON so an exported child can
    be rebuilt without the training code.
    """

    def __init__(self, model: str, groups: list[ChannelGroup], arch: Mapping,
                 builder: Callable | None = None):
        self.model = model
        self.groups: dict[str, ChannelGroup] = {}
        for g in groups:
            if g.name in self.groups:
                raise ValueError(f"duplicate channel group {g.name!r} in {model}")
            if not 1 <= g.min <= g.max:
                raise ValueError(f"group {g.name!r}: need 1 <= min ({g.min}) <= max ({g.max})")
            self.groups[g.name] = g
        self.arch = dict(arch)
        self._builder = builder          # rebuilds the model (used to trace layer shapes)
        self._tables: dict = {}          # input_size -> layer table, see slimnet.profile

    # -- container protocol -------------------------------------------------------------------
    def __iter__(self) -> Iterator[ChannelGroup]:
        return iter(self.groups.values())

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, name: str) -> ChannelGroup:
        try:
            return self.groups[name]
        except KeyError:
            raise KeyError(f"{self.model} has no channel group {name!r}{_closest(name, self.groups)}") from None

    @property
    def names(self) -> list[str]:
        return list(self.groups)

    @property
    def max_width(self) -> float:
        return float(self.arch.get("max_width", 1.0))

    @property
    def min_width(self) -> float:
        return float(self.arch.get("min_width", self.max_width))

    def __repr__(self) -> str:
        return f"ChannelSpace({self.model}, {len(self)} groups, widths {self.min_width}..{self.max_width})"

    # -- making configs ------------------------------------------------------------------------
    def config(self, channels: Mapping[str, int] | "ChannelConfig") -> "ChannelConfig":
        """Validate a mapping of group -> channels into a config of this space."""
        if isinstance(channels, ChannelConfig):
            if channels.space is self:
                return channels
            channels = channels.channels
        return ChannelConfig(self, channels)

    def max(self) -> "ChannelConfig":
        return ChannelConfig(self, {g.name: g.max for g in self})

    def min(self) -> "ChannelConfig":
        return ChannelConfig(self, {g.name: g.min for g in self})

    def uniform(self, width: float) -> "ChannelConfig":
        """The config of the standard model at width multiplier ``width``."""
        width = float(width)
        if not math.isfinite(width) or width <= 0:
            raise ConfigError(f"width must be a positive number, got {width}")
        counts: dict[str, int] = {}
        for g in self:
            if g.expand_of is not None:
                counts[g.name] = counts[g.expand_of] * g.expand_ratio
            else:
                mult = max(width, 1.0) if g.keep_base else width
                counts[g.name] = make_divisible(g.base * mult, g.divisor)
        over = [n for n, c in counts.items() if c > self.groups[n].max]
        if over:
            raise ConfigError(
                f"width {width} is wider than this {self.model} supernet (max_width={self.max_width}): "
                f"groups {over[:4]} would exceed their maximum; build the model with max_width >= {width}")
        under = [n for n, c in counts.items() if c < self.groups[n].min]
        if under:
            raise ConfigError(
                f"width {width} is narrower than this {self.model} supernet allows (min_width={self.min_width}): "
                f"groups {under[:4]} would fall below their minimum; build with min_width <= {width}")
        return ChannelConfig(self, counts)

    def random(self, rng: _random.Random | None = None) -> "ChannelConfig":
        """A per-layer random config: each group independently at a random width ratio in
        [min_width, max_width], rounded to its divisor and clamped to [min, max]."""
        rng = rng or _random
        counts = {}
        lo, hi = self.min_width, self.max_width
        for g in self:
            ratio = rng.uniform(lo, hi)
            # ``base`` is already the count at width 1.0 (an expand group's includes its ratio)
            c = make_divisible(g.base * ratio, g.divisor)
            counts[g.name] = min(g.max, max(g.min, c))
        return ChannelConfig(self, counts)

    def step(self, group: str, fraction: float = 1 / 12) -> int:
        """Channels removed by one search step of ``group``: ``fraction`` of its max, rounded to
        its divisor (at least one divisor)."""
        g = self[group]
        return max(g.divisor, int(round(g.max * fraction / g.divisor)) * g.divisor)

    def slim_candidates(self, cfg: "ChannelConfig", fraction: float = 1 / 12) -> list[tuple[str, "ChannelConfig"]]:
        """Every config one step narrower in exactly one group (groups already at min are
        skipped; a group less than one step above its min steps to its min)."""
        return [(g.name, cfg.replace(**{g.name: max(cfg[g.name] - self.step(g.name, fraction), g.min)}))
                for g in self if cfg[g.name] > g.min]

    def check_arch(self, data: Mapping, source: str = "config") -> None:
        """Raise if a config dict was made for another model or architecture."""
        model = data.get("model")
        if model is not None and model != self.model:
            raise ConfigError(f"{source} was made for model {model!r}, not {self.model!r}")
        for key, val in self.arch.items():
            if key in data and data[key] != val and key not in ("min_width",):
                raise ConfigError(f"{source} was made for {key}={data[key]!r}, this model has {key}={val!r}")

    def load(self, path: str | os.PathLike, check_min: bool = True) -> "ChannelConfig":
        """Read a channel JSON file written by ``ChannelConfig.save`` (or by hand).

        ``check_min``: refuse a config with a group below the space's minimum, i.e. one the
        supernet never trained (as ``uniform`` refuses a width below ``min_width``). Off where
        there is no trained range: profiling, a child trained alone, S-Net config lists."""
        data = read_channel_json(path)
        self.check_arch(data, source=str(path))
        cfg = ChannelConfig(self, data["channels"])
        if check_min:
            under = [f"{n} {c} < {self.groups[n].min}" for n, c in cfg.channels.items() if c < self.groups[n].min]
            if under:
                raise ConfigError(
                    f"{path} is narrower than this {self.model} supernet was trained (min_width={self.min_width}): "
                    f"{len(under)} group(s) below their minimum ({', '.join(under[:3])}"
                    f"{', ...' if len(under) > 3 else ''}); it never trained them. Use a config with every group "
                    "at or above its minimum (e.g. one searched by slimnet autoslim), or a supernet trained with a "
                    "lower model.min_width")
        return cfg


def read_channel_json(path: str | os.PathLike) -> dict:
    """The dict of a channel JSON file (model, construction arguments, ``channels``), checked for
    shape only; ``ChannelSpace.load`` validates it against a model."""
    if os.path.isdir(path):
        raise ConfigError(f"{path} is a folder; give a channel JSON file (e.g. autoslim_150M.json)")
    if not os.path.isfile(path):
        raise ConfigError(f"channel JSON {path} does not exist")
    with open(path) as f:
        try:
            data = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("channels"), dict):
        raise ConfigError(f"{path}: expected a JSON object with a 'channels' mapping of group -> count")
    return data


class ChannelConfig(Mapping):
    """An immutable, validated mapping of every group of a space to an active channel count."""

    __slots__ = ("space", "channels", "_key")

    def __init__(self, space: ChannelSpace, channels: Mapping[str, int]):
        unknown = [k for k in channels if k not in space.groups]
        if unknown:
            k = unknown[0]
            raise ConfigError(f"unknown channel group {k!r} for {space.model}{_closest(k, space.groups)}")
        missing = [k for k in space.groups if k not in channels]
        if missing:
            raise ConfigError(f"config for {space.model} is missing {len(missing)} group(s): {missing[:5]}")
        clean = {}
        for name, g in space.groups.items():
            c = channels[name]
            if isinstance(c, bool) or not isinstance(c, int):
                if isinstance(c, float) and c.is_integer():
                    c = int(c)
                else:
                    raise ConfigError(f"group {name!r}: channel count must be an integer, got {c!r}")
            if c < 1:
                raise ConfigError(f"group {name!r}: channel count must be >= 1, got {c}")
            if c > g.max:
                raise ConfigError(f"group {name!r}: {c} channels is above the supernet's maximum {g.max}")
            if c % g.multiple_of:
                raise ConfigError(f"group {name!r}: {c} channels is not a multiple of {g.multiple_of} "
                                  f"({space.model} splits it into {g.multiple_of} equal groups)")
            clean[name] = c
        self.space = space
        self.channels = clean
        self._key = None

    def __getitem__(self, name: str) -> int:
        return self.channels[name]

    def __iter__(self):
        return iter(self.channels)

    def __len__(self) -> int:
        return len(self.channels)

    def __eq__(self, other) -> bool:
        if isinstance(other, ChannelConfig):
            return self.space.model == other.space.model and self.channels == other.channels
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.key)

    @property
    def key(self) -> str:
        """A short stable id of the channel counts: names BN statistics in state dicts."""
        if self._key is None:
            blob = json.dumps(sorted(self.channels.items()), separators=(",", ":"))
            self._key = hashlib.sha1(blob.encode()).hexdigest()[:12]
        return self._key

    def replace(self, **counts: int) -> "ChannelConfig":
        return ChannelConfig(self.space, {**self.channels, **counts})

    def is_min(self) -> bool:
        return all(c <= self.space.groups[n].min for n, c in self.channels.items())

    def __repr__(self) -> str:
        return f"ChannelConfig({self.space.model}, key={self.key}, {len(self)} groups)"

    def to_dict(self, input_size: int | None = None) -> dict:
        """JSON-ready dict: model, its construction arguments, channels, MACs and params."""
        from .profile import profile  # local: profile depends on space

        arch = dict(self.space.arch)
        if input_size is not None:
            arch["input_size"] = input_size
        cost = profile(self.space, self, input_size=arch.get("input_size"))
        return {"model": self.space.model, **arch, "channels": dict(self.channels),
                "macs": cost.macs, "params": cost.params}

    def save(self, path: str | os.PathLike) -> None:
        """Write the config as JSON, atomically (a crash never leaves a half-written file)."""
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

