"""Supernet checkpoints: one format shared by training, calibration, search, export, evaluation.

A checkpoint is a dict saved atomically with ``torch.save``::

    {"format": "slimnet-ckpt-v1",
     "model": {"name": "mobilenet_v2", "kwargs": {...build() keyword arguments, JSON-like...}},
     "model_state": state_dict,          # includes calibrated BN statistics
     "config": {...resolved experiment config...},
     "epoch": int, "step": int, ...       # training state (optimizer, scheduler, rng, ...) when saved by training
    }
"""
from __future__ import annotations

import os

import torch

from .models import SlimNet, build
from .utils import atomic_torch_save

FORMAT = "slimnet-ckpt-v1"


def model_spec(net: SlimNet) -> dict:
    """The ``build()`` call that recreates ``net``'s supernet (JSON-like values only)."""
    kwargs = {k: v for k, v in net.arch.items()}
    from .models import MODELS
    for fixed in MODELS[net.space.model][1]:
        kwargs.pop(fixed, None)
    kwargs["bn"] = net.bn_mode
    if net.switchable_configs:
        kwargs["switchable"] = [dict(cfg.channels) for cfg in net.switchable_configs]
    if net.is_child:  # a fixed child trained alone (train.mode fixed): rebuild exactly that child
        kwargs["channels"] = dict(net.child_config.channels)
    return {"name": net.space.model, "kwargs": kwargs}


def save_checkpoint(path: str | os.PathLike, net: SlimNet, **extra) -> None:
    """Atomically write ``net`` (unwrapped from DDP/compile by the caller) plus ``extra`` entries."""
    state = {"format": FORMAT, "model": model_spec(net), "model_state": net.state_dict(), **extra}
    atomic_torch_save(state, path)


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # corrupt or foreign files
        raise ValueError(f"{path} could not be read as a checkpoint: {e}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        hint = " (an exported child: use slimnet.load_child)" if isinstance(ckpt, dict) and \
            ckpt.get("format") == "slimnet-child-v1" else ""
        raise ValueError(f"{path} is not a slimnet supernet checkpoint{hint}")
    return ckpt


def load_supernet(path: str | os.PathLike, map_location="cpu") -> tuple[SlimNet, dict]:
    """Rebuild the supernet stored in a checkpoint; returns (net, checkpoint dict)."""
    ckpt = load_checkpoint(path, map_location)
    spec = ckpt["model"]
    net = build(spec["name"], **spec["kwargs"])
    net.load_state_dict(ckpt["model_state"])
    return net.to(map_location if isinstance(map_location, (str, torch.device)) else "cpu"), ckpt
