#!/usr/bin/env python
"""Training speed, in three parts (``--parts``, default all):

    python bench/bench_train.py                       # all parts, CPU (or --device cuda)
    python bench/bench_train.py --parts pipeline speedup --threads 1
    python bench/bench_train.py --quick               # smoke test with tiny sizes

*overhead*: one sandwich step against the plain children it replaces (below).

*pipeline*: per training mode, the engine's end-to-end images/s (its loaders, its step, one
optimizer step: what an epoch costs) against the pure compute images/s of the same steps on
batches prepared beforehand. Blocks of steps alternate between the two, so the machine's noise
hits both; target: end to end >= 0.85 of pure compute. Real Fashion-MNIST through the study's
configs (configs/bench/fmnist_*.yaml: MobileNet v2, 28x28, batch 128).

*speedup*: the universal (sandwich) mode end to end with today's defaults (data in memory with
batch augmentation, channels_last, the tap gradient of slimnet.ops for tiny depthwise maps)
against the configuration before them (per-sample v2 transforms with ``workers: 0``, contiguous
memory, PyTorch's depthwise kernel), interleaved block by block; target >= 1.8x.

*Sandwich*: the engine's own ``train_step`` on a universally slimmable MobileNet v2 supernet at 4
fixed widths (1.0, 0.75, 0.5, 0.35; fixed so that every repetition does the same work), the
largest on the labels, the others distilled from its detached output, each width's backward
right after its forward, then one SGD step.

*Children*: four plain networks built with ``slimnet.build(..., channels=cfg)`` at the same
configs (real smaller tensors, no slicing), the same losses on the same batch (the 1.0 child on
the labels, the others distilled from the 1.0 child's detached output), each child doing
forward + backward + its own SGD step. This is what training the four widths as separate models
costs per step, so ``ratio = sandwich / sum(children)`` is the overhead of slimmable layers.

Both are measured side by side in one process, interleaved (sandwich, children, sandwich, ...),
after warm-up; we report medians.

Memory (honest on CPU, where allocator statistics do not exist): the peak number of bytes autograd
holds for backward during a step, measured with ``torch.autograd.graph.saved_tensors_hooks`` (every
saved tensor is counted from the moment it is saved until its graph is freed). It covers the
activations, the part of training memory that grows with batch and width; it excludes parameters,
gradients and optimizer state (reported apart) and transient kernel workspaces. On CUDA we also
report ``torch.cuda.max_memory_allocated`` per step kind.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402

import slimnet  # noqa: E402
from slimnet import ops  # noqa: E402
from slimnet.config import load_config  # noqa: E402
from slimnet.loaders import build_loaders, experiment_data  # noqa: E402
from slimnet.train import WidthSampler, build_model, make_optimizer, param_groups, train_step, width_loss  # noqa: E402
from slimnet.utils import atomic_write_text, pick_device  # noqa: E402

WIDTHS = (1.0, 0.75, 0.5, 0.35)


class SavedBytes:
    """Peak bytes held by autograd for backward (saved-tensor hooks)."""

    def __init__(self):
        self.live = self.peak = 0

    def pack(self, t):
        return _Held(self, t)

    @staticmethod
    def unpack(h):
        return h.t

    @contextlib.contextmanager
    def measure(self):
        self.live = self.peak = 0
        with torch.autograd.graph.saved_tensors_hooks(self.pack, self.unpack):
            yield self


class _Held:
    def __init__(self, owner, t):
        self.owner, self.t, self.n = owner, t, t.numel() * t.element_size()
        owner.live += self.n
        owner.peak = max(owner.peak, owner.live)

    def __del__(self):
        self.owner.live -= self.n


def state_bytes(modules, optimizers) -> int:
    n = sum(p.numel() * p.element_size() * 2 for m in modules for p in m.parameters())   # weights + grads
    for opt in optimizers:
        for st in opt.state.values():
            n += sum(v.numel() * v.element_size() for v in st.values() if torch.is_tensor(v))
    return n


# --------------------------------------------------------------------------------------------
# pipeline and speedup: the engine's own loaders and step on real data
# --------------------------------------------------------------------------------------------
MODES = {"fixed": "fmnist_fixed_w100.yaml", "switchable": "fmnist_snet.yaml", "universal": "fmnist_usnet.yaml",
         "autoslim": "fmnist_autoslim_supernet.yaml"}


class EngineRun:
    """The engine's pieces for one experiment config: data loaders, model, optimizer, step."""

    def __init__(self, config: str, overrides: list, device, taps: bool = True):
        cfg = self.cfg = load_config(os.path.join(ROOT, "configs", "bench", config), overrides)
        bundle = experiment_data(cfg)
        net, plan = build_model(cfg, bundle.num_classes, bundle.in_channels, bundle.input_size)
        self.net = net.to(device)
        if cfg.train.channels_last:
            self.net.to(memory_format=torch.channels_last)
        self.loaders = build_loaders(cfg, bundle, device, need_calib=False)
        self.widths = WidthSampler(net, plan, cfg)
        self.opt = make_optimizer(self.net, cfg.optim)
        self.scaler = torch.amp.GradScaler(device.type, enabled=False)
        self.device, self.taps, self.step_no, self.epoch = device, taps, 0, 0

    def batches(self, n: int):
        """The next ``n`` batches of the engine's training loader (a new epoch when one ends)."""
        sampler = self.loaders.sampler
        if (self.step_no % sampler.batches_per_epoch) + n > sampler.batches_per_epoch:
            self.epoch += 1
            self.step_no = 0
        sampler.set_epoch(self.epoch, self.step_no % sampler.batches_per_epoch)
        it = iter(self.loaders.train)
        for _ in range(n):
            yield next(it)

    def steps(self, batches) -> int:
        """Engine steps (to the device, memory format, sandwich step, optimizer step); images done."""
        saved = ops.TAP_MAX_POSITIONS
        ops.TAP_MAX_POSITIONS = saved if self.taps else 0
        images = 0
        try:
            for x, y in batches:
                x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
                if self.cfg.train.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                train_step(self.net, self.net, self.widths.configs(self.step_no), x, y, self.cfg, self.scaler,
                           contextlib.nullcontext(), self.step_no, False)
                self.opt.step()
                self.opt.zero_grad(set_to_none=True)
                self.step_no += 1
                images += y.shape[0]
        finally:
            ops.TAP_MAX_POSITIONS = saved
        return images


def _images_per_s(fn, sync) -> float:
    sync()
    t0 = time.perf_counter()
    images = fn()
    sync()
    return images / (time.perf_counter() - t0)


def pipeline(args, device, sync) -> dict:
    """End-to-end vs pure-compute images/s per mode."""
    out = {}
    for mode in args.modes:
        run = EngineRun(MODES[mode], args.override, device)
        run.steps(run.batches(args.warmup))
        e2e, pure = [], []
        for _ in range(args.rounds):
            e2e.append(_images_per_s(lambda: run.steps(run.batches(args.block)), sync))
            ready = [(x.to(device), y.to(device)) for x, y in run.batches(args.block)]   # prepared beforehand
            pure.append(_images_per_s(lambda: run.steps(ready), sync))
        out[mode] = {"end_to_end_images_per_s": statistics.median(e2e), "compute_images_per_s": statistics.median(pure),
                     "ratio": statistics.median(e2e) / statistics.median(pure), "rounds_e2e": e2e, "rounds_compute": pure}
        print(f"| {mode} | {out[mode]['end_to_end_images_per_s']:.1f} | {out[mode]['compute_images_per_s']:.1f} | "
              f"{out[mode]['ratio']:.3f} |", flush=True)
    return out


def speedup(args, device, sync) -> dict:
    """Universal mode end to end: today's defaults against the configuration before them."""
    new = EngineRun(MODES["universal"], args.override + ["train.channels_last=true"], device)
    old = EngineRun(MODES["universal"], args.override + ["data.in_memory=false", "data.workers=0",
                                                         "train.channels_last=false"], device, taps=False)
    for run in (new, old):
        run.steps(run.batches(args.warmup))
    t_new, t_old = [], []
    for _ in range(args.rounds):
        t_new.append(_images_per_s(lambda: new.steps(new.batches(args.block)), sync))
        t_old.append(_images_per_s(lambda: old.steps(old.batches(args.block)), sync))
    res = {"new_images_per_s": statistics.median(t_new), "old_images_per_s": statistics.median(t_old),
           "ratio": statistics.median(t_new) / statistics.median(t_old), "rounds_new": t_new, "rounds_old": t_old}
    print(f"| universal (sandwich) | {res['old_images_per_s']:.1f} | {res['new_images_per_s']:.1f} | "
          f"{res['ratio']:.2f}x |", flush=True)
    return res


# --------------------------------------------------------------------------------------------
# overhead: sandwich step vs the plain children
# --------------------------------------------------------------------------------------------
PARTS = ("overhead", "pipeline", "speedup")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    p.add_argument("--quick", action="store_true", help="tiny sizes, few repetitions (smoke test)")
    p.add_argument("--batch", type=int, default=64, help="overhead: batch size")
    p.add_argument("--input-size", type=int, default=32, help="overhead: input size")
    p.add_argument("--reps", type=int, default=10, help="overhead: repetitions")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES), help="pipeline: modes")
    p.add_argument("--rounds", type=int, default=5, help="pipeline / speedup: interleaved rounds")
    p.add_argument("--block", type=int, default=20, help="pipeline / speedup: steps per timed block")
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="pipeline / speedup: config override (e.g. data.root=DIR), repeatable")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "bench_train.json"))
    args = p.parse_args(argv)
    for name in ("batch", "input_size", "reps", "rounds", "block"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.quick:
        args.batch, args.input_size, args.reps, args.warmup = 4, 16, 2, 1
        args.rounds, args.block = 1, 2
        args.override = ["data.batch_size=8", "data.subset=64", "data.heldout_size=16"] + args.override
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    result = {"device": str(device), "threads": torch.get_num_threads(), "torch": torch.__version__,
              "machine": platform.machine(), "quick": args.quick}
    if "pipeline" in args.parts:
        print(f"\nEnd to end vs pure compute, {device} ({torch.get_num_threads()} threads), median of "
              f"{args.rounds} interleaved rounds of {args.block} steps\n")
        print("| mode | end to end (img/s) | pure compute (img/s) | ratio |\n|---|---|---|---|")
        result["pipeline"] = pipeline(args, device, sync)
    if "speedup" in args.parts:
        print("\nSandwich step end to end: before (per-sample transforms, workers 0, contiguous, PyTorch's "
              "depthwise gradient) vs now\n")
        print("| mode | before (img/s) | now (img/s) | speedup |\n|---|---|---|---|")
        result["speedup"] = speedup(args, device, sync)
    if "overhead" in args.parts:
        result["overhead"] = overhead(args, device, sync)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


def overhead(args, device, sync) -> dict:
    torch.manual_seed(0)

    arch = dict(num_classes=10, in_channels=3, input_size=args.input_size, max_width=1.0, min_width=0.35)
    cfg = load_config(None, ["train.mode=universal", "model.min_width=0.35", "optim.lr=0.01"])
    supernet = slimnet.build("mobilenet_v2", **arch, bn="universal").to(device)
    configs = [(str(w), supernet.space.uniform(w)) for w in WIDTHS]
    children = [slimnet.build("mobilenet_v2", **arch, channels=dict(c.channels)).to(device) for _, c in configs]

    def sgd(net):
        return torch.optim.SGD(param_groups(net, cfg.optim), lr=0.01, momentum=0.9, nesterov=True)

    opt_super, opt_children = sgd(supernet), [sgd(c) for c in children]
    scaler = torch.amp.GradScaler(device.type, enabled=False)
    x = torch.randn(args.batch, 3, args.input_size, args.input_size, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    nullctx = contextlib.nullcontext()

    def sandwich_step():
        train_step(supernet, supernet, configs, x, y, cfg, scaler, nullctx, 0, False)
        opt_super.step()
        opt_super.zero_grad(set_to_none=True)

    def children_step(only=None):
        teacher = None
        for j, (child, opt) in enumerate(zip(children, opt_children)):
            if only is not None and j != only:
                continue
            logits = child(x)
            loss = width_loss(cfg, j, logits, y, teacher)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if j == 0:
                teacher = logits.detach()
            del logits, loss

    def timed(fn):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        return time.perf_counter() - t0

    for _ in range(args.warmup):
        sandwich_step()
        children_step()
    t_sand, t_child = [], []
    for _ in range(args.reps):          # interleaved: both see the same machine load
        t_sand.append(timed(sandwich_step))
        t_child.append(timed(children_step))
    med_s, med_c = statistics.median(t_sand), statistics.median(t_child)

    meter = SavedBytes()
    with meter.measure():
        sandwich_step()
    act_sandwich = meter.peak
    with meter.measure():
        children_step(only=0)
    act_max_child = meter.peak
    with meter.measure():
        children_step()
    act_children = meter.peak
    cuda_mem = {}
    if device.type == "cuda":
        for name, fn in (("sandwich", sandwich_step), ("children", children_step)):
            torch.cuda.reset_peak_memory_stats(device)
            fn()
            cuda_mem[name] = torch.cuda.max_memory_allocated(device)

    macs = {lab: slimnet.profile(supernet.space, c).macs for lab, c in configs}
    result = {
        "model": "mobilenet_v2", "input_size": args.input_size, "batch": args.batch, "widths": list(WIDTHS),
        "macs": macs, "reps": args.reps,
        "sandwich_s": med_s, "children_s": med_c, "ratio": med_s / med_c,
        "sandwich_all_s": t_sand, "children_all_s": t_child,
        "images_per_s_sandwich": args.batch / med_s, "images_per_s_children": args.batch / med_c,
        "saved_activation_peak_bytes": {"sandwich": act_sandwich, "children_sequential": act_children,
                                        "max_child_alone": act_max_child},
        "state_bytes": {"supernet": state_bytes([supernet], [opt_super]),
                        "children": state_bytes(children, opt_children)},
        "cuda_max_memory_allocated": cuda_mem,
    }

    mb = 1 / 2**20
    print(f"MobileNet v2, {args.input_size}x{args.input_size}, batch {args.batch}, widths {list(WIDTHS)}, "
          f"{device} ({torch.get_num_threads()} threads), median of {args.reps} interleaved repetitions\n")
    print("| step | median time (s) | images/s | saved activations peak (MiB) | params+grads+optimizer (MiB) |")
    print("|---|---|---|---|---|")
    print(f"| sandwich (supernet, 4 widths) | {med_s:.3f} | {args.batch / med_s:.1f} | {act_sandwich * mb:.1f} | "
          f"{result['state_bytes']['supernet'] * mb:.1f} |")
    print(f"| 4 plain children (sum) | {med_c:.3f} | {args.batch / med_c:.1f} | {act_children * mb:.1f} | "
          f"{result['state_bytes']['children'] * mb:.1f} |")
    print(f"| 1.0 child alone | | | {act_max_child * mb:.1f} | |")
    print(f"\nratio sandwich / children = {med_s / med_c:.3f} (target <= 1.15)")
    if cuda_mem:
        print(f"CUDA max allocated: sandwich {cuda_mem['sandwich'] * mb:.1f} MiB, children "
              f"{cuda_mem['children'] * mb:.1f} MiB")
    return result


if __name__ == "__main__":
    sys.exit(main())
