"""What every slimmable layer knows about itself: the ``SlimModule`` protocol.

A slimmable layer answers, for any channel config, every question the rest of slimnet asks about
it, so the tools loop over modules without knowing the layer kinds:

=====================================  ==========================================================
``activate(cfg)``                      run at ``cfg``'s channels from now on (``SlimNet.set_channels``)
``channel_refs()``                     :class:`LayerRefs`: the refs of its input and output channels
``cost(cfg, in_shape, out_shape)``     :class:`LayerCost` at ``cfg`` (``slimnet.profile``)
``plain(cfg)``                         a new plain ``torch.nn`` layer with exactly ``cfg``'s channels
                                       (the layer a child gets, ``Layers``)
``export_to(child)``                   copy the active config's parameters into ``plain(cfg)``'s
                                       counterpart (``slimnet.export``)
``decay_roles()``                      ``{parameter name: role}`` for its own parameters, a role
                                       from :data:`DECAY_ROLES` (weight-decay grouping)
``permute_channels_(in_i, out_i)``     reorder its parameters' input / output channels in place
                                       (``slimnet.reorder``): position ``k`` takes old ``i[k]``
``embed_(cfg, plain)``                 the inverse of ``export_to``: write a plain layer's parameters
                                       into the places ``cfg`` uses (traced supernets wider than
                                       their model)
=====================================  ==========================================================

Plain ``torch.nn`` layers (those of an exported child, or fixed layers inside a supernet) cannot
carry methods of ours; :func:`decay_roles_of` gives their roles by the same rules.
"""
from __future__ import annotations

import abc
from typing import Iterator, NamedTuple

import torch.nn as nn

from .refs import ChannelRef, ref_groups

#: Weight-decay roles of a parameter; the optimizer config says which roles are decayed.
#: ``norm``: any parameter of a normalization layer; ``bias``: a bias elsewhere; ``depthwise``: the
#: weight of a depthwise conv; ``weight``: every other weight (always decayed).
DECAY_ROLES = ("weight", "bias", "norm", "depthwise")

_PLAIN_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


class LayerRefs(NamedTuple):
    """Channel refs of a layer's input and output (the same ref for BN and pooling)."""

    input: ChannelRef
    output: ChannelRef


class LayerCost(NamedTuple):
    """One layer's cost at a config, in the convention of ``slimnet.profile``: conv / linear
    multiply-accumulates, parameters of the exported layer, average-pooling adds kept apart."""

    macs: int
    params: int
    pool_macs: int


class SlimModule(abc.ABC):
    """Mixin of every slimmable layer: a module whose active channels follow the model's config.

    ``cost`` reads the layer's static description (refs, kernel, groups, bias) and the spatial
    sizes of ``in_shape`` / ``out_shape`` (the shapes traced at the max config, ``(N, C, H, W)``
    or ``(N, C)``); channel counts always come from ``cfg``, never from the active state.
    """

    @abc.abstractmethod
    def activate(self, cfg) -> None:
        """Store the active channel counts (and places) of ``cfg``."""

    @abc.abstractmethod
    def channel_refs(self) -> LayerRefs:
        """The channel refs of this layer's input and output."""

    @abc.abstractmethod
    def cost(self, cfg, in_shape: tuple, out_shape: tuple) -> LayerCost:
        """MACs, parameters and pooling adds of this layer at ``cfg``."""

    @abc.abstractmethod
    def plain(self, cfg) -> nn.Module:
        """A new plain ``torch.nn`` layer computing this layer at ``cfg`` (freshly initialised)."""

    @abc.abstractmethod
    def export_to(self, child: nn.Module) -> None:
        """Copy the parameters used at the active config into ``child`` (made by ``plain``)."""

    @abc.abstractmethod
    def decay_roles(self) -> dict[str, str]:
        """``{name: role}`` for each of this module's own parameters (see :data:`DECAY_ROLES`)."""

    def permute_channels_(self, in_index, out_index) -> None:
        """Reorder the input / output channels of this layer's parameters in place: new position
        ``k`` holds old channel ``index[k]`` (an index over the tensor at the max config; None
        leaves that side as it is). Layers with parameters implement it."""
        raise TypeError(f"{type(self).__name__} cannot reorder its channels")

    def embed_(self, cfg, plain: nn.Module) -> None:
        """Write ``plain``'s parameters (a plain layer with exactly ``cfg``'s channels) into the
        places ``cfg`` uses: the inverse of ``export_to``. Layers with parameters implement it."""
        raise TypeError(f"{type(self).__name__} cannot take a plain layer's parameters")


def plain_decay_roles(module: nn.Module) -> dict[str, str]:
    """Decay roles of a plain ``torch.nn`` module's own parameters: every parameter of a norm is
    ``norm``; otherwise a bias is ``bias`` and the weight of a depthwise conv (groups = input =
    output channels > 1) is ``depthwise``."""
    roles = {}
    depthwise = isinstance(module, nn.Conv2d) and 1 < module.groups == module.in_channels == module.out_channels
    for name, _ in module.named_parameters(recurse=False):
        if isinstance(module, _PLAIN_NORMS):
            roles[name] = "norm"
        elif name == "bias":
            roles[name] = "bias"
        else:
            roles[name] = "depthwise" if depthwise else "weight"
    return roles


def decay_roles_of(module: nn.Module) -> dict[str, str]:
    """Decay roles of ``module``'s own parameters, slimmable or plain."""
    return module.decay_roles() if isinstance(module, SlimModule) else plain_decay_roles(module)


def parameters_with_decay_roles(net: nn.Module) -> Iterator[tuple[nn.Parameter, str]]:
    """``(parameter, role)`` for every parameter of ``net``, module by module in ``net.modules()``
    order (each module's own parameters in registration order, as ``net.parameters()``)."""
    for module in net.modules():
        roles = decay_roles_of(module)
        for name, param in module.named_parameters(recurse=False):
            yield param, roles[name]


def groups_used(module: nn.Module) -> set[str]:
    """Names of the channel groups the slimmable layers in ``module`` (itself included) read or write."""
    names = set()
    for m in module.modules():
        if isinstance(m, SlimModule):
            for ref in m.channel_refs():
                names.update(ref_groups(ref))
    return names
