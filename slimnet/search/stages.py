"""The model as a pipeline of stages, for prefix reuse.

A candidate that changes channel group ``g`` only changes the stages from the first one that
refers to ``g``: the stages before it run once at the current config and their outputs are
shared by every candidate. The stages are the model's own declaration (``SlimNet.search_stages()``:
its trunk blocks, then its head); the scorer checks numerically that they compose to the
model's forward.
"""
from __future__ import annotations

import warnings
from typing import Sequence

import torch.nn as nn

from ..nn import groups_used


def model_stages(net: nn.Module) -> list[nn.Module]:
    """``net.search_stages()``, or ``[net]`` (a full forward per candidate) with a warning naming the
    model's class when it declares none."""
    declare = getattr(net, "search_stages", None)
    stages = declare() if callable(declare) else None
    if not stages:
        warnings.warn(f"{type(net).__name__} declares no stages (SlimNet.trunk() and head(), or its own search_stages()): "
                      "searching without prefix reuse, a full forward per candidate")
        return [net]
    return list(stages)


def stage_groups(stage: nn.Module) -> set[str]:
    """The channel groups the slimmable layers of ``stage`` refer to (their ``channel_refs()``)."""
    return groups_used(stage)


def first_stages(stages: Sequence[nn.Module]) -> dict[str, int]:
    """Channel group -> index of the first stage that refers to it."""
    first: dict[str, int] = {}
    for i, stage in enumerate(stages):
        for g in stage_groups(stage):
            first.setdefault(g, i)
    return first
