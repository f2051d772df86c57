"""The slimmable counterpart of every traced layer, holding the model's parameters.

``slim_layers(gm, traced, max_cfg, base_cfg, bn, switchable)``: for each traced conv / linear / BN
of the fx graph ``gm``, the slimmable layer with the tracer's channel refs, sized at ``max_cfg``,
holding the original module's parameters at the places of ``base_cfg`` (the model's own widths:
the max config itself unless the supernet is wider than the model, whose extra channels start
freshly initialised; a ref all of whose groups are fixed becomes its channel count). BN is
universal (shared, calibrated; the model's running statistics become the max config's, unless
they are still those of its initialisation), shared
(one set of running statistics, the model's) or switchable (one private BN per config, each
starting from the model's BN at that config's channels).
"""
from __future__ import annotations

import copy

import torch
import torch.fx as fx
import torch.nn as nn

from ..nn import SlimBatchNorm2d, SlimConv2d, SlimLinear, SwitchableBatchNorm2d, ref_groups, resolve
from ..nn.refs import ChannelRef
from ..space import ChannelConfig
from .graph import TraceError
from .groups import TracedGroups, TracedLayer
from .layers import SlimFlattenLinear


class _Built(dict):
    """name -> slimmable layer, with ``stats`` (BN layer -> the original running mean / var)."""

    def __init__(self):
        super().__init__()
        self.stats: dict = {}


def targets(gm: fx.GraphModule):
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


def modules_for(gm: fx.GraphModule, layers: _Built) -> dict:
    """The GraphModule's root: the slimmable layers, and a deep copy of every other target."""
    return {name: layers[name] if name in layers else copy.deepcopy(m) for name, m in targets(gm)}


def slim_layers(gm: fx.GraphModule, traced: TracedGroups, max_cfg: ChannelConfig, base_cfg: ChannelConfig,
                bn: str = "universal", switchable: list = ()) -> _Built:
    """name -> slimmable layer of every traced layer that has one (see the module docstring)."""
    fixed = {g.name for g in traced.fixed()}
    built = _Built()
    for layer in traced.layers:
        if layer.name in built:
            continue        # a layer called twice: one module (the tracer tied its calls' channels)
        m = _get(gm, layer.name)
        slim = _slim_layer(layer, m, fixed, max_cfg, base_cfg, bn, switchable)
        if slim is None:
            continue
        if isinstance(slim, SlimBatchNorm2d) and not slim.track_shared_stats and _has_seen_data(m):
            built.stats[slim] = (m.running_mean.detach().clone(), m.running_var.detach().clone())
        built[layer.name] = slim
    return built


def _has_seen_data(bn: nn.BatchNorm2d) -> bool:
    """Whether a BN's running statistics come from data (trained or loaded weights), not from its
    initialisation (mean 0, variance 1, no batch tracked): only those become the max config's."""
    if bn.running_mean is None or bn.running_mean.is_meta:     # a meta-device model has no values at all
        return False
    fresh = (bn.num_batches_tracked is None or int(bn.num_batches_tracked) == 0) and \
        bool((bn.running_mean == 0).all()) and bool((bn.running_var == 1).all())
    return not fresh


def _ref(ref: ChannelRef, fixed: set, max_cfg: ChannelConfig) -> ChannelRef:
    """A ref whose groups are all fixed becomes its channel count (an int: no slicing, no gather)."""
    return resolve(ref, max_cfg) if all(g in fixed for g in ref_groups(ref)) else ref


def _slim_layer(layer: TracedLayer, m: nn.Module, fixed: set, max_cfg: ChannelConfig, base_cfg: ChannelConfig,
                bn: str, switchable: list) -> nn.Module | None:
    """The slimmable counterpart of one traced layer, with ``m``'s parameters; None for a layer kind
    not supported yet whose channels are all fixed (it stays as it is); TraceError otherwise."""
    in_ref, out_ref = _ref(layer.input, fixed, max_cfg), _ref(layer.output, fixed, max_cfg)
    _check_counts(layer, m, base_cfg)
    if type(m) is nn.Conv2d and m.padding_mode == "zeros":
        slim = _conv(layer, m, in_ref, out_ref, max_cfg)
    elif type(m) is nn.Linear:
        slim = _linear(layer, m, in_ref, out_ref, max_cfg)
    elif type(m) is nn.BatchNorm2d:
        slim = _batch_norm(m, out_ref, max_cfg, base_cfg, bn, switchable)
    elif isinstance(in_ref, int) and isinstance(out_ref, int):
        return None
    else:
        raise TraceError(f"layer '{layer.name}' ({type(m).__name__}, {layer.kind}) cannot be slimmed yet "
                         f"(supported: nn.Conv2d with zero padding, nn.Linear, nn.BatchNorm2d); "
                         f"pin its channels with fixed=['{layer.name}']")
    slim = slim.to(device=_device(m), dtype=_dtype(m))
    if not isinstance(slim, SwitchableBatchNorm2d):      # its private BNs got theirs when made
        slim.embed_(base_cfg, m)
        slim.activate(max_cfg)
    return slim


def _check_counts(layer: TracedLayer, m: nn.Module, base_cfg: ChannelConfig) -> None:
    """The traced refs at the model's own widths must give the module's channel counts (else the
    tracer went wrong)."""
    sizes = {nn.Conv2d: ("in_channels", "out_channels"), nn.Linear: ("in_features", "out_features"),
             nn.BatchNorm2d: ("num_features", "num_features")}.get(type(m))
    if sizes is None:
        return
    traced = (resolve(layer.input, base_cfg) * layer.features_per_channel, resolve(layer.output, base_cfg))
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
    slim = SlimConv2d(in_ref, out_ref, resolve(in_ref, max_cfg), resolve(out_ref, max_cfg), m.kernel_size, m.stride,
                      m.padding, groups=groups, depthwise=depthwise, bias=m.bias is not None, max_counts=max_cfg)
    slim.dilation = m.dilation
    return slim


def _linear(layer: TracedLayer, m: nn.Linear, in_ref, out_ref, max_cfg) -> SlimLinear:
    """A linear on (N, C) features, or after a channel-major flatten of a feature map (VGG)."""
    per, bias = layer.features_per_channel, m.bias is not None
    out_max = resolve(out_ref, max_cfg)
    if per == 1 or isinstance(in_ref, int):
        in_ref = in_ref if per == 1 else m.in_features
        return SlimLinear(in_ref, out_ref, resolve(in_ref, max_cfg), out_max, bias, max_counts=max_cfg)
    return SlimFlattenLinear(in_ref, out_ref, per, resolve(in_ref, max_cfg), out_max, bias, max_counts=max_cfg)


def _batch_norm(m: nn.BatchNorm2d, ref, max_cfg, base_cfg, bn: str, switchable: list) -> nn.Module:
    if bn == "switchable":      # each private BN starts as the model's BN at its config's channels
        slim = SwitchableBatchNorm2d(ref, switchable, m.eps, m.momentum)
        as_max = SlimBatchNorm2d(ref, resolve(ref, max_cfg), track_shared_stats=True, max_counts=max_cfg).to(_device(m))
        as_max.embed_(base_cfg, m)              # the model's parameters and statistics at the max size
        with torch.no_grad():
            for private, cfg in zip(slim.bns, switchable):
                as_max.activate(cfg)
                for name in ("weight", "bias", "running_mean", "running_var"):
                    getattr(private, name).copy_(as_max._take(getattr(as_max, name)))
        return slim
    shared = bn == "shared"
    return SlimBatchNorm2d(ref, resolve(ref, max_cfg), m.eps, m.momentum, track_shared_stats=shared,
                           max_counts=max_cfg)


def _device(m: nn.Module):
    p = next(m.parameters(), None)
    return p.device if p is not None else None


def _dtype(m: nn.Module):
    p = next(m.parameters(), None)
    return p.dtype if p is not None else None
