"""Architectures and the registry: ``slimnet.build(name, **kwargs)``."""
from __future__ import annotations

from .base import SlimNet
from .mobilenet_v1 import MobileNetV1
from .mobilenet_v2 import MobileNetV2
from .resnet import ResNet
from .shufflenet import ShuffleNetV1

# name -> (class, fixed keyword arguments)
MODELS = {
    "mobilenet_v1": (MobileNetV1, {}),
    "mobilenet_v2": (MobileNetV2, {}),
    "resnet18": (ResNet, {"depth": 18}),
    "resnet34": (ResNet, {"depth": 34}),
    "resnet50": (ResNet, {"depth": 50}),
    "resnet20": (ResNet, {"depth": 20}),
    "resnet56": (ResNet, {"depth": 56}),
    "shufflenet_v1": (ShuffleNetV1, {"groups": 3}),
}


def build(name: str, **kwargs) -> SlimNet:
    """Build a supernet (or, with ``channels=cfg``, a plain child) by registry name.

    Common keyword arguments: num_classes, in_channels, input_size, max_width, min_width,
    bn ('universal' | 'switchable' | 'shared'), switchable (widths or configs), channels.
    A name with a colon is any CNN made slimmable by tracing its graph (``slimnet.trace.build``):
    ``torchvision:resnet18``, ``timm:mobilenetv3_large_100``, ``my_package.my_module:build_fn``.
    """
    if ":" in name:     # torchvision:NAME, timm:NAME, package.module:function: traced (slimnet.trace)
        from ..trace.build import build_traced
        return build_traced(name, **kwargs)
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(sorted(MODELS))}, or any CNN as "
                         "'torchvision:NAME', 'timm:NAME' or 'package.module:function' (traced)")
    cls, fixed = MODELS[name]
    clash = set(fixed) & set(kwargs)
    if clash:
        raise ValueError(f"{name} fixes {sorted(clash)}; pick another registry name instead")
    return cls(**fixed, **kwargs)


__all__ = ["MODELS", "SlimNet", "build", "MobileNetV1", "MobileNetV2", "ResNet", "ShuffleNetV1"]
