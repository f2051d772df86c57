"""The base class every slimnet architecture derives from."""
from __future__ import annotations

import functools
from typing import Iterable, Mapping

import torch.nn as nn

from ..nn import Layers, SlimModule
from ..space import ChannelConfig, ChannelGroup, ChannelSpace

BN_MODES = ("universal", "switchable", "shared")
DEFAULT_MIN_WIDTH = 0.25  # the narrowest width of the papers' width ranges


def small_input(input_size: int) -> bool:
    """Inputs below 128 px (CIFAR 32, Fashion-MNIST 28) drop the early downsampling so the last
    feature map is not smaller than a few pixels; documented per architecture."""
    return input_size < 128


class SlimNet(nn.Module):
    """A supernet (slimmable layers, ``channels=None``) or a fixed child (plain torch.nn layers
    with exactly ``channels``), built from one architecture definition.

    Subclasses declare ``model_name``, implement ``channel_groups(**arch)`` (the explicit channel
    groups) and ``build(L, **arch)`` (the layers, made through the ``Layers`` factory ``L``).
    """

    model_name: str = ""

    def __init__(self, *, num_classes: int = 1000, in_channels: int = 3, input_size: int = 224,
                 max_width: float = 1.0, min_width: float | None = None, bn: str = "universal",
                 switchable: Iterable | None = None, channels: Mapping | ChannelConfig | None = None,
                 **arch_extra):
        super().__init__()
        for name, val in (("num_classes", num_classes), ("in_channels", in_channels), ("input_size", input_size)):
            if isinstance(val, bool) or not isinstance(val, int) or val < 1:
                raise ValueError(f"{name} must be a positive integer, got {val!r}")
        if not max_width > 0:
            raise ValueError(f"max_width must be positive, got {max_width}")
        min_width = min(DEFAULT_MIN_WIDTH, max_width) if min_width is None else min_width
        if not 0 < min_width <= max_width:
            raise ValueError(f"min_width must be in (0, max_width={max_width}], got {min_width}")
        if bn not in BN_MODES:
            raise ValueError(f"bn must be one of {BN_MODES}, got {bn!r}")
        arch = dict(num_classes=num_classes, in_channels=in_channels, input_size=input_size,
                    max_width=float(max_width), min_width=float(min_width), **arch_extra)
        groups = self.channel_groups(**arch)
        builder = functools.partial(type(self), **arch)
        self.space = ChannelSpace(self.registry_name(**arch), groups, arch, builder=builder)
        self.arch = arch
        self.bn_mode = bn
        self.switchable_configs: list[ChannelConfig] = []
        child = None
        if channels is not None:
            child = self.space.config(channels)
        elif bn == "switchable":
            if not switchable:
                raise ValueError("bn='switchable' needs `switchable`: the widths or configs to switch between")
            self.switchable_configs = self._as_configs(switchable)
        self.child_config = child
        self.build(Layers(self.space, child=child, bn=bn, switchable=self.switchable_configs), **arch)
        self._slim_modules = [m for m in self.modules() if isinstance(m, SlimModule)]
        self.active_config = child if child is not None else self.space.max()
        if child is None:
            self.set_channels(self.active_config)

    # -- subclass interface --------------------------------------------------------------------
    @classmethod
    def registry_name(cls, **arch) -> str:
        return cls.model_name

    @staticmethod
    def channel_groups(**arch) -> list[ChannelGroup]:  # pragma: no cover - interface
        raise NotImplementedError

    def build(self, L: Layers, **arch) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    # -- switching -----------------------------------------------------------------------------
    @property
    def is_child(self) -> bool:
        return self.child_config is not None

    def _as_configs(self, items: Iterable) -> list[ChannelConfig]:
        configs = []
        for item in items:
            cfg = self.space.uniform(item) if isinstance(item, (int, float)) else self.space.config(item)
            if cfg in configs:
                raise ValueError(f"switchable configs contain a duplicate: {item!r}")
            configs.append(cfg)
        return configs

    def set_channels(self, cfg: Mapping | ChannelConfig) -> ChannelConfig:
        """Run the supernet at ``cfg`` (a config of this space or a group -> channels mapping)."""
        if self.is_child:
            raise RuntimeError("this is an exported child with fixed channels; set_channels works on supernets")
        cfg = self.space.config(cfg)
        for m in self._slim_modules:
            m.activate(cfg)
        self.active_config = cfg
        return cfg

    def set_width(self, width: float) -> ChannelConfig:
        """Sugar for ``set_channels(space.uniform(width))``."""
        return self.set_channels(self.space.uniform(width))

    def calibrated_configs(self) -> list[str]:
        """Keys of the configs with stored BN statistics (universal / shared BN)."""
        keys = set()
        for m in self._slim_modules:
            keys.update(getattr(m, "calibrated_keys", ()))
        return sorted(keys)
