"""``slimmable(model, input_size)``: any traced CNN as a supernet holding the model's own weights.

The supernet is the model's torch.fx ``GraphModule`` (``TracedSupernet``, a subclass) in which every
traced ``nn.Conv2d`` / ``nn.BatchNorm2d`` / ``nn.Linear`` is replaced by the slimmable layer
(``SlimConv2d``, ``SlimBatchNorm2d``, ``SlimLinear``) with the refs ``trace_groups`` derived and the
original parameters: ``uniform(1.0)`` is the original model (also the max config at ``max_width=1.0``;
a wider supernet's extra channels start freshly initialised, as AutoSlim's 1.5x supernets).
Module names are the original ones, so state-dict keys are the model's (BN adds its calibrated
statistics, ``stats_<key>_mean`` / ``_var``; the max config's are the model's running statistics).
Every other module is a deep copy: the model itself is left untouched.

It has the parts of :class:`slimnet.SlimNet`'s surface the tools use: ``space`` (fixed groups have
min = max), ``arch``, ``set_channels`` / ``set_width``, ``active_config``, ``calibrated_configs``,
``search_stages()`` (the graph cut into stages for prefix reuse), so ``calibrate_bn`` and ``profile(net.space)``
work on it. ``slimnet.export`` rebuilds children from the model registry, which a traced model is
not in: the equivalent is :meth:`TracedSupernet.export`, a ``GraphModule`` over the same graph with
each slimmable layer's ``plain(cfg)`` filled by ``export_to`` (the other modules copied).
"""
from __future__ import annotations

import copy
import math
from typing import Iterable, Mapping

import torch
import torch.fx as fx
import torch.nn as nn

from ..models.base import BN_MODES, ConfigSwitching
from ..nn import SlimBatchNorm2d, SlimModule
from ..space import ChannelConfig, ChannelGroup, ChannelSpace, make_divisible
from .convert import modules_for, slim_layers, targets
from .graph import TraceError, trace
from .groups import TracedGroup, TracedGroups, trace_groups
from .stages import graph_stages


def _divisor(group: TracedGroup) -> int:
    """The rounding divisor of a slimmable group: lcm(8, multiple_of), or the largest of lcm(4 | 2 |
    1, multiple_of) that divides its channels (so uniform(1.0) is the model: 58 stays 58)."""
    for k in (8, 4, 2, 1):
        d = math.lcm(k, group.multiple_of)
        if group.channels % d == 0:
            return d
    return group.multiple_of


def channel_groups(traced: TracedGroups, min_width: float, max_width: float = 1.0) -> list[ChannelGroup]:
    """The space's groups: each traced group with base = its channels (``uniform(1.0)`` is the
    model); slimmable ones from ``min_width`` to ``max_width`` (rounded to their divisor), fixed
    ones with min = max = base."""
    groups = []
    for g in traced.groups.values():
        c = g.channels
        if not g.slimmable:
            groups.append(ChannelGroup(g.name, c, c, c, divisor=1, keep_base=True, multiple_of=g.multiple_of))
            continue
        d = _divisor(g)
        low = min(c, make_divisible(c * min_width, d))
        high = max(c, make_divisible(c * max_width, d))
        groups.append(ChannelGroup(g.name, c, high, low, divisor=d, multiple_of=g.multiple_of))
    return groups


class _CopiedAsItself:
    """Deep copies of a GraphModule subclass that stay of the subclass, with every attribute (fx's
    own deep copy would make a plain GraphModule, losing ``space``, ``arch``, ...); a supernet's
    space is the copy's own (its layer-table builder is the copy's)."""

    def __deepcopy__(self, memo):
        new = object.__new__(type(self))     # the same per-instance class: the same generated forward
        memo[id(self)] = new
        object.__setattr__(new, "__dict__", copy.deepcopy(self.__dict__, memo))
        new.graph = new._graph               # the copied graph is owned by the copy
        return new


class TracedSupernet(_CopiedAsItself, ConfigSwitching, fx.GraphModule):
    """A traced model's supernet (see the module docstring). Made by :func:`slimmable`, or by
    ``slimnet.build("torchvision:NAME" | "timm:NAME" | "module:function", ...)`` (``name`` and
    ``spec``: the registry name and the ``build()`` arguments that make it again, so checkpoints
    of it load with ``load_supernet``)."""

    is_child = False

    def __init__(self, model: nn.Module, input_size=224, max_width: float = 1.0, min_width: float = 0.25,
                 fixed: Iterable[str] = (), leaf_modules: Iterable = (), in_channels: int = 3, *,
                 bn: str = "universal", switchable: Iterable | None = None, name: str | None = None,
                 spec: Mapping | None = None):
        if not max_width >= 1.0:
            raise ValueError(f"max_width must be >= 1.0 (1.0: the model's own widths), got {max_width}")
        if not 0 < min_width <= 1.0:
            raise ValueError(f"min_width must be in (0, 1], got {min_width}")
        if bn not in BN_MODES:
            raise ValueError(f"bn must be one of {BN_MODES}, got {bn!r}")
        leaf_modules = list(leaf_modules)
        gm = trace(model, leaf_modules)
        traced = trace_groups(model, input_size, in_channels, fixed=fixed, leaf_modules=leaf_modules)
        size = input_size if isinstance(input_size, int) else max(input_size)
        arch = dict(spec) if spec is not None else dict(in_channels=in_channels, input_size=size)
        arch.update(max_width=float(max_width), min_width=float(min_width))
        space = ChannelSpace(name or f"traced:{type(model).__name__}", channel_groups(traced, min_width, max_width),
                             arch, builder=self._meta_copy)
        self.switchable_configs = _switchable(space, bn, switchable)
        base = space.uniform(1.0)          # the model's own widths
        layers = slim_layers(gm, traced, space.max(), base, bn, self.switchable_configs)
        modules = modules_for(gm, layers)
        _check_names(modules, type(model).__name__)
        super().__init__(modules, gm.graph, type(model).__name__)
        self.traced, self.space, self.arch, self.bn_mode = traced, space, arch, bn
        self.class_name = type(model).__name__
        self.child_config = None
        self._slim_modules = [m for m in self.modules() if isinstance(m, SlimModule)]
        with torch.no_grad():
            for m in self._slim_modules:        # the model's BN statistics: those of its own widths
                original = layers.stats.get(m)
                if original is not None:
                    m.activate(base)
                    m._store_stats(*original)
        self.active_config = self.set_channels(space.max())

    def search_stages(self) -> list[fx.GraphModule] | None:
        """The graph cut where one tensor flows between the parts (``trace/stages.py``), for the
        search's prefix reuse; None when it cannot be cut."""
        return graph_stages(self)

    # -- export ------------------------------------------------------------------------------
    @torch.no_grad()
    def export(self, config=None, statistics: bool = True) -> "TracedChild":
        """A plain child (:class:`TracedChild`, a ``GraphModule``) with exactly ``config``'s channels
        (default: the active config), in eval mode, on the supernet's device and dtype: the same
        graph and module names, each slimmable layer's ``plain(cfg)`` filled by its ``export_to``
        (BN statistics: the config's calibrated ones, so calibrate it first), every other module
        copied. ``statistics=False`` gives its BN fresh statistics (mean 0, variance 1) instead:
        a child to train alone, not one that computes the supernet's outputs."""
        cfg = self.active_config if config is None else self.space.config(config)
        previous = self.active_config
        first = next(self.parameters())
        modules = {}
        try:
            self.set_channels(cfg)
            for name, m in targets(self):
                if isinstance(m, SlimModule):
                    modules[name] = m.plain(cfg).to(device=first.device, dtype=first.dtype)
                    _fill(m, modules[name], cfg, statistics)
                else:
                    modules[name] = copy.deepcopy(m)
        finally:
            self.set_channels(previous)
        space = self._child_space()
        return TracedChild(modules, copy.deepcopy(self.graph), self, space.config(dict(cfg.channels))).eval()

    def _child_space(self) -> ChannelSpace:
        """A copy of the space for a child, profiling on its own meta-device copy of the layers, so
        the child keeps no reference to this supernet (nor its memory)."""
        meta = self._meta_copy()
        space = ChannelSpace(self.space.model, list(self.space), dict(self.arch), builder=lambda **_: meta)
        for m in meta.modules():
            if isinstance(m, SlimModule):
                m.activate(space.max())      # the layers' configs now belong to the child's space
        return space

    def _meta_copy(self, input_size=None, bn="universal", **_) -> fx.GraphModule:
        """The same graph over copies of the modules on the meta device: ``profile``'s layer table
        (spatial sizes come from the input it runs; the copy's layers keep their refs)."""
        memo = {id(self.space): self.space}      # layers hold configs, and configs their space
        modules = {name: nn.Parameter(m.detach().to("meta"), m.requires_grad) if isinstance(m, nn.Parameter)
                   else copy.deepcopy(m, memo).to("meta") for name, m in targets(self)}
        for m in modules.values():
            if isinstance(m, SlimModule):
                m.activate(self.space.max())
        return fx.GraphModule(modules, copy.deepcopy(self.graph))


class TracedChild(_CopiedAsItself, fx.GraphModule):
    """A traced supernet's plain child: a ``GraphModule`` of plain ``torch.nn`` layers with exactly
    ``child_config``'s channels, and what slimnet's tools read from a child (``space``, ``arch``,
    ``child_config``, ``is_child``; ``model_spec`` rebuilds it with ``channels=``)."""

    is_child = True
    switchable_configs: list = []

    def __init__(self, modules: dict, graph: fx.Graph, supernet: TracedSupernet, cfg: ChannelConfig):
        super().__init__(modules, graph, f"{supernet.class_name}Child")
        self.space, self.arch, self.child_config = cfg.space, cfg.space.arch, cfg
        self.active_config, self.bn_mode, self.class_name = cfg, supernet.bn_mode, supernet.class_name

    def set_channels(self, cfg):
        raise RuntimeError("this is an exported child with fixed channels; set_channels works on supernets")


#: what a traced supernet adds to the model's GraphModule: a model's own top-level submodule or
#: attribute of one of these names would be hidden by it
SUPERNET_ATTRIBUTES = ("space", "arch", "traced", "bn_mode", "class_name", "child_config", "active_config",
                       "switchable_configs", "export", "set_channels", "set_width", "calibrated_configs",
                       "search_stages", "is_child")


def _check_names(modules: dict, model: str) -> None:
    clash = sorted({name.split(".")[0] for name in modules} & set(SUPERNET_ATTRIBUTES))
    if clash:
        raise TraceError(f"{model} has a submodule named {clash[0]!r}, which a traced supernet uses for itself "
                         f"({', '.join(SUPERNET_ATTRIBUTES)}); rename it in the model to slim it")


def _switchable(space: ChannelSpace, bn: str, switchable) -> list[ChannelConfig]:
    if bn != "switchable":
        return []
    if not switchable:
        raise ValueError("bn='switchable' needs `switchable`: the widths or configs to switch between")
    configs = [space.uniform(c) if isinstance(c, (int, float)) else space.config(c) for c in switchable]
    if len(set(c.key for c in configs)) != len(configs):
        raise ValueError("switchable configs contain a duplicate")
    return configs


def _fill(slim: SlimModule, plain: nn.Module, cfg: ChannelConfig, statistics: bool) -> None:
    """``slim.export_to(plain)``; without ``statistics`` a universal BN lends fresh ones (mean 0,
    variance 1) for the copy instead of needing calibrated ones."""
    if statistics or not isinstance(slim, SlimBatchNorm2d) or slim.stats_for(cfg.key) is not None:
        slim.export_to(plain)
        if not statistics and isinstance(plain, nn.BatchNorm2d):
            plain.reset_running_stats()
        return
    n = plain.num_features
    slim._store_stats(torch.zeros(n), torch.ones(n))
    try:
        slim.export_to(plain)
    finally:
        slim.drop_stats(cfg.key)


def slimmable(model: nn.Module, input_size=224, max_width: float = 1.0, min_width: float = 0.25,
              fixed: Iterable[str] = (), leaf_modules: Iterable = (), in_channels: int = 3,
              bn: str = "universal", switchable: Iterable | None = None) -> TracedSupernet:
    """``model`` (any ``nn.Module`` classifier torch.fx can trace) as a supernet holding its weights.

    ``input_size`` is the example input the channel shapes are traced at; ``min_width`` the
    narrowest width of every slimmable group; ``fixed`` / ``leaf_modules`` as in ``trace_groups``;
    ``bn``: 'universal' (shared affine, calibrated statistics; the default), 'shared' (one set of
    running statistics) or 'switchable' (private BN per entry of ``switchable``, widths or configs).
    At the max config (``space.max()``, also ``set_width(1.0)``) it computes the model's outputs
    in eval mode; any narrower config needs ``calibrate_bn`` before eval (or train mode)."""
    return TracedSupernet(model, input_size, max_width, min_width, fixed, leaf_modules, in_channels,
                          bn=bn, switchable=switchable)
