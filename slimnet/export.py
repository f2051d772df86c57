"""Turn a supernet config into a standalone plain model, and save / load such children."""
from __future__ import annotations

import json
import os
import warnings

import torch
import torch.nn as nn

from .models import SlimNet, build
from .nn import SlimModule
from .utils import atomic_path, atomic_torch_save, atomic_write_text, safe_torch_load


@torch.no_grad()
def export(supernet: SlimNet, config=None) -> SlimNet:
    """A plain ``torch.nn`` model with exactly ``config``'s channels (default: the active config).

    The child is the model definition built with ``channels=config`` (each of its layers is the
    supernet layer's ``plain(config)``); every slimmable layer then copies the parameters it uses
    at ``config`` into its namesake (``SlimModule.export_to``): weights from the supernet's
    slices, BN parameters and statistics from the config's switchable BN or its calibrated
    statistics. The child has the supernet's device and
    dtype, is returned in eval mode, and its outputs equal the supernet's at ``config`` (eval mode).
    """
    if not isinstance(supernet, SlimNet) and callable(getattr(supernet, "export", None)):
        return supernet.export(config)    # a traced supernet (slimnet.slimmable) is in no registry
    if supernet.is_child:
        raise ValueError("export() takes a supernet; this model is already an exported child")
    cfg = supernet.active_config if config is None else supernet.space.config(config)
    previous = supernet.active_config
    first = next(supernet.parameters())
    child = type(supernet)(**supernet.arch, channels=cfg).to(device=first.device, dtype=first.dtype)
    child_modules = dict(child.named_modules())
    try:
        supernet.set_channels(cfg)
        for name, module in supernet.named_modules():
            if isinstance(module, SlimModule):
                module.export_to(child_modules[name])
    finally:
        supernet.set_channels(previous)
    return child.eval()


def child_config_dict(child: nn.Module) -> dict:
    """The JSON-ready config of an exported child (a hand-written model's or a traced one's)."""
    if not getattr(child, "is_child", False) or getattr(child, "child_config", None) is None:
        supernet = " supernet" if hasattr(child, "space") else ""
        raise ValueError(f"expected an exported child (slimnet.export(...)), got {type(child).__name__}{supernet}")
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
    blob = safe_torch_load(path, "slimnet child file (written by slimnet export / save_child)", map_location,
                           hint=f"e.g. {os.path.join(os.fspath(path), 'child.pt')}")
    if not isinstance(blob, dict) or blob.get("format") != "slimnet-child-v1":
        hint = " (it is a supernet checkpoint: use --checkpoint / load_supernet)" if isinstance(blob, dict) and \
            blob.get("format") == "slimnet-ckpt-v1" else ""
        raise ValueError(f"{path} is not a slimnet child file (written by slimnet export / save_child){hint}")
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


# ---------------------------------------------------------------------------------------------
# deployable formats: TorchScript and ONNX, each checked against the PyTorch child
# ---------------------------------------------------------------------------------------------
def export_torchscript(child: nn.Module, path: str | os.PathLike, example: torch.Tensor, atol: float = 1e-5) -> float:
    """Trace ``child`` (eval mode) on ``example``, check the traced outputs equal the child's on
    ``example`` (max abs diff <= ``atol``), save atomically. Returns the max abs difference."""
    path = os.fspath(path)
    child = child.eval()
    with torch.no_grad():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated but still the portable format
            traced = torch.jit.trace(child, example, check_trace=False)
        diff = (traced(example) - child(example)).abs().max().item()
    if not diff <= atol:
        raise RuntimeError(f"TorchScript outputs differ from the PyTorch child by {diff:.3g} (> {atol})")
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(traced, tmp)
    return diff


def _onnx_modules():
    try:
        import onnx
        import onnxruntime
    except ImportError as e:
        raise RuntimeError(f"ONNX export needs the onnx and onnxruntime packages ({e.name} is missing): "
                           "pip install slimnet[onnx]") from None
    return onnx, onnxruntime


def export_onnx(child: nn.Module, path: str | os.PathLike, example: torch.Tensor, atol: float = 1e-4,
                opset: int = 17) -> float:
    """Export ``child`` to ONNX (dynamic batch size), validate the graph with ``onnx.checker``
    and compare onnxruntime's outputs with PyTorch's on ``example`` (max abs diff <= ``atol``,
    else RuntimeError). Returns the max abs difference."""
    onnx, ort = _onnx_modules()
    child = child.eval()
    with atomic_path(path, suffix=".onnx") as tmp:
        with torch.no_grad(), warnings.catch_warnings():
            kwargs = dict(input_names=["images"], output_names=["logits"], opset_version=opset,
                          dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}})
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=FutureWarning)
            try:  # the TorchScript-based exporter: no extra dependency (the dynamo one needs onnxscript)
                torch.onnx.export(child, (example,), tmp, dynamo=False, **kwargs)
            except TypeError:  # older torch without the ``dynamo`` argument
                torch.onnx.export(child, (example,), tmp, **kwargs)
            expected = child(example).cpu().numpy()
        onnx.checker.check_model(onnx.load(tmp))
        session = ort.InferenceSession(tmp, providers=["CPUExecutionProvider"])
        got = session.run(None, {"images": example.detach().cpu().numpy()})[0]
        diff = float(abs(got - expected).max())
        if not diff <= atol:
            raise RuntimeError(f"ONNX Runtime outputs differ from the PyTorch child by {diff:.3g} (> {atol})")
    return diff


def check_export(supernet: SlimNet, child: nn.Module, config, example: torch.Tensor) -> float:
    """Max abs output difference between the supernet at ``config`` and the exported child
    (both in eval mode), restoring the supernet's config and train/eval mode."""
    previous, was_training = supernet.active_config, supernet.training
    try:
        supernet.set_channels(config)
        return max_abs_diff(supernet, child, example)
    finally:
        supernet.set_channels(previous)
        supernet.train(was_training)
