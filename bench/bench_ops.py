#!/usr/bin/env python
"""Overhead of slimmable layers: supernet at a config vs. the plain child of that config.

Times one forward + backward (train mode, batch of random images, CPU by default) of a
MobileNet v2 supernet (max_width 1.0, min_width 0.35, universal BN) switched to a uniform width,
against a plain child built directly at the same channels, interleaved repeat by repeat. The
ratio supernet / child is the price of slicing; the target is <= 1.10 at every width.

    python bench/bench_ops.py                     # widths 0.35 0.5 0.75 1.0, batch 64, 32x32
    python bench/bench_ops.py --quick --batch-size 2   # smoke test
    python bench/bench_ops.py --input-size 28 --in-channels 1 --downsample imagenet --batch-size 128 \
        --channels-last --threads 1                 # the Fashion-MNIST study's model, channels_last

``--parts depthwise`` times every depthwise conv shape of the model at max width, forward +
backward, with PyTorch's kernel (``F.conv2d``) against ``slimnet.ops.depthwise_conv2d`` (its tap
weight gradient for inputs of at most ``TAP_MAX_POSITIONS`` positions), interleaved.

``--parts inference`` times what the search, evaluation and BN calibration run: forward passes
without autograd (``torch.inference_mode``), BN on batch statistics, at each width, of the same
supernet in contiguous and in channels_last memory format, interleaved (``--channels-last`` does
not apply):

    python bench/bench_ops.py --parts inference --input-size 28 --in-channels 1 --downsample imagenet \
        --max-width 1.5 --min-width 0.2 --widths 0.2 0.5 1.0 1.5 --batch-size 500 --threads 1
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys

import torch

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # repo root, not bench/
import torch.nn.functional as F  # noqa: E402

import slimnet  # noqa: E402
from bench.common import machine_info, markdown_table, time_interleaved, write_json  # noqa: E402
from slimnet import ops  # noqa: E402

TARGET = 1.10
DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "bench_ops.json")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="mobilenet_v2")
    p.add_argument("--widths", type=float, nargs="+", default=[0.35, 0.5, 0.75, 1.0])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--input-size", type=int, default=32)
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--in-channels", type=int, default=3)
    p.add_argument("--downsample", choices=["auto", "imagenet", "small"], default=None,
                   help="MobileNet v2's downsample option (default: the model's)")
    p.add_argument("--channels-last", action="store_true", help="models and input in channels_last")
    p.add_argument("--max-width", type=float, default=1.0)
    p.add_argument("--min-width", type=float, default=0.35)
    p.add_argument("--parts", nargs="+", default=["layers"], choices=["layers", "depthwise", "inference"],
                   help="layers: supernet vs child per width; depthwise: the depthwise conv kernels")
    p.add_argument("--repeats", type=int, default=30, help="timed forward+backward steps per model and width")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch.set_num_threads (default: all cores)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--quick", action="store_true", help="a few repeats, for a smoke test")
    p.add_argument("--out", default=DEFAULT_OUT, help="JSON results file")
    args = p.parse_args(argv)
    if args.quick:
        args.repeats, args.warmup = 2, 1
    for name in ("batch_size", "repeats", "threads", "input_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


def train_step(model, x):
    """One forward + backward; gradients are dropped (set_to_none) so both sides allocate alike."""
    def step():
        model.zero_grad(set_to_none=True)
        model(x).sum().backward()
    return step


def depthwise_shapes(net, x) -> list[tuple]:
    """(input shape, stride, padding, dilation) of every depthwise conv of ``net`` on ``x``."""
    shapes, hooks = [], []
    for m in net.modules():
        if getattr(m, "depthwise", False):
            hooks.append(m.register_forward_hook(
                lambda mod, inp, out: shapes.append((tuple(inp[0].shape), mod.stride, mod.padding, mod.dilation))))
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    return shapes


def depthwise(args, net, x, device) -> list[dict]:
    """PyTorch's depthwise conv against slimnet.ops.depthwise_conv2d, forward + backward, per shape."""
    rows, results = [], []
    mf = torch.channels_last if args.channels_last else torch.contiguous_format
    for shape, stride, padding, dilation in depthwise_shapes(net, x):
        c = shape[1]
        inp = torch.randn(shape, device=device).contiguous(memory_format=mf).requires_grad_()
        w = torch.randn(c, 1, 3, 3, device=device).contiguous(memory_format=mf).requires_grad_()

        def step(fn):
            def run():
                inp.grad = w.grad = None
                fn().sum().backward()
            return run
        times = time_interleaved(
            {"torch": step(lambda: F.conv2d(inp, w, None, stride, padding, dilation, c)),
             "slimnet": step(lambda: ops.depthwise_conv2d(inp, w, None, stride, padding, dilation))},
            repeats=args.repeats, warmup=args.warmup, device=device)
        a, b = (statistics.median(times[k]) * 1e3 for k in ("torch", "slimnet"))
        results.append({"input": list(shape), "stride": list(stride), "torch_ms": round(a, 3),
                        "slimnet_ms": round(b, 3), "speedup": round(a / b, 3)})
        rows.append([str(shape), stride[0], f"{a:.2f}", f"{b:.2f}", f"{a / b:.2f}x"])
    print(markdown_table(["input", "stride", "F.conv2d ms", "slimnet.ops ms", "speedup"], rows))
    torch_total = sum(r["torch_ms"] for r in results)
    ours_total = sum(r["slimnet_ms"] for r in results)
    print(f"\nall depthwise convs of one step: {torch_total:.1f} ms -> {ours_total:.1f} ms")
    return results


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    kwargs = dict(num_classes=args.num_classes, in_channels=args.in_channels, input_size=args.input_size,
                  max_width=args.max_width, min_width=args.min_width)
    if args.downsample:
        kwargs["downsample"] = args.downsample
    mf = torch.channels_last if args.channels_last else torch.contiguous_format
    supernet = slimnet.build(args.model, bn="universal", **kwargs).to(device, memory_format=mf).train()
    x = torch.randn(args.batch_size, args.in_channels, args.input_size, args.input_size,
                    device=device).contiguous(memory_format=mf)
    out = {"benchmark": "bench_ops", "model": args.model, "batch_size": args.batch_size, "input_size": args.input_size,
           "in_channels": args.in_channels, "channels_last": args.channels_last, "repeats": args.repeats,
           "target_ratio": TARGET, "machine": machine_info()}
    if "depthwise" in args.parts:
        out["depthwise"] = depthwise(args, supernet, x, device)
    if "layers" in args.parts:
        out.update(layers(args, supernet, x, kwargs, device, mf))
    if "inference" in args.parts:
        out["inference"] = inference(args, supernet, x, device)
    write_json(args.out, out)
    print(f"\nwrote {args.out}")
    return 0


def layers(args, supernet, x, kwargs, device, mf) -> dict:
    rows, results = [], []
    for width in args.widths:
        cfg = supernet.set_width(width)
        # timing only: the child has its own random weights, nothing is copied
        child = ops.use_fast_depthwise_(slimnet.build(args.model, channels=cfg, **kwargs)).to(
            device, memory_format=mf).train()
        times = time_interleaved({"supernet": train_step(supernet, x), "child": train_step(child, x)},
                                 repeats=args.repeats, warmup=args.warmup, device=device)
        sup, ch = (statistics.median(times[k]) * 1e3 for k in ("supernet", "child"))
        macs = slimnet.profile(supernet.space, cfg).macs
        ratio = sup / ch
        results.append({"width": width, "macs": macs, "supernet_ms": round(sup, 3), "child_ms": round(ch, 3),
                        "ratio": round(ratio, 4), "meets_target": ratio <= TARGET})
        rows.append([width, f"{macs / 1e6:.1f}M", f"{sup:.2f}", f"{ch:.2f}", f"{ratio:.3f}"])
        print(f"width {width}: supernet {sup:.2f} ms, child {ch:.2f} ms, ratio {ratio:.3f}", flush=True)
        del child
    title = (f"{args.model}, forward+backward, train mode, batch {args.batch_size}, "
             f"{args.input_size}x{args.input_size}, {'channels_last' if args.channels_last else 'contiguous'}, "
             f"{device.type}, {torch.get_num_threads()} threads, "
             f"median of {args.repeats} interleaved repeats (target ratio <= {TARGET})")
    print()
    print(title)
    print()
    print(markdown_table(["width", "MACs", "supernet ms", "child ms", "ratio"], rows))
    return {"description": title, "results": results}


def inference(args, supernet, x, device) -> list[dict]:
    """Forward without autograd (BN on batch statistics, as the search scores and calibration runs),
    contiguous against channels_last, the same weights, interleaved, per width."""
    import copy
    nets = {"contiguous": supernet.to(memory_format=torch.contiguous_format),
            "channels_last": copy.deepcopy(supernet).to(memory_format=torch.channels_last)}
    inputs = {"contiguous": x.contiguous(), "channels_last": x.contiguous(memory_format=torch.channels_last)}
    rows, results = [], []
    for width in args.widths:
        for net in nets.values():
            cfg = net.set_width(width)

        def forward(name):
            def run():
                with torch.inference_mode():
                    nets[name](inputs[name])
            return run
        times = time_interleaved({k: forward(k) for k in nets}, repeats=args.repeats, warmup=args.warmup,
                                 device=device)
        a, b = (statistics.median(times[k]) * 1e3 for k in nets)
        macs = slimnet.profile(supernet.space, cfg).macs
        results.append({"width": width, "macs": macs, "contiguous_ms": round(a, 3), "channels_last_ms": round(b, 3),
                        "speedup": round(a / b, 3)})
        rows.append([width, f"{macs / 1e6:.1f}M", f"{a:.1f}", f"{b:.1f}", f"{a / b:.2f}x"])
        print(f"width {width}: contiguous {a:.1f} ms, channels_last {b:.1f} ms", flush=True)
    print(f"\n{args.model}, forward without autograd, BN on batch statistics, batch {args.batch_size}, "
          f"{args.input_size}x{args.input_size}, {device.type}, {torch.get_num_threads()} threads, median of "
          f"{args.repeats} interleaved repeats\n")
    print(markdown_table(["width", "MACs", "contiguous ms", "channels_last ms", "channels_last speedup"], rows))
    return results


if __name__ == "__main__":
    sys.exit(main())
