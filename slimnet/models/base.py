"""The base class every slimnet architecture derives from, and its stage protocol."""
from __future__ import annotations

import functools
from typing import Iterable, Mapping, Protocol, Sequence

import torch
import torch.nn as nn

from ..nn import Layers, SlimModule
from ..space import ChannelConfig, ChannelGroup, ChannelSpace

BN_MODES = ("universal", "switchable", "shared")
DEFAULT_MIN_WIDTH = 0.25  # the narrowest width of the papers' width ranges


def small_input(input_size: int) -> bool:
    """Inputs below 128 px (CIFAR 32, Fashion-MNIST 28) drop the early downsampling so the last
    feature map is not smaller than a few pixels; documented per architecture."""
    return input_size < 128


class ModelPlan(Protocol):
    """A model's block plan: everything its layers are built from, including the channel groups
    they use (declared with the blocks that introduce them, in one walk over the architecture)."""

    @property
    def groups(self) -> Sequence[ChannelGroup]: ...


class PoolClassifierHead(nn.Module):
    """``classifier(flatten(pool(x)))`` over a model's own pool and classifier, as one module: the
    last stage of ``SlimNet.search_stages()``. Made on demand and never registered on the model, so the
    model's module names and state-dict keys stay its own."""

    def __init__(self, pool: nn.Module, classifier: nn.Module):
        super().__init__()
        self.pool, self.classifier = pool, classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(x), 1))


class ConfigSwitching:
    """Switching a supernet between channel configs, for any supernet class: it needs ``space``
    (its ChannelSpace) and ``_slim_modules`` (its slimmable layers). Used by :class:`SlimNet` and
    by traced supernets (``slimnet.trace``)."""

    def set_channels(self, cfg: Mapping | ChannelConfig) -> ChannelConfig:
        """Run the supernet at ``cfg`` (a config of ``space`` or a group -> channels mapping)."""
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


class SlimNet(ConfigSwitching, nn.Module):
    """A supernet (slimmable layers, ``channels=None``) or a fixed child (plain torch.nn layers
    with exactly ``channels``), built from one architecture definition.

    Subclasses declare ``model_name`` and implement:

    * ``plan(**arch)``: the block plan (a :class:`ModelPlan`); its ``groups`` are the explicit
      channel groups, and ``build`` makes the layers from the same plan, so the two cannot drift;
    * ``build(L, plan, **arch)``: the layers, made through the ``Layers`` factory ``L``;
    * the stages: ``trunk()`` (the feature blocks, in order) and ``head()`` (the global pool and
      the classifier). ``forward`` is their composition (``forward_head(forward_features(x))``)
      and ``search_stages()`` hands them to the search, which reuses the outputs of unchanged blocks.
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
        plan = self.plan(**arch)
        groups = list(plan.groups)
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
        self.build(Layers(self.space, child=child, bn=bn, switchable=self.switchable_configs), plan, **arch)
        self._slim_modules = [m for m in self.modules() if isinstance(m, SlimModule)]
        self.active_config = child if child is not None else self.space.max()
        if child is None:
            self.set_channels(self.active_config)

    # -- subclass interface --------------------------------------------------------------------
    @classmethod
    def registry_name(cls, **arch) -> str:
        return cls.model_name

    @classmethod
    def plan(cls, **arch) -> ModelPlan:  # pragma: no cover - interface
        raise NotImplementedError

    @classmethod
    def channel_groups(cls, **arch) -> list[ChannelGroup]:
        """The explicit channel groups, in order: those of the block plan."""
        return list(cls.plan(**arch).groups)

    def build(self, L: Layers, plan: ModelPlan, **arch) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def trunk(self) -> list[nn.Module]:  # pragma: no cover - interface
        """The feature blocks, in order: ``forward_features`` runs them one after another."""
        raise NotImplementedError

    def head(self) -> tuple[nn.Module, nn.Module]:  # pragma: no cover - interface
        """(global pool, classifier): ``forward_head`` is ``classifier(flatten(pool(features)))``."""
        raise NotImplementedError

    # -- stages --------------------------------------------------------------------------------
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.trunk():
            x = block(x)
        return x

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        pool, classifier = self.head()
        return classifier(torch.flatten(pool(x), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def search_stages(self) -> list[nn.Module] | None:
        """The modules whose composition is ``forward``: the trunk's blocks, then the head (as
        one :class:`PoolClassifierHead`). None when the class declares no trunk and head (it
        writes its own ``forward``); a search then runs a full forward per candidate."""
        cls = type(self)
        if cls.trunk is SlimNet.trunk or cls.head is SlimNet.head:
            return None
        return [*self.trunk(), PoolClassifierHead(*self.head())]

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
        return super().set_channels(cfg)
