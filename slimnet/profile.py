"""Analytic MACs and parameter counts of any channel config, and latency measurement.

Convention (the papers'): multiply-accumulates of conv and linear layers on the actually used
(sliced) shapes; BN, activations, biases and residual adds count zero. This is exactly half of
what ``torch.utils.flop_counter.FlopCounterMode`` reports, and reproduces the published tables
(MobileNet v2 300.8M / 209.1M / 97.1M / 59.3M, ResNet-50 4089M). Average pooling is reported
apart, as ``pool_macs`` (one add per pooled input value): the papers disagree on whether it is
in their totals (MobileNet v1's 568.8M includes its 0.05M global pool; v2's 97.1M does not).
Parameters are those of the exported child: conv/linear weights and biases, BN weight and bias,
plus any parameter outside the slimmable layers (a traced model's LayerNorm or layer scale on
fixed channels), which every config has; likewise the MACs of layers outside them (a traced
model's modules kept whole with ``leaf_modules``, a conv it cannot slim), counted once by
``FlopCounterMode`` on the meta device.

Each slimmable layer knows its own cost (``SlimModule.cost(cfg, in_shape, out_shape)``, see
``slimnet.nn.protocol``); ``profile`` sums it over a *layer table* (each layer call with its input
and output shapes) traced once per input size from the model definition itself, on the meta
device (no memory, no real compute), so the AutoSlim search can call ``profile`` thousands of
times.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from .nn import SlimModule


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


def _layer_table(space, input_size: int) -> tuple[list[tuple], int, int]:
    """``(layer, input shape, output shape)`` of every slimmable layer call, in forward order, and
    the parameters and MACs outside slimmable layers (a traced model's layers kept whole or
    fixed: the same at every config): the model traced once at max channels on the meta device
    (no memory, no compute), under ``FlopCounterMode`` for the MACs outside."""
    if input_size in space._tables:
        return space._tables[input_size]
    if space._builder is None:
        raise ValueError("this channel space has no model builder; get spaces from slimnet.build(...).space")
    table = []

    def record(module, inputs, output):
        table.append((module, tuple(inputs[0].shape), tuple(output.shape)))

    with torch.device("meta"):
        net = space._builder(input_size=input_size, bn="universal")
    net.train()
    slim = {name: m for name, m in net.named_modules() if isinstance(m, SlimModule)}
    handles = [m.register_forward_hook(record) for m in slim.values()]
    batch = 2                       # BN on 1x1 maps needs more than one value per channel
    try:
        with FlopCounterMode(display=False) as counter:
            net(torch.empty(batch, space.arch["in_channels"], input_size, input_size, device="meta"))
    finally:
        for h in handles:
            h.remove()
    counts = counter.get_flop_counts()
    root = type(net).__name__
    inside = sum(sum(counts.get(f"{root}.{name}", {}).values()) for name in _outermost(slim))
    other_macs = (counter.get_total_flops() - inside) // (2 * batch)
    slim_params = {id(p) for m in slim.values() for p in m.parameters()}
    other_params = sum(p.numel() for p in net.parameters() if id(p) not in slim_params)
    space._tables[input_size] = table, other_params, other_macs
    return space._tables[input_size]


def _outermost(named: dict) -> list[str]:
    """The names not inside another of the names (a slimmable layer's own submodules count once)."""
    return [n for n in named if not any(n.startswith(o + ".") for o in named if o != n)]


def profile(space, cfg=None, input_size: int | None = None) -> Cost:
    """MACs and params of ``cfg`` (default: the max config) without running the model: the sum
    of each traced layer's own ``cost`` (the ``SlimModule`` protocol), plus what lies outside
    the slimmable layers."""
    cfg = space.max() if cfg is None else space.config(cfg)
    input_size = input_size or space.arch["input_size"]
    table, params, macs = _layer_table(space, input_size)
    pool = 0
    for layer, in_shape, out_shape in table:
        cost = layer.cost(cfg, in_shape, out_shape)
        macs += cost.macs
        params += cost.params
        pool += cost.pool_macs
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
