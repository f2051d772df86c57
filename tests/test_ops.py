"""slimnet.ops: the depthwise conv with a tap weight gradient equals F.conv2d in value and gradients."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import slimnet
from slimnet.ops import DepthwiseConv2d, _DepthwiseTapGrad, depthwise_conv2d, use_fast_depthwise_


@pytest.mark.parametrize("size,stride,padding,dilation,kernel", [
    (1, 1, 1, 1, 3), (2, 1, 1, 1, 3), (2, 2, 1, 1, 3), (3, 2, 1, 1, 3), (5, 1, 2, 2, 3), (7, 1, 2, 1, 5), (4, 2, 0, 1, 3)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_tap_gradient_equals_conv2d(size, stride, padding, dilation, kernel, channels_last):
    g = torch.Generator().manual_seed(size * 31 + stride)
    x = torch.randn(5, 6, size, size, generator=g, dtype=torch.float64)
    w = torch.randn(6, 1, kernel, kernel, generator=g, dtype=torch.float64)
    if channels_last:
        x, w = (t.contiguous(memory_format=torch.channels_last) for t in (x, w))
    x.requires_grad_()
    w.requires_grad_()
    ref = F.conv2d(x, w, None, stride, padding, dilation, 6)
    got = _DepthwiseTapGrad.apply(x, w, (stride, stride), (padding, padding), (dilation, dilation))
    go = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-12)
    for a, b in zip(torch.autograd.grad(got, (x, w), go), torch.autograd.grad(ref, (x, w), go)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_depthwise_conv2d_takes_the_tap_path_only_for_tiny_inputs():
    w = torch.randn(8, 1, 3, 3, requires_grad=True)
    bias = torch.randn(8, requires_grad=True)
    tiny, big = torch.randn(2, 8, 2, 2), torch.randn(2, 8, 6, 6)
    assert depthwise_conv2d(tiny, w, None, 1, 1).grad_fn.name().startswith("_DepthwiseTapGrad")
    assert "Convolution" in depthwise_conv2d(big, w, None, 1, 1).grad_fn.name()
    four = torch.randn(2, 8, 4, 4)          # 2x2 output, but PyTorch's kernel is fast for a 4x4 input
    assert "Convolution" in depthwise_conv2d(four, w, None, 2, 1).grad_fn.name()
    with torch.no_grad():
        assert depthwise_conv2d(tiny, w, None, 1, 1).grad_fn is None
    out = depthwise_conv2d(tiny, w, bias, 1, 1)
    ref = F.conv2d(tiny, w, bias, 1, 1, 1, 8)
    torch.testing.assert_close(out, ref)
    gb, = torch.autograd.grad(out.sum(), bias)
    torch.testing.assert_close(gb, torch.full((8,), 8.0))   # 2 images x 2 x 2 positions


def test_fast_depthwise_child_keeps_state_and_outputs():
    net = slimnet.build("mobilenet_v2", num_classes=10, in_channels=1, input_size=28, max_width=1.0,
                        downsample="imagenet", channels=slimnet.build(
                            "mobilenet_v2", num_classes=10, in_channels=1, input_size=28,
                            downsample="imagenet").space.uniform(0.5).channels)
    x = torch.randn(4, 1, 28, 28)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    net.eval()
    ref = net(x)
    dw = sum(1 for m in net.modules() if type(m) is nn.Conv2d and m.groups > 1)
    use_fast_depthwise_(net)
    assert sum(isinstance(m, DepthwiseConv2d) for m in net.modules()) == dw == 17
    assert all(not m.training for m in net.modules())
    state = net.state_dict()
    assert state.keys() == before.keys() and all(torch.equal(state[k], before[k]) for k in state)
    torch.testing.assert_close(net(x), ref, rtol=0, atol=0)
    net.train()
    net(x).sum().backward()           # trains: every parameter gets a gradient
    assert all(p.grad is not None for p in net.parameters())
