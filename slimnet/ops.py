"""Training kernels for shapes where PyTorch's own CPU backward is slow.

**Depthwise conv weight gradient at tiny feature maps.** oneDNN's depthwise weight gradient costs
about as much at a 1x1 or 2x2 output as at 14x14 (measured here with PyTorch 2.14 on an AVX-512
EPYC: 31-41 ms for a (128, 960, 1, 1) input whose forward takes 0.5 ms). MobileNets on 28-32 px
inputs with ImageNet strides end at such maps, in their widest layers, where this one gradient was
about two thirds of a whole training step. The slow case is a tiny *input* map (a 4x4 input with
stride 2, whose output is 2x2, is fast); for inputs of at most :data:`TAP_MAX_POSITIONS`
positions, :func:`depthwise_conv2d` computes the weight gradient as one reduction per kernel tap
(``sum over n, y, x of go * x_shifted``) instead, and the input gradient with PyTorch's own
kernel; ``python bench/bench_ops.py --parts depthwise`` measures both. Everywhere else (larger maps,
CUDA, no gradient, scripting or tracing) it is ``F.conv2d``: the outputs are the same numbers.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.modules.utils import _pair

__all__ = ["TAP_MAX_POSITIONS", "DepthwiseConv2d", "depthwise_conv2d", "use_fast_depthwise_"]

TAP_MAX_POSITIONS = 4   # input H*W at or below which the tap gradient wins on CPU (measured)


class _DepthwiseTapGrad(torch.autograd.Function):
    """Depthwise conv (groups = channels, no bias) whose weight gradient is a sum per tap."""

    @staticmethod
    def forward(ctx, x, weight, stride, padding, dilation):
        ctx.save_for_backward(x, weight)
        ctx.conv = (stride, padding, dilation)
        return F.conv2d(x, weight, None, stride, padding, dilation, weight.shape[0])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        stride, padding, dilation = ctx.conv
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.convolution_backward(
                grad_out, x, weight, None, stride, padding, dilation, False, [0, 0], weight.shape[0],
                [True, False, False])[0]
        if ctx.needs_input_grad[1]:
            kh, kw = weight.shape[-2:]
            ho, wo = grad_out.shape[-2:]
            xp = F.pad(x, (padding[1], padding[1], padding[0], padding[0]))
            taps = []
            for i in range(kh):          # kh * kw reductions (9 for 3x3), vectorized over everything else
                for j in range(kw):
                    top, left = i * dilation[0], j * dilation[1]
                    window = xp[:, :, top: top + stride[0] * (ho - 1) + 1: stride[0],
                                left: left + stride[1] * (wo - 1) + 1: stride[1]]
                    taps.append((window * grad_out).sum((0, 2, 3)))
            grad_w = torch.stack(taps, 1).view(weight.shape).to(weight.dtype)
        return grad_x, grad_w, None, None, None


def depthwise_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride=1, padding=0,
                     dilation=1) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, stride, padding, dilation, groups=channels)``, with the tap
    weight gradient where it is faster (see the module docstring)."""
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    use_taps = (x.device.type == "cpu" and weight.requires_grad and torch.is_grad_enabled()
                and not torch.jit.is_scripting() and not torch.jit.is_tracing()
                and x.shape[-2] * x.shape[-1] <= TAP_MAX_POSITIONS)
    if not use_taps:
        return F.conv2d(x, weight, bias, stride, padding, dilation, weight.shape[0])
    out = _DepthwiseTapGrad.apply(x, weight, stride, padding, dilation)
    return out if bias is None else out + bias.view(1, -1, 1, 1)


class DepthwiseConv2d(nn.Conv2d):
    """A plain depthwise ``nn.Conv2d`` (same parameters and state dict) that trains with
    :func:`depthwise_conv2d`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding_mode != "zeros" or isinstance(self.padding, str):
            return super().forward(x)
        return depthwise_conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation)


def use_fast_depthwise_(net: nn.Module) -> nn.Module:
    """Make every plain depthwise ``nn.Conv2d`` of ``net`` a :class:`DepthwiseConv2d` in place (the
    parameters are kept, so state dicts and checkpoints are unchanged). For training plain
    children; exported models stay plain ``torch.nn``."""
    for mod in list(net.modules()):
        for name, c in list(mod.named_children()):
            if type(c) is nn.Conv2d and c.groups > 1 and c.groups == c.in_channels == c.out_channels:
                fast = DepthwiseConv2d(c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding, c.dilation,
                                       c.groups, c.bias is not None, c.padding_mode, device="meta")
                fast.weight, fast.bias = c.weight, c.bias
                fast.train(c.training)
                setattr(mod, name, fast)
    return net
