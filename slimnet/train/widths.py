"""Which configs a step trains: a fixed list, or the sandwich rule (max + random + min).

Random choices come from a ``random.Random`` seeded by (seed, step) only, so every DDP rank (and
a resumed run) draws the same widths without communicating."""
from __future__ import annotations

import random
from typing import Callable

__all__ = ["ListedWidths", "SandwichWidths", "width_sampler", "WidthSampler"]


class ListedWidths:
    """The same labelled configs every step, largest first (switchable and fixed modes)."""

    def __init__(self, configs: list):
        self.train_configs = list(configs)

    def labels(self) -> list[str]:
        return [lab for lab, _ in self.train_configs]

    def configs(self, step: int) -> list:
        return list(self.train_configs)


class SandwichWidths:
    """The sandwich rule: the largest config, ``num_random`` configs from ``draw(rng)``, the
    smallest; labelled max, random..., min."""

    def __init__(self, largest, smallest, draw: Callable, num_random: int, seed: int):
        self.largest, self.smallest, self.draw = largest, smallest, draw
        self.num_random, self.seed = num_random, seed

    def labels(self) -> list[str]:
        return ["max"] + ["random"] * self.num_random + ["min"]

    def configs(self, step: int) -> list:
        rng = random.Random(self.seed * 1_000_003 + step)
        rand = [self.draw(rng) for _ in range(self.num_random)]
        return [("max", self.largest)] + [("random", c) for c in rand] + [("min", self.smallest)]


def width_sampler(net, plan, exp):
    """The sampler of ``plan``'s mode for ``net``: ``labels()`` and ``configs(step)``."""
    return plan.mode.sampler(net, plan, exp)


# The engine's name before modes were objects: ``WidthSampler(net, plan, exp)`` still returns the
# mode's sampler.
WidthSampler = width_sampler
