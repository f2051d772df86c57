"""Models named by where they come from: ``torchvision:NAME``, ``timm:NAME`` or ``package.module:function``.

``build_source(name, num_classes=, in_channels=, **kwargs)`` makes the ``nn.Module`` (random weights
unless the user's own function or kwargs load some: nothing here downloads) with the dataset's
classes and input channels:

* ``torchvision:resnet18``: ``torchvision.models.get_model(name, weights=None, num_classes=..., **kwargs)``;
* ``timm:mobilenetv3_large_100``: ``timm.create_model(name, pretrained=False, num_classes=...,
  in_chans=..., **kwargs)`` (timm is an optional extra);
* ``my_package.my_module:build_fn``: ``build_fn(**kwargs)``, plus ``num_classes`` when its
  signature takes it (by name or ``**kwargs``) and ``in_channels`` when it names it; the module is
  imported from ``sys.path`` or the working directory (as ``python -m`` would, also under the
  ``slimnet`` console script).

A model whose first conv reads 3 channels while the data has another count gets that conv
adapted (``adapt_input_conv``): for 1 channel its weights summed over the input channels (a
grey image seen as R = G = B gives the same output), otherwise the RGB weights repeated and
rescaled. A model whose output does not have ``num_classes`` logits is refused, with the fix.
"""
from __future__ import annotations

import difflib
import importlib
import inspect
import os
import sys

import torch
import torch.nn as nn

from ..errors import TraceError

__all__ = ["build_source", "adapt_input_conv"]


def _closest(name: str, names) -> str:
    close = difflib.get_close_matches(name, list(names), n=3)
    return f"; did you mean {', '.join(close)}?" if close else ""


def _torchvision(name: str, num_classes: int, kwargs: dict) -> nn.Module:
    import torchvision.models as tvm
    names = tvm.list_models(module=tvm)        # the classification models
    if name not in names:
        raise TraceError(f"torchvision has no classification model {name!r}{_closest(name, names)} "
                         f"(see torchvision.models.list_models(module=torchvision.models))")
    kwargs = {"weights": None, **kwargs}
    return tvm.get_model(name, num_classes=num_classes, **kwargs)


def _timm(name: str, num_classes: int, in_channels: int, kwargs: dict) -> nn.Module:
    try:
        import timm
    except ImportError:
        raise TraceError(f"'timm:{name}' needs timm, which is not installed: pip install timm "
                         "(or pip install -e '.[timm]')") from None
    if not timm.is_model(name):
        raise TraceError(f"timm has no model {name!r}{_closest(name, timm.list_models())}")
    kwargs = {"pretrained": False, **kwargs}
    return timm.create_model(name, num_classes=num_classes, in_chans=in_channels, **kwargs)


def _function(name: str, num_classes: int, in_channels: int, kwargs: dict) -> nn.Module:
    module_name, _, fn_name = name.rpartition(":")
    if not module_name or not fn_name:
        raise TraceError(f"{name!r} is not 'torchvision:NAME', 'timm:NAME' or 'package.module:function'")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())      # the working directory, as under `python -m`
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise TraceError(f"cannot import module {module_name!r} of {name!r} ({err}); it must be "
                         "importable from the working directory or PYTHONPATH") from None
    fn = getattr(module, fn_name, None)
    if fn is None or not callable(fn):
        public = [n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n))]
        what = "has no" if fn is None else "has a non-callable"
        raise TraceError(f"module {module_name!r} {what} {fn_name!r}{_closest(fn_name, public)}")
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    extra = {"num_classes": num_classes} if "num_classes" in params or takes_any else {}
    if "in_channels" in params:     # otherwise the first conv is adapted (a **kwargs factory may refuse it)
        extra["in_channels"] = in_channels
    args = {**extra, **kwargs}
    try:
        model = fn(**args)
    except TypeError as err:
        raise TraceError(f"{name}({', '.join(f'{k}={v!r}' for k, v in args.items())}) failed: {err}; "
                         "give the arguments it takes in model.kwargs") from None
    if not isinstance(model, nn.Module):
        raise TraceError(f"{name} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def build_source(name: str, num_classes: int, in_channels: int = 3, leaf_modules=(), **kwargs) -> nn.Module:
    """The model ``name`` names (see the module docstring), in eval mode, with ``in_channels``
    input channels; ``TraceError`` with the reason and the fix when it cannot be made.
    ``leaf_modules``: what the tracer keeps whole (for finding the first conv)."""
    source, _, model_name = name.partition(":")
    if source == "torchvision":
        model = _torchvision(model_name, num_classes, kwargs)
    elif source == "timm":
        model = _timm(model_name, num_classes, in_channels, kwargs)
    else:
        model = _function(name, num_classes, in_channels, kwargs)
    if source != "timm":           # timm made its stem for in_chans already
        adapt_input_conv(model, in_channels, name, leaf_modules)
    return model.eval()


def _first_conv(model: nn.Module, leaf_modules=()) -> tuple[str, nn.Conv2d] | None:
    """(qualified name, module) of the conv the input goes into first (None: fx cannot trace the
    model, which the tracer proper reports with details later, or the input meets no conv)."""
    from .graph import trace
    try:
        graph = trace(model, leaf_modules).graph
    except TraceError:
        return None
    modules = dict(model.named_modules())
    todo = [n for n in graph.nodes if n.op == "placeholder"]
    seen = set()
    while todo:
        node = todo.pop(0)
        for user in node.users:
            if user in seen:
                continue
            seen.add(user)
            if user.op == "call_module" and isinstance(modules.get(user.target), nn.Conv2d):
                return user.target, modules[user.target]
            todo.append(user)
    return None


@torch.no_grad()
def adapt_input_conv(model: nn.Module, in_channels: int, name: str = "the model", leaf_modules=()) -> None:
    """Make the first conv of ``model`` read ``in_channels`` channels (in place; see the module
    docstring); nothing when it already does. The conv keeps its class (a ``Conv2d`` subclass
    such as timm's ``StdConv2d`` keeps its behaviour): only its weight and ``in_channels`` change."""
    found = _first_conv(model, leaf_modules)
    if found is None:
        return
    target, conv = found
    if conv.in_channels == in_channels:
        return
    if conv.groups != 1:
        raise TraceError(f"{name}: its first conv '{target}' is grouped and reads {conv.in_channels} channels; "
                         f"the data has {in_channels}")
    w = conv.weight
    if in_channels == 1:
        new = w.sum(dim=1, keepdim=True)
    else:
        reps = -(-in_channels // w.shape[1])
        new = w.repeat(1, reps, 1, 1)[:, :in_channels] * (w.shape[1] / in_channels)
    conv.weight = nn.Parameter(new.contiguous(), requires_grad=w.requires_grad)
    conv.in_channels = in_channels
