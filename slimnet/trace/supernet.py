"""``slimmable(model, input_size)``: any traced CNN as a supernet holding the model's own weights.

The supernet is the model's torch.fx ``GraphModule`` (``TracedSupernet``, a subclass) in which every
traced ``nn.Conv2d`` / ``nn.BatchNorm2d`` / ``nn.Linear`` is replaced by the slimmable layer
(``SlimConv2d``, ``SlimBatchNorm2d``, ``SlimLinear``) with the refs ``trace_groups`` derived and the
original parameters (the max config is the original model: only ``max_width=1.0`` is supported).
Module names are the original ones, so state-dict keys are the model's (BN adds its calibrated
statistics, ``stats_<key>_mean`` / ``_var``; the max config's are the model's running statistics).
Every other module is a deep copy: the model itself is left untouched.

It has the parts of :class:`slimnet.SlimNet`'s surface the tools use: ``space`` (fixed groups have
min = max), ``arch``, ``set_channels`` / ``set_width``, ``active_config``, ``calibrated_configs``,
``stages()`` (None: a search runs full forwards), so ``calibrate_bn`` and ``profile(net.space)``
work on it. ``slimnet.export`` rebuilds children from the model registry, which a traced model is
not in: the equivalent is :meth:`TracedSupernet.export`, a ``GraphModule`` over the same graph with
each slimmable layer's ``plain(cfg)`` filled by ``export_to`` (the other modules copied).
"""
from __future__ import annotations

import copy
import math
from typing import Iterable

import torch
import torch.fx as fx
import torch.nn as nn

from ..models.base import ConfigSwitching
from ..nn import SlimBatchNorm2d, SlimConv2d, SlimLinear, SlimModule, ref_groups, resolve
from ..nn.refs import ChannelRef
from ..space import ChannelConfig, ChannelGroup, ChannelSpace, make_divisible
from .graph import TraceError, trace
from .groups import TracedGroup, TracedGroups, TracedLayer, trace_groups
from .layers import SlimFlattenLinear


def _divisor(group: TracedGroup) -> int:
    """The rounding divisor of a slimmable group: lcm(8, multiple_of), or the largest of lcm(4 | 2 |
    1, multiple_of) that divides its channels (so uniform(1.0) is the model: 58 stays 58)."""
    for k in (8, 4, 2, 1):
        d = math.lcm(k, group.multiple_of)
        if group.channels % d == 0:
            return d
    return group.multiple_of


def channel_groups(traced: TracedGroups, min_width: float) -> list[ChannelGroup]:
    """The space's groups: each traced group at max = its channels; slimmable ones down to
    ``min_width`` (rounded to their divisor), fixed ones with min = max (kept at every width <= 1)."""
    groups = []
    for g in traced.groups.values():
        c = g.channels
        if not g.slimmable:
            groups.append(ChannelGroup(g.name, c, c, c, divisor=1, keep_base=True, multiple_of=g.multiple_of))
            continue
        d = _divisor(g)
        low = min(c, make_divisible(c * min_width, d))
        groups.append(ChannelGroup(g.name, c, c, low, divisor=d, multiple_of=g.multiple_of))
    return groups


class TracedSupernet(ConfigSwitching, fx.GraphModule):
    """A traced model's supernet (see the module docstring). Made by :func:`slimmable`."""

    is_child = False
    bn_mode = "universal"

    def __init__(self, model: nn.Module, input_size=224, max_width: float = 1.0, min_width: float = 0.25,
                 fixed: Iterable[str] = (), leaf_modules: Iterable = (), in_channels: int = 3):
        if max_width != 1.0:
            raise ValueError(f"slimmable() supports max_width=1.0 only (the model's own widths), got {max_width}")
        if not 0 < min_width <= max_width:
            raise ValueError(f"min_width must be in (0, {max_width}], got {min_width}")
        leaf_modules = list(leaf_modules)
        gm = trace(model, leaf_modules)
        traced = trace_groups(model, input_size, in_channels, fixed=fixed, leaf_modules=leaf_modules)
        size = input_size if isinstance(input_size, int) else max(input_size)
        arch = dict(model=type(model).__name__, in_channels=in_channels, input_size=size,
                    max_width=1.0, min_width=float(min_width))
        space = ChannelSpace(f"traced:{type(model).__name__}", channel_groups(traced, min_width), arch,
                             builder=self._meta_copy)
        layers = _supernet_layers(gm, traced, space.max())
        super().__init__(_modules_for(gm, layers), gm.graph, type(model).__name__)
        self.traced, self.space, self.arch = traced, space, arch
        self.switchable_configs: list = []
        self.child_config = None
        self._slim_modules = [m for m in self.modules() if isinstance(m, SlimModule)]
        self.active_config = self.set_channels(space.max())
        with torch.no_grad():
            for m in self._slim_modules:        # the model's BN statistics: those of the max config
                original = layers.stats.get(m)
                if original is not None:
                    m._store_stats(*original)

    def __deepcopy__(self, memo):
        """A TracedSupernet again (fx's own deep copy would make a plain GraphModule of it), whose
        space is its own (the space's layer-table builder is the copy's)."""
        new = object.__new__(type(self))     # the same per-instance class: the same generated forward
        memo[id(self)] = new
        object.__setattr__(new, "__dict__", copy.deepcopy(self.__dict__, memo))
        new.graph = new._graph               # the copied graph is owned by the copy
        return new

    def stages(self) -> None:
        return None        # a traced graph has no declared trunk / head: full forwards

    # -- export ------------------------------------------------------------------------------
    @torch.no_grad()
    def export(self, config=None) -> fx.GraphModule:
        """A plain ``GraphModule`` with exactly ``config``'s channels (default: the active config),
        in eval mode, on the supernet's device and dtype: the same graph and module names, each
        slimmable layer's ``plain(cfg)`` filled by its ``export_to`` (BN statistics: the config's
        calibrated ones, so calibrate it first), every other module copied."""
        cfg = self.active_config if config is None else self.space.config(config)
        previous = self.active_config
        first = next(self.parameters())
        modules = {}
        try:
            self.set_channels(cfg)
            for name, m in _targets(self):
                if isinstance(m, SlimModule):
                    modules[name] = m.plain(cfg).to(device=first.device, dtype=first.dtype)
                    m.export_to(modules[name])
                else:
                    modules[name] = copy.deepcopy(m)
        finally:
            self.set_channels(previous)
        return fx.GraphModule(modules, copy.deepcopy(self.graph), f"{self.arch['model']}Child").eval()

    def _meta_copy(self, input_size=None, bn="universal", **_) -> fx.GraphModule:
        """The same graph over copies of the modules on the meta device: ``profile``'s layer table
        (spatial sizes come from the input it runs; the copy's layers keep their refs)."""
        memo = {id(self.space): self.space}      # layers hold configs, and configs their space
        modules = {name: copy.deepcopy(m, memo).to("meta") for name, m in _targets(self)}
        for m in modules.values():
            if isinstance(m, SlimModule):
                m.activate(self.space.max())
        return fx.GraphModule(modules, copy.deepcopy(self.graph))


def slimmable(model: nn.Module, input_size=224, max_width: float = 1.0, min_width: float = 0.25,
              fixed: Iterable[str] = (), leaf_modules: Iterable = (), in_channels: int = 3) -> TracedSupernet:
    """``model`` (any ``nn.Module`` classifier torch.fx can trace) as a supernet holding its weights.

    ``input_size`` is the example input the channel shapes are traced at; ``min_width`` the
    narrowest width of every slimmable group; ``fixed`` / ``leaf_modules`` as in ``trace_groups``.
    At the max config (``space.max()``, also ``set_width(1.0)``) it computes the model's outputs
    in eval mode; any narrower config needs ``calibrate_bn`` before eval (or train mode)."""
    return TracedSupernet(model, input_size, max_width, min_width, fixed, leaf_modules, in_channels)


# ---------------------------------------------------------------------------------------------
# building the slimmable layers
# ---------------------------------------------------------------------------------------------
class _Built(dict):
    """name -> slimmable layer, with ``stats`` (BN layer -> the original running mean / var)."""

    def __init__(self):
        super().__init__()
        self.stats: dict = {}


def _targets(gm: fx.GraphModule):
    """(target, module or tensor) of every call_module / get_attr node, each once."""
    seen = {}
    for node in gm.graph.nodes:
        if node.op in ("call_module", "get_attr") and node.target not in seen:
            seen[node.target] = _get(gm, node.target)
    return list(seen.items())


def _get(root: nn.Module, target: str):
    obj = root
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _modules_for(gm: fx.GraphModule, layers: _Built) -> dict:
    """The GraphModule's root: the slimmable layers, and a deep copy of every other target."""
    return {name: layers[name] if name in layers else copy.deepcopy(m) for name, m in _targets(gm)}


def _supernet_layers(gm: fx.GraphModule, traced: TracedGroups, max_cfg: ChannelConfig) -> _Built:
    fixed = {g.name for g in traced.fixed()}
    built = _Built()
    for layer in traced.layers:
        if layer.name in built:
            continue        # a layer called twice: one module (the tracer tied its calls' channels)
        m = _get(gm, layer.name)
        slim = _slim_layer(layer, m, fixed, max_cfg)
        if slim is None:
            continue
        if isinstance(slim, SlimBatchNorm2d) and m.running_mean is not None:
            built.stats[slim] = (m.running_mean.detach().clone(), m.running_var.detach().clone())
        built[layer.name] = slim
    return built


def _ref(ref: ChannelRef, fixed: set, max_cfg: ChannelConfig) -> ChannelRef:
    """A ref whose groups are all fixed becomes its channel count (an int: no slicing, no gather)."""
    return resolve(ref, max_cfg) if all(g in fixed for g in ref_groups(ref)) else ref


def _slim_layer(layer: TracedLayer, m: nn.Module, fixed: set, max_cfg: ChannelConfig) -> nn.Module | None:
    """The slimmable counterpart of one traced layer, with ``m``'s parameters; None for a layer kind
    not supported yet whose channels are all fixed (it stays as it is); TraceError otherwise."""
    in_ref, out_ref = _ref(layer.input, fixed, max_cfg), _ref(layer.output, fixed, max_cfg)
    _check_counts(layer, m, max_cfg)
    if type(m) is nn.Conv2d and m.padding_mode == "zeros":
        slim = _conv(layer, m, in_ref, out_ref, max_cfg)
    elif type(m) is nn.Linear:
        slim = _linear(layer, m, in_ref, out_ref, max_cfg)
    elif type(m) is nn.BatchNorm2d:
        slim = SlimBatchNorm2d(out_ref, m.num_features, m.eps, m.momentum, max_counts=max_cfg)
    elif isinstance(in_ref, int) and isinstance(out_ref, int):
        return None
    else:
        raise TraceError(f"layer '{layer.name}' ({type(m).__name__}, {layer.kind}) cannot be slimmed yet "
                         f"(supported: nn.Conv2d with zero padding, nn.Linear, nn.BatchNorm2d); "
                         f"pin its channels with fixed=['{layer.name}']")
    _copy_parameters(slim, m)
    return slim.to(device=_device(m), dtype=_dtype(m))


def _check_counts(layer: TracedLayer, m: nn.Module, max_cfg: ChannelConfig) -> None:
    """The traced refs must give the module's own channel counts (else the tracer went wrong)."""
    sizes = {nn.Conv2d: ("in_channels", "out_channels"), nn.Linear: ("in_features", "out_features"),
             nn.BatchNorm2d: ("num_features", "num_features")}.get(type(m))
    if sizes is None:
        return
    traced = (resolve(layer.input, max_cfg) * layer.features_per_channel, resolve(layer.output, max_cfg))
    own = tuple(getattr(m, a) for a in sizes)
    if traced != own:
        raise TraceError(f"layer '{layer.name}' ({type(m).__name__}): the traced channel refs give {traced} "
                         f"(in, out) channels, the module has {own}; keep the module that calls it whole "
                         f"with leaf_modules=[...] and report the model")


def _conv(layer: TracedLayer, m: nn.Conv2d, in_ref, out_ref, max_cfg) -> SlimConv2d:
    depthwise = layer.kind == "depthwise"
    groups = 1 if depthwise else m.groups
    if groups > 1 and not (isinstance(in_ref, int) and isinstance(out_ref, int)) and layer.kind != "grouped":
        raise TraceError(f"conv '{layer.name}' has {groups} groups but the tracer saw a {layer.kind} conv")
    slim = SlimConv2d(in_ref, out_ref, m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding,
                      groups=groups, depthwise=depthwise, bias=m.bias is not None, max_counts=max_cfg)
    slim.dilation = m.dilation
    return slim


def _linear(layer: TracedLayer, m: nn.Linear, in_ref, out_ref, max_cfg) -> SlimLinear:
    """A linear on (N, C) features, or after a channel-major flatten of a feature map (VGG)."""
    per, bias = layer.features_per_channel, m.bias is not None
    if per == 1 or isinstance(in_ref, int):
        in_ref = in_ref if per == 1 else m.in_features
        return SlimLinear(in_ref, out_ref, m.in_features, m.out_features, bias, max_counts=max_cfg)
    return SlimFlattenLinear(in_ref, out_ref, per, m.in_features // per, m.out_features, bias, max_counts=max_cfg)


def _copy_parameters(slim: nn.Module, m: nn.Module) -> None:
    with torch.no_grad():
        for name in ("weight", "bias"):
            theirs = getattr(m, name, None)
            if theirs is not None:
                getattr(slim, name).copy_(theirs)


def _device(m: nn.Module):
    p = next(m.parameters(), None)
    return p.device if p is not None else None


def _dtype(m: nn.Module):
    p = next(m.parameters(), None)
    return p.dtype if p is not None else None
