"""Turn a supernet config into a standalone plain model, and save / load such children."""
from __future__ import annotations

import json
import os

import torch
import torch.nn as nn

from .models import SlimNet, build
from .nn import SlimModule
from .utils import atomic_torch_save, atomic_write_text


@torch.no_grad()
def export(supernet: SlimNet, config=None) -> SlimNet:
    """A plain ``torch.nn`` model with exactly ``config``'s channels (default: the active config).

    Weights are copied from the supernet's slices; BN parameters and statistics come from the
    config's switchable BN or its calibrated statistics. The child is returned in eval mode and
    its outputs equal the supernet's at ``config`` (eval mode).
    """
    if supernet.is_child:
        raise ValueError("export() takes a supernet; this model is already an exported child")
    cfg = supernet.active_config if config is None else supernet.space.config(config)
    previous = supernet.active_config
    device = next(supernet.parameters()).device
    child = type(supernet)(**supernet.arch, channels=cfg).to(device)
    child_modules = dict(child.named_modules())
    try:
        supernet.set_channels(cfg)
        for name, module in supernet.named_modules():
            if isinstance(module, SlimModule):
                module.export_to(child_modules[name])
    finally:
        supernet.set_channels(previous)
    return child.eval()


def child_config_dict(child: SlimNet) -> dict:
    if not isinstance(child, SlimNet) or not child.is_child:
        raise ValueError("expected an exported child (slimnet.export(...)), got "
                         f"{type(child).__name__}{' supernet' if isinstance(child, SlimNet) else ''}")
    return child.child_config.to_dict()


def save_child(child: SlimNet, path: str | os.PathLike) -> None:
    """Write ``path`` (state dict + config, loadable with ``torch.load(weights_only=True)``) and a
    human-readable ``<path>.json`` beside it. Both writes are atomic."""
    path = os.fspath(path)
    config = child_config_dict(child)
    state = {k: v.detach().cpu() for k, v in child.state_dict().items()}
    atomic_torch_save({"format": "slimnet-child-v1", "config": config, "state_dict": state}, path)
    atomic_write_text(os.path.splitext(path)[0] + ".json", json.dumps(config, indent=2) + "\n")


def load_child(path: str | os.PathLike, map_location="cpu") -> SlimNet:
    """Rebuild a child saved by ``save_child`` (no pickled classes involved) in eval mode."""
    blob = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(blob, dict) or blob.get("format") != "slimnet-child-v1":
        raise ValueError(f"{path} is not a slimnet child file (written by slimnet.save_child)")
    config = dict(blob["config"])
    name = config.pop("model")
    channels = config.pop("channels")
    config.pop("macs", None)
    config.pop("params", None)
    from .models import MODELS
    for fixed in MODELS.get(name, (None, {}))[1]:
        config.pop(fixed, None)
    child = build(name, **config, channels=channels)
    child.load_state_dict(blob["state_dict"])
    return child.eval()


def max_abs_diff(a: nn.Module, b: nn.Module, x: torch.Tensor) -> float:
    """Largest absolute output difference of two models on ``x`` (both in eval mode)."""
    with torch.no_grad():
        return (a.eval()(x) - b.eval()(x)).abs().max().item()
