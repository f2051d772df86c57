"""Supernet checkpoints: one format shared by training, calibration, search, export, evaluation.

A checkpoint is a dict saved atomically with ``torch.save``::

    {"format": "slimnet-ckpt-v1",
     "model": {"name": "mobilenet_v2", "kwargs": {...build() keyword arguments, JSON-like...}},
     "model_state": state_dict,          # includes calibrated BN statistics
     "config": {...resolved experiment config...},
     "epoch": int, "step": int, ...       # training state (optimizer, scheduler, rng, ...) when saved by training
    }

Everything in it is a tensor, number, string, bool, None, list, tuple or dict (RNG states too:
see ``slimnet.train``), so it loads with ``torch.load(weights_only=True)``: no class is
unpickled and a file carrying a pickle payload is refused before anything in it runs.
``save_checkpoint`` refuses other types (a programming error caught at save time, not at resume)
and non-finite values (a diverged model is never written).
"""
from __future__ import annotations

import hashlib
import os

import torch

from .errors import NonFiniteError
from .models import SlimNet, build
from .nn import is_calibrated_stat
from .utils import atomic_torch_save, plain, safe_torch_load

FORMAT = "slimnet-ckpt-v1"


def model_spec(net: SlimNet) -> dict:
    """The ``build()`` call that recreates ``net``'s supernet (JSON-like values only)."""
    kwargs = {k: v for k, v in net.arch.items()}
    from .models import MODELS
    for fixed in MODELS.get(net.space.model, (None, {}))[1]:
        kwargs.pop(fixed, None)
    kwargs["bn"] = net.bn_mode
    if net.switchable_configs:
        kwargs["switchable"] = [dict(cfg.channels) for cfg in net.switchable_configs]
    if net.is_child:  # a fixed child trained alone (train.mode fixed): rebuild exactly that child
        kwargs["channels"] = dict(net.child_config.channels)
    return {"name": net.space.model, "kwargs": kwargs}


def nonfinite_entries(state: dict) -> list[str]:
    """Names of the floating-point tensors of a state dict holding NaN or inf (one host sync)."""
    names = [k for k, v in state.items() if isinstance(v, torch.Tensor) and v.is_floating_point() and v.numel()]
    if not names:
        return []
    flags = torch.stack([torch.isfinite(state[k]).all().to("cpu", non_blocking=True) for k in names])
    if bool(flags.all()):
        return []
    return [k for k, ok in zip(names, flags.tolist()) if not ok]


def save_checkpoint(path: str | os.PathLike, net: SlimNet, **extra) -> None:
    """Atomically write ``net`` (unwrapped from DDP/compile by the caller) plus ``extra`` entries.
    Raises :class:`NonFiniteError` (writing nothing) when the model holds NaN / inf."""
    model_state = net.state_dict()
    bad = nonfinite_entries(model_state)
    if bad:
        raise NonFiniteError(f"not writing {path}: the model holds non-finite values in {len(bad)} tensor(s) "
                             f"({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''})")
    state = {"format": FORMAT, "model": model_spec(net), "model_state": model_state,
             **plain(extra, "checkpoint entry")}
    atomic_torch_save(state, path)


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Read a supernet checkpoint with ``torch.load(weights_only=True)``: a file that is not one
    (including a pickle payload that would run code) raises ValueError; nothing in it runs."""
    ckpt = safe_torch_load(path, "slimnet supernet checkpoint", map_location,
                           hint=f"e.g. {os.path.join(os.fspath(path), 'best.pt')}")
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


def weights_fingerprint(net) -> str:
    """A hash of what a search depends on: every parameter and BN buffer of ``net`` (names, shapes,
    dtypes, values), except per-config calibrated statistics (``nn.is_calibrated_stat``). Calibrating
    a config adds those without changing anything a search computes; training changes the
    parameters (and a shared-BN net's running statistics), so the fingerprint."""
    h = hashlib.sha256()
    for name, t in sorted(net.state_dict().items()):
        if is_calibrated_stat(name):
            continue
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]
