"""``build("torchvision:NAME" | "timm:NAME" | "package.module:function", ...)``: a traced model as a
registry model, so configs (``model.name``), checkpoints and every tool take it like a hand-written one.

The model comes from :func:`~slimnet.trace.sources.build_source` (random weights, the dataset's
classes and input channels), is traced at ``input_size`` and becomes a :class:`TracedSupernet`
whose space is named ``name`` and whose ``arch`` is this call's arguments, so
``build(net.space.model, **net.arch)`` makes it again (``load_supernet``, ``load_child`` and
channel JSONs rely on it). With ``channels=`` the result is the plain child of that config
(:class:`TracedChild`) with fresh BN statistics, to train alone (``train.mode: fixed``).
``fixed`` / ``leaf_modules`` (layer or group names) go to the tracer.
"""
from __future__ import annotations

from typing import Iterable, Mapping

from ..errors import TraceError
from ..models.base import DEFAULT_MIN_WIDTH
from ..utils import plain
from .sources import build_source
from .supernet import TracedChild, TracedSupernet

__all__ = ["build_traced"]


def build_traced(name: str, *, num_classes: int = 1000, in_channels: int = 3, input_size: int = 224,
                 max_width: float = 1.0, min_width: float | None = None, bn: str = "universal",
                 switchable: Iterable | None = None, channels: Mapping | None = None,
                 fixed: Iterable[str] = (), leaf_modules: Iterable[str] = (), **kwargs) -> TracedSupernet | TracedChild:
    """The supernet (or, with ``channels``, the plain child) of the model ``name`` names. The other
    keyword arguments go to the model's constructor; they must be plain data (numbers, strings,
    lists, dicts), since checkpoints store them to build the model again."""
    if name.startswith("traced:"):
        raise TraceError(f"{name!r} was made by slimnet.slimmable(model) from a Python object, which no name can "
                         "make again: call slimnet.slimmable(model, ...) yourself and load the saved weights into "
                         "it, or name the model as 'package.module:function' so slimnet can build it")
    _check_spec(name, kwargs, leaf_modules, channels, bn)
    fixed, leaf_modules = list(fixed), list(leaf_modules)
    min_width = DEFAULT_MIN_WIDTH if min_width is None else float(min_width)
    model = build_source(name, num_classes, in_channels, leaf_modules, **kwargs)
    spec = dict(num_classes=num_classes, in_channels=in_channels, input_size=input_size, fixed=fixed,
                leaf_modules=leaf_modules, **kwargs)
    net = TracedSupernet(model, input_size, max_width, min_width, fixed, leaf_modules, in_channels,
                         bn=bn, switchable=switchable, name=name, spec=spec)
    _check_classes(name, net, num_classes)
    if channels is None:
        return net
    return net.export(channels, statistics=False).train()


def _check_spec(name: str, kwargs: dict, leaf_modules, channels, bn: str) -> None:
    for key, value in kwargs.items():
        try:
            plain(value, f"model.kwargs.{key}")
        except TypeError as err:
            raise TraceError(f"{name}: {err}; give the model's own arguments as plain data, or build it in a "
                             "'package.module:function' of yours") from None
    bad = [x for x in leaf_modules if not isinstance(x, str)]
    if bad:
        raise TraceError(f"{name}: leaf_modules of a named model are module names (strings, e.g. 'layer1.0'), "
                         f"got {bad[0]!r}; classes work with slimnet.slimmable(model, leaf_modules=[...])")
    if channels is not None and bn != "universal":
        raise TraceError(f"{name}: a plain child (channels=...) has ordinary BatchNorm; bn={bn!r} is for supernets")


def _check_classes(name: str, net: TracedSupernet, num_classes: int) -> None:
    """The model must give ``num_classes`` logits (a function that ignores num_classes does not)."""
    outputs = [g.channels for g in net.traced.groups.values() if any(r == "the model's output" for _, r in g.fixed)]
    if outputs and outputs[-1] != num_classes:
        raise TraceError(f"{name} gives {outputs[-1]} outputs but the data has {num_classes} classes: make the model "
                         "take num_classes (as a keyword argument), or set it in model.kwargs")
