"""The tracing coverage table of docs/RESULTS.md: torchvision and timm classifiers (random weights,
nothing downloaded) traced at 224 px and made supernets.

    PYTHONPATH=. python bench/trace_coverage.py [--input-size 224] [--min-width 0.25] [--out table.md]
        [--models torchvision:resnet18 timm:dla34 ...]

Per model: whether it traces, the slimmable and fixed channel groups, the conv / linear layers none
of whose channels can be slimmed and why (each fixed group's reason, in short), the MACs per image
at min width (every slimmable group at that fraction) and as the model is, and whether the supernet
(``slimnet.slimmable``) is made and reproduces the model at its max config (max abs difference of the
logits of one random image, BN with random running statistics; profile = FlopCounterMode / 2).
tests/test_trace_coverage.py checks the same models more thoroughly at 32 px (exported children,
a sandwich step).
"""
from __future__ import annotations

import argparse
import re
import sys
import time
from collections import Counter

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

import slimnet
from slimnet.trace import TraceReport
from slimnet.trace.sources import build_source
from slimnet.utils import atomic_write_text

# (source name, build kwargs, note)
MODELS = [
    ("torchvision:resnet18", {}, ""),
    ("torchvision:resnet50", {}, ""),
    ("torchvision:resnext50_32x4d", {}, "grouped convs: counts multiples of 32"),
    ("torchvision:wide_resnet50_2", {}, ""),
    ("torchvision:mobilenet_v2", {}, ""),
    ("torchvision:mobilenet_v3_small", {}, "SE gates tied to their block"),
    ("torchvision:mobilenet_v3_large", {}, ""),
    ("torchvision:mnasnet1_0", {}, ""),
    ("torchvision:shufflenet_v2_x1_0", {}, "each unit's inner width slims; split + shuffle fix the rest"),
    ("torchvision:squeezenet1_1", {}, "no BN: nothing to calibrate"),
    ("torchvision:densenet121", {}, "concatenations as tuple refs"),
    ("torchvision:efficientnet_b0", {}, ""),
    ("torchvision:regnet_y_400mf", {}, ""),
    ("torchvision:vgg11_bn", {}, "7x7 map flattened into the first linear"),
    ("torchvision:googlenet", {"aux_logits": False, "init_weights": False},
     "aux_logits=False (aux heads run in train mode only; an eval trace leaves them out)"),
    ("torchvision:convnext_tiny", {}, "needs channels-last tracing and slimmable LayerNorm"),
    ("timm:resnet50d", {}, ""),
    ("timm:efficientnet_b0", {}, "BatchNormAct2d traced as BN + act"),
    ("timm:mobilenetv3_large_100", {}, ""),
    ("timm:rexnet_100", {}, "partial residuals x[:, :C] + shortcut fix those stages"),
    ("timm:ghostnet_100", {}, "a residual adds a concatenation to one conv's output"),
    ("timm:regnety_008", {}, ""),
    ("timm:dla34", {}, ""),
    ("timm:mixnet_s", {}, "mixed convs split concatenations by constant sizes"),
    ("timm:lcnet_050", {}, ""),
    ("timm:resnest14d", {}, "split attention (radix reshape + sum) is fixed"),
    ("timm:repvgg_a0", {}, "its blocks live in a `stages` module"),
    ("timm:tf_efficientnet_b0", {}, "Conv2dSame pads from the input size at run time"),
]

#: A fixed group's reason -> a short phrase for the table.
SHORT = [
    (r"permute", "channels-last permute"),
    (r"linear '.*' reads a tensor of shape", "linear on channels-last"),
    (r"\.(view|reshape)\(\) reshapes the channel dim", "channel reshape (shuffle / radix)"),
    (r"cuts through a channel group", "channel split through a group"),
    (r"at concatenation boundaries", "split / slice of a concatenation"),
    (r"slices channels .* through a channel group", "partial channel slice"),
    (r"ties channels laid out as", "concatenation tied to one group"),
    (r"reduces over the channel", "sum over a channel split"),
    (r"combined elementwise with", "scaled by a parameter (layer scale)"),
    (r"module (\w+) .* is not known", r"\1 (unknown module)"),
    (r"^(\S+) is not known to the tracer", r"\1 (unknown)"),
    (r"pinned by the user", "pinned by the user"),
]
ENDS = {"the model's input", "the model's output"}


def short(reason: str) -> str:
    for pattern, text in SHORT:
        m = re.search(pattern, reason)
        if m:
            return m.expand(text)
    return reason[:40]


def randomize_bn(model: nn.Module) -> None:
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d) and m.running_mean is not None:
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) * 1.5 + 0.5)


def first_line(err: BaseException, limit: int = 110) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def row(name: str, kwargs: dict, size: int, min_width: float) -> dict:
    torch.manual_seed(0)
    model = build_source(name, 1000, 3, **kwargs)
    randomize_bn(model)
    model.eval()
    out = {"model": name}
    try:
        net = slimnet.slimmable(model, size, min_width=min_width).eval()
        report = TraceReport(net.traced, (size, size), min_width)
    except AttributeError as err:        # a supernet bug, not a trace refusal: trace alone for the counts
        report = slimnet.trace_report(model, size, min_width=min_width)
        net, out["supernet"] = None, f"no ({type(err).__name__}: {first_line(err, 50)})"
    except slimnet.TraceError as err:
        m = re.search(r"torch\.fx cannot trace .* in module '([^']+)' \((\w+)\)", str(err))
        why = f"torch.fx cannot trace module '{m[1]}' ({m[2]}): control flow on traced values" if m else first_line(err)
        return {**out, "traced": "no", "why": why}
    out["traced"] = "yes"
    out["slimmable"], out["fixed"] = len(report.slimmable), len(report.fixed)
    reasons = Counter(r for g in report.fixed for r in {short(r) for _, r in g.fixed if r not in ENDS})
    out["fixed_layers"] = len(report.fixed_layers)
    out["layers"] = sum(1 for layer in report.traced.layers if layer.kind != "norm")
    out["why"] = ", ".join(f"{r} ({n} groups)" if n > 1 else r for r, n in reasons.most_common(3))
    out["macs"] = report.macs
    if net is not None:
        x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(2))
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            want = model(x)
        with torch.no_grad():
            diff = (net(x) - want).abs().max().item()
        flops = counter.get_total_flops() // 2
        ok = diff <= 1e-4 and slimnet.profile(net.space).macs == flops == report.macs[1]
        out["supernet"] = f"yes ({diff:.0e})" if ok else f"MISMATCH (diff {diff:.1e}, MACs {flops} vs {report.macs[1]})"
    return out


def table(rows: list[dict], size: int, min_width: float, notes: dict) -> str:
    lines = [f"| model | traced | slimmable groups | fixed groups | layers not slimmed: why | MACs at {min_width:g} "
             f"/ max ({size} px) | supernet at max = model | note |",
             "|---|---|---:|---:|---|---|---|---|"]
    for r in rows:
        note = notes.get(r["model"], "")
        if r["traced"] == "no":
            lines.append(f"| {r['model']} | no | - | - | {r['why']} | - | - | {note} |")
            continue
        low, high = r["macs"]
        why = f"{r['fixed_layers']} of {r['layers']}" + (f": {r['why']}" if r["why"] else "")
        lines.append(f"| {r['model']} | yes | {r['slimmable']} | {r['fixed']} | {why} | "
                     f"{low / 1e6:,.1f}M / {high / 1e6:,.1f}M | {r['supernet']} | {note} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--min-width", type=float, default=0.25)
    p.add_argument("--models", nargs="+", help="a subset of the list (default: all)")
    p.add_argument("--out", help="also write the markdown table to this file")
    args = p.parse_args(argv)
    known = {name: (kwargs, note) for name, kwargs, note in MODELS}
    names = args.models or list(known)
    rows = []
    for name in names:
        kwargs, _ = known.get(name, ({}, ""))
        if name.startswith("timm:"):
            try:
                import timm  # noqa: F401
            except ImportError:
                print(f"skipping {name}: timm is not installed", file=sys.stderr)
                continue
        start = time.perf_counter()
        rows.append(row(name, kwargs, args.input_size, args.min_width))
        print(f"{name}: {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    text = table(rows, args.input_size, args.min_width, {n: note for n, (_, note) in known.items()})
    print(text)
    if args.out:
        atomic_write_text(args.out, text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
