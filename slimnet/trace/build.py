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
from .sources import build_source
from .supernet import TracedChild, TracedSupernet

__all__ = ["build_traced"]


def build_traced(name: str, *, num_classes: int = 1000, in_channels: int = 3, input_size: int = 224,
                 max_width: float = 1.0, min_width: float | None = None, bn: str = "universal",
                 switchable: Iterable | None = None, channels: Mapping | None = None,
                 fixed: Iterable[str] = (), leaf_modules: Iterable[str] = (), **kwargs) -> TracedSupernet | TracedChild:
    """The supernet (or, with ``channels``, the plain child) of the model ``name`` names."""
    if name.startswith("traced:"):
        raise TraceError(f"{name!r} was made by slimnet.slimmable(model) from a Python object, which no name can "
                         "make again: call slimnet.slimmable(model, ...) yourself and load_state_dict(checkpoint"
                         "['model_state']), or name the model as 'package.module:function' so slimnet can build it")
    if max_width != 1.0:
        raise TraceError(f"a traced model ({name}) runs at most at its own widths: max_width must be 1.0, got {max_width}")
    fixed, leaf_modules = [str(x) for x in fixed], [str(x) for x in leaf_modules]
    min_width = 0.25 if min_width is None else float(min_width)
    model = build_source(name, num_classes, in_channels, **kwargs)
    spec = dict(num_classes=num_classes, in_channels=in_channels, input_size=input_size, fixed=fixed,
                leaf_modules=leaf_modules, **kwargs)
    net = TracedSupernet(model, input_size, max_width, min_width, fixed, leaf_modules, in_channels,
                         bn="universal" if channels is not None else bn, switchable=switchable, name=name, spec=spec)
    if channels is None:
        return net
    child = net.export(channels, statistics=False).train()
    net.to("meta")      # the child's space profiles on it; its weights are not needed any more
    return child
