"""Cost metrics of a config: analytic MACs and parameters, and the measured latency of its child.

MACs and parameters are arithmetic (``slimnet.profile``), computed once per config. Latency is
measured: the plain child of a config (``type(net)(**net.arch, channels=cfg)``, weights do not
matter) runs on the search's device; the measurement is a callable (``measure=``, by default
``slimnet.profile.measure_latency``) so a test or another clock can be injected.
"""
from __future__ import annotations

from typing import Callable

import torch

from ..profile import Cost, measure_latency, profile
from ..space import ChannelConfig

# measure(child, input_shape, device=..., warmup=..., repeats=...) -> milliseconds
Measure = Callable[..., float]


class ChildLatency:
    """Measured latency (microseconds) of the plain child of each config, cached by config key.

    ``measure`` times one model (default: ``measure_latency``, the median of ``repeats`` runs
    after 3 warm-up runs); pass another callable to use another clock. ``cache`` holds every
    measurement (a resumed search fills it from its trajectory)."""

    def __init__(self, net, input_size: int, batch: int = 1, device=None, repeats: int = 20,
                 measure: Measure = measure_latency):
        self.net, self.batch, self.repeats, self.measure = net, int(batch), repeats, measure
        self.shape = (self.batch, net.arch["in_channels"], input_size, input_size)
        self.device = torch.device(device) if device is not None else next(net.parameters()).device
        self.cache: dict[str, int] = {}

    def __call__(self, cfg: ChannelConfig) -> int:
        if cfg.key not in self.cache:
            child = type(self.net)(**self.net.arch, channels=cfg).to(self.device).eval()
            ms = self.measure(child, self.shape, device=self.device, warmup=3, repeats=self.repeats)
            self.cache[cfg.key] = int(round(ms * 1000))
        return self.cache[cfg.key]


class ConfigCosts:
    """Every cost a search compares with a budget: ``value(cfg, kind)`` for kind "macs",
    "params" (analytic, once per config) or "latency" (``latency(cfg)``, microseconds)."""

    def __init__(self, space, input_size: int, latency: Callable[[ChannelConfig], int] | None = None):
        self.space, self.input_size, self.latency = space, input_size, latency
        self._costs: dict[str, Cost] = {}

    def of(self, cfg: ChannelConfig) -> Cost:
        if cfg.key not in self._costs:
            self._costs[cfg.key] = profile(self.space, cfg, self.input_size)
        return self._costs[cfg.key]

    def value(self, cfg: ChannelConfig, kind: str) -> int:
        if kind == "latency":
            return self.latency(cfg)
        c = self.of(cfg)
        return c.macs if kind == "macs" else c.params
