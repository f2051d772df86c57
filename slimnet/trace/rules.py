"""What the tracer knows about operations: which pass a tensor's channels through unchanged, which
combine two tensors elementwise, which concatenate. Everything not listed here is unknown, and the
channels it touches are fixed."""
from __future__ import annotations

import operator

import torch
import torch.nn as nn
import torch.nn.functional as F

#: Modules whose output has the input's channels, each computed from the same input channel only
#: (activations, dropout, pooling, identity). Matched by class name too, for torchvision.ops.
PASS_MODULES = (
    nn.ReLU, nn.ReLU6, nn.Hardswish, nn.Hardsigmoid, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.GELU, nn.LeakyReLU, nn.ELU,
    nn.Mish, nn.Softplus, nn.Hardtanh, nn.Identity, nn.Dropout, nn.Dropout2d, nn.AlphaDropout,
    nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Upsample,
)
#: Matched by class name, and kept whole by the tracer (their forward reads ``self.training``, which
#: fx would freeze at its value when tracing): torchvision.ops' and timm's stochastic depth drop
#: whole samples, not channels.
PASS_MODULE_NAMES = {"StochasticDepth", "DropPath"}

#: Modules that compute a standard layer and then call some of their own children: traced as that
#: layer (a plain module sharing their parameters) followed by a call of each child, so the layer
#: is slimmed like any other (fx would otherwise inline their forward as ``F.batch_norm`` /
#: ``F.linear`` on the parameters, with ``self.training`` frozen). Keyed by module.qualname.
#: timm's BatchNormAct2d is nn.BatchNorm2d's forward, then ``drop`` and ``act``; timm's Linear is
#: nn.Linear's (it only casts the weights' dtype under TorchScript).
AS_PLAIN_MODULES = {
    "timm.layers.norm_act.BatchNormAct2d": (nn.BatchNorm2d, ("drop", "act")),
    "timm.layers.linear.Linear": (nn.Linear, ()),
}

#: Channel-wise layers with one parameter (or statistic) per channel: they pass channels through
#: and slim by slicing their parameters.
CHANNELWISE_MODULES = (nn.BatchNorm1d, nn.BatchNorm2d)

PASS_FUNCTIONS = {
    F.relu, F.relu6, F.hardswish, F.hardsigmoid, F.silu, F.gelu, F.leaky_relu, F.elu, F.mish, F.hardtanh,
    F.dropout, F.dropout2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d, F.avg_pool2d, F.max_pool2d,
    F.interpolate, F.sigmoid, F.tanh, torch.relu, torch.sigmoid, torch.tanh, torch.clone,
    operator.neg,
}
#: Wrapped functions matched by name (fx records them as calls of the wrapped function).
PASS_FUNCTION_NAMES = {"torchvision.ops.stochastic_depth.stochastic_depth"}   # drops whole samples
PASS_METHODS = {"relu", "relu_", "sigmoid", "sigmoid_", "tanh", "clone", "contiguous", "hardswish", "neg",
                "float", "half", "to", "detach"}

#: Elementwise binary operations: two feature maps' channels are tied; a scalar or a tensor that
#: broadcasts over the channel dim leaves them as they are.
ELEMENTWISE_FUNCTIONS = {operator.add, operator.sub, operator.mul, operator.truediv, operator.iadd,
                         operator.isub, operator.imul, torch.add, torch.sub, torch.mul, torch.div}
ELEMENTWISE_METHODS = {"add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_"}

CAT_FUNCTIONS = {torch.cat, torch.concat}
FLATTEN_FUNCTIONS = {torch.flatten}
REDUCE_METHODS = {"mean", "sum", "amax"}
REDUCE_FUNCTIONS = {torch.mean, torch.sum, torch.amax}
SPLIT_METHODS = {"chunk", "split", "tensor_split", "unbind"}
SPLIT_FUNCTIONS = {torch.chunk, torch.split, torch.tensor_split, torch.unbind}
RESHAPE_METHODS = {"view", "reshape", "permute", "transpose", "flatten"}
RESHAPE_FUNCTIONS = {torch.reshape, torch.permute, torch.transpose, torch.channel_shuffle,
                     torch.pixel_shuffle, torch.pixel_unshuffle}


def as_plain(m: nn.Module):
    """(standard layer class, children called after it) when ``m`` is one of ``AS_PLAIN_MODULES``, else None."""
    return AS_PLAIN_MODULES.get(f"{type(m).__module__}.{type(m).__qualname__}")


def is_pass_module(m: nn.Module) -> bool:
    return isinstance(m, PASS_MODULES) or type(m).__name__ in PASS_MODULE_NAMES


def target_name(target) -> str:
    """A readable name of a call_function target."""
    mod = getattr(target, "__module__", None) or ""
    name = getattr(target, "__name__", repr(target))
    return f"{mod}.{name}" if mod and mod not in ("_operator", "builtins") else name


def arg(node, index: int, name: str, default=None):
    """The positional or keyword argument of an fx node."""
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)
