"""Slimmable layers.

Each layer is allocated at its maximum width and runs at the active channel counts by using the
part of its weight that belongs to the active channels. A layer names its channels by a *channel
ref*: an ``int`` (fixed, e.g. the 3 input channels or the number of classes), a group name
``str``, a tuple of group names whose counts add up (a concatenation), or a :class:`PerGroup`
(a tensor read or written by grouped convs, laid out group by group). The active counts are set
on the layer by its model (``SlimNet.set_channels``), never read from global state.

**Coherent sharing.** Every channel of every tensor has one place in the tensor at the max config,
and at any config the active tensor holds a fixed subset of those channels (``channel_index``).
Every layer indexes its parameters by those places, so a weight element used by two configs
connects the same input channel to the same output channel in both. For a group name the active
channels are the leading ones, and the layer uses the leading slice of its weight: a view, never a
copy. Concatenations and per-group tensors keep the leading channels of each part (of each
group's share), which is not a leading slice of the whole tensor: those layers gather their
active rows / columns (``index_select``, a copy of the used weights only).
"""
from .bn import (
    BNStatistics,
    CalibratableBN,
    SlimBatchNorm2d,
    StatsCollector,
    SwitchableBatchNorm2d,
    calibrated_stats,
    is_calibrated_stat,
    restore_calibrated_stats,
)
from .builder import Layers
from .layers import SlimAdaptiveAvgPool2d, SlimAvgPool2d, SlimConv2d, SlimLinear
from .protocol import (
    DECAY_ROLES,
    LayerCost,
    LayerRefs,
    SlimModule,
    decay_roles_of,
    groups_used,
    parameters_with_decay_roles,
    plain_decay_roles,
)
from .refs import ChannelRef, PerGroup, channel_index, ref_groups, resolve, take

__all__ = [
    "BNStatistics", "CalibratableBN", "ChannelRef", "DECAY_ROLES", "LayerCost", "LayerRefs", "Layers", "PerGroup",
    "SlimAdaptiveAvgPool2d", "SlimAvgPool2d", "SlimBatchNorm2d", "SlimConv2d", "SlimLinear", "SlimModule",
    "StatsCollector", "SwitchableBatchNorm2d", "calibrated_stats", "channel_index", "decay_roles_of", "groups_used",
    "is_calibrated_stat", "parameters_with_decay_roles", "plain_decay_roles", "ref_groups", "resolve",
    "restore_calibrated_stats", "take",
]
