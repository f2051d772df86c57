"""Analytic MACs and parameter counts of any channel config, and latency measurement.

Convention (the papers'): multiply-accumulates of conv and linear layers on the actually used
(sliced) shapes; BN, activations, biases and residual adds count zero. This is exactly half of
what ``torch.utils.flop_counter.FlopCounterMode`` reports, and reproduces the published tables
(MobileNet v2 300.8M / 209.1M / 97.1M / 59.3M, ResNet-50 4089M). Average pooling is reported
apart, as ``pool_macs`` (one add per pooled input value): the papers disagree on whether it is
in their totals (MobileNet v1's 568.8M includes its 0.05M global pool; v2's 97.1M does not).
Parameters are those of the exported child: conv/linear weights and biases, BN weight and bias.

The per-config cost is pure arithmetic over a *layer table* (kind, channel refs, kernel, output
size) traced once per input size from the model definition itself, on the meta device (no
memory, no real compute), so the AutoSlim search can call ``profile`` thousands of times.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch

from .nn import (SlimAdaptiveAvgPool2d, SlimAvgPool2d, SlimBatchNorm2d, SlimConv2d, SlimLinear,
                 SwitchableBatchNorm2d, resolve)


@dataclass(frozen=True)
class Cost:
    macs: int        # conv + linear multiply-accumulates (FlopCounterMode reports 2 x this)
    params: int
    pool_macs: int   # average pooling, kept apart (see the module docstring)

    def __str__(self) -> str:
        return f"{format_count(self.macs)} MACs, {format_count(self.params)} params"


def format_count(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(int(n))


def _layer_table(space, input_size: int) -> list[tuple]:
    """Trace the model at max channels on the meta device and record each costed layer."""
    if input_size in space._tables:
        return space._tables[input_size]
    if space._builder is None:
        raise ValueError("this channel space has no model builder; get spaces from slimnet.build(...).space")
    table = []

    def hook(module, inputs, output):
        out_hw = output.shape[2] * output.shape[3] if output.dim() == 4 else 1
        if isinstance(module, SlimConv2d):
            k = module.kernel_size[0] * module.kernel_size[1]
            table.append(("conv", module.in_ref, module.out_ref, k, module.depthwise, module.fixed_groups,
                          out_hw, module.bias is not None))
        elif isinstance(module, SlimLinear):
            table.append(("linear", module.in_ref, module.out_ref, 1, False, 1, 1, module.bias is not None))
        elif isinstance(module, SlimAdaptiveAvgPool2d):
            in_hw = inputs[0].shape[2] * inputs[0].shape[3]
            table.append(("pool", module.ref, module.ref, in_hw, False, 1, out_hw, False))
        elif isinstance(module, SlimAvgPool2d):
            k = module.kernel_size * module.kernel_size
            table.append(("pool", module.ref, module.ref, k, False, 1, out_hw, False))
        elif isinstance(module, (SlimBatchNorm2d, SwitchableBatchNorm2d)):
            table.append(("bn", module.ref, module.ref, 0, False, 1, 0, False))

    with torch.device("meta"):
        net = space._builder(input_size=input_size, bn="universal")
    net.train()
    handles = [m.register_forward_hook(hook) for m in net.modules()
               if isinstance(m, (SlimConv2d, SlimLinear, SlimAdaptiveAvgPool2d, SlimAvgPool2d,
                                 SlimBatchNorm2d, SwitchableBatchNorm2d))]
    try:
        net(torch.empty(2, space.arch["in_channels"], input_size, input_size, device="meta"))  # 2: BN on 1x1 maps
    finally:
        for h in handles:
            h.remove()
    space._tables[input_size] = table
    return table


def profile(space, cfg=None, input_size: int | None = None) -> Cost:
    """MACs and params of ``cfg`` (default: the max config) without running the model."""
    cfg = space.max() if cfg is None else space.config(cfg)
    input_size = input_size or space.arch["input_size"]
    macs = pool = params = 0
    for kind, in_ref, out_ref, k, depthwise, groups, out_hw, bias in _layer_table(space, input_size):
        cout = resolve(out_ref, cfg)
        if kind == "bn":
            params += 2 * cout
            continue
        cin = resolve(in_ref, cfg)
        if kind == "pool":
            pool += cout * k * out_hw
            continue
        per_out = k * (1 if depthwise else cin // groups)
        macs += cout * per_out * out_hw
        params += cout * per_out + (cout if bias else 0)
    return Cost(macs=macs, params=params, pool_macs=pool)


@torch.no_grad()
def measure_latency(model: torch.nn.Module, input_shape, *, device=None, warmup: int = 5, repeats: int = 20,
                    dtype=torch.float32) -> float:
    """Median wall time in milliseconds of one forward pass (eval mode, after warm-up); CUDA
    work is synchronised before each clock read."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    x = torch.randn(*input_shape, device=device, dtype=dtype)
    was_training = model.training
    model.eval()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    try:
        for _ in range(warmup):
            model(x)
        sync()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(x)
            sync()
            times.append((time.perf_counter() - t0) * 1e3)
    finally:
        model.train(was_training)
    return statistics.median(times)
