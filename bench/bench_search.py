#!/usr/bin/env python
"""AutoSlim search benchmark: BN-scoring choice, per-candidate cost, and a whole search.

Three parts (all print a table; results go to bench/results/bench_search.json):

1. ``ranking``: how well cheap BN handling while scoring ranks candidates compared with full
   recalibration (calibrate_bn on 2000 images per candidate). A supernet is trained briefly with
   per-layer sandwich sampling on Fashion-MNIST (or ``--checkpoint``); at a few steps of the
   reference search, every candidate is scored under each mode; Spearman / Kendall rank
   correlation of the candidate accuracies and whether the chosen (top-1) candidate agrees.
2. ``speed``: wall time per candidate of one search step (all candidates of the max config of a
   1.5x MobileNet v2, 10 classes, 1 channel) against the pure forward time of each candidate on
   the same images (target <= 1.3x).
3. ``search``: the whole greedy search of that supernet on N held-out images, budgets from 1.0x
   down to 0.35x of the 1.0x model's MACs (target: under 10 minutes on 2 CPU cores). Untrained
   weights: accuracy is irrelevant for timing.

    python bench/bench_search.py            # everything, full size (slow on CPU)
    python bench/bench_search.py --quick    # small sizes, minutes
    python bench/bench_search.py --parts ranking --checkpoint checkpoints/x/best.pt
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import slimnet  # noqa: E402
from slimnet.checkpoint import load_supernet  # noqa: E402
from slimnet.nn import SlimBatchNorm2d  # noqa: E402
from slimnet.profile import format_count  # noqa: E402
from slimnet.search import CandidateScorer, greedy_slim, rank_correlation  # noqa: E402
from slimnet.utils import pick_device  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def fashion(n_train, n_heldout, size, seed=0):
    from slimnet.data import build_data
    b = build_data("fashion_mnist", heldout_size=n_heldout, heldout_seed=seed, exclude_heldout=True,
                   augment="none", subset=n_train)
    x = torch.stack([b.train[i][0] for i in range(len(b.train))])
    hx = torch.stack([b.heldout[i][0] for i in range(len(b.heldout))])
    if size != 28:
        x, hx = (F.interpolate(t, size=size, mode="bilinear", antialias=True) for t in (x, hx))
    return x, b.train.targets, hx, b.heldout.targets


def train_supernet(net, x, y, steps, batch=128, lr=0.1, seed=0, log=print):
    rng, g = random.Random(seed), torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 - s / steps)
    net.train()
    t0 = time.time()
    for step in range(steps):
        idx = torch.randint(len(x), (batch,), generator=g)
        xb, yb = x[idx].to(next(net.parameters()).device), y[idx].to(next(net.parameters()).device)
        opt.zero_grad()
        net.set_channels(net.space.max())
        logits = net(xb)
        F.cross_entropy(logits, yb).backward()
        soft = logits.detach().softmax(1)
        for cfg in (net.space.min(), net.space.random(rng), net.space.random(rng)):
            net.set_channels(cfg)  # inplace distillation from the max config
            (-(soft * net(xb).log_softmax(1)).sum(1).mean()).backward()
        opt.step()
        sched.step()
        if (step + 1) % max(1, steps // 5) == 0:
            log(f"  train step {step + 1}/{steps} ({time.time() - t0:.0f}s)")
    net.set_channels(net.space.max())
    return net


# ---------------------------------------------------------------------------------------------
def part_ranking(args, log):
    size = args.rank_input
    x, y, hx, hy = fashion(args.rank_train, args.rank_heldout + args.rank_calib, size)
    calib, hx, hy = hx[:args.rank_calib], hx[args.rank_calib:], hy[args.rank_calib:]
    device = pick_device(args.device)
    if args.checkpoint:
        net, _ = load_supernet(args.checkpoint)
    else:
        torch.manual_seed(0)
        net = slimnet.build(args.rank_model, num_classes=10, in_channels=1, input_size=size,
                            max_width=args.rank_width, min_width=args.rank_width * 0.35)
        log(f"training {args.rank_model} x{args.rank_width} supernet ({args.rank_steps} steps, {size}px)")
        train_supernet(net.to(device), x.to(device), y.to(device), args.rank_steps)
    net.to(device)
    modes = {  # name -> CandidateScorer kwargs (+ prescreen)
        "recalibrate-2000 (reference)": dict(bn="recalibrate", calib=calib, calib_num=2000),
        "batch (chunks of 500)": dict(bn="batch", batch_size=500),
        "batch (chunks of 100)": dict(bn="batch", batch_size=100),
        "subset-500": dict(bn="subset", calib=calib, calib_num=500),
        "subset-200": dict(bn="subset", calib=calib, calib_num=200),
        "batch + prescreen 250, 3 leaders": dict(bn="batch", batch_size=250, prescreen=250, leaders=3),
    }
    scorers = {}
    for name, kw in modes.items():
        kw = dict(kw)
        kw.pop("prescreen", None), kw.pop("leaders", None)
        scorers[name] = CandidateScorer(net, hx, hy, device=device, **{"batch_size": 500, **kw})
    ref_name = next(iter(modes))
    ref = scorers[ref_name]
    cur = net.space.max()
    stats = {name: {"rho": [], "tau": [], "agree": 0, "regret": [], "seconds": 0.0} for name in modes}
    checked = 0
    for step in range(max(args.rank_at) + 1):
        cands = [c for _, c in net.space.slim_candidates(cur)]
        do_measure = step in args.rank_at
        results = {}
        # the scorers share the net's BN buffers: the reference runs last, from a fresh
        # calibration of the current config (the others overwrite / drop it)
        for name in list(modes)[1:] + [ref_name]:
            sc = scorers[name]
            if not do_measure and name != ref_name:
                continue
            if sc.bn != "batch":
                sc.calibrate(cur, [cur], full=True)   # not timed: a real search inherits it
            t0 = time.perf_counter()
            if sc.bn != "batch":
                sc.calibrate(cur, cands)
            spec = modes[name]
            if spec.get("prescreen"):
                pre = sc.score(cur, cands, spec["prescreen"])
                lead = sorted(range(len(cands)), key=lambda i: (pre[i].key(), i))[:spec["leaders"]]
                full = sc.score(cur, [cands[i] for i in lead])
                acc = [p.top1 for p in pre]
                pick = lead[min(range(len(lead)), key=lambda j: (full[j].key(), lead[j]))]
            else:
                scores = sc.score(cur, cands)
                acc = [s.top1 - 1e-6 * s.mean_loss for s in scores]   # loss breaks accuracy ties
                pick = min(range(len(cands)), key=lambda i: (scores[i].key(), i))
            stats[name]["seconds"] += time.perf_counter() - t0
            results[name] = (acc, pick)
            if sc.bn != "batch" and name != ref_name:
                sc.drop([c.key for c in cands] + [cur.key])
        ref.drop([c.key for c in cands] + [cur.key])
        ref_acc, ref_pick = results[ref_name]
        if do_measure:
            checked += 1
            for name, (acc, pick) in results.items():
                rho, tau = rank_correlation(acc, ref_acc)
                stats[name]["rho"].append(rho)
                stats[name]["tau"].append(tau)
                stats[name]["agree"] += int(pick == ref_pick)
                # accuracy (under the reference) given up by taking this mode's pick
                stats[name]["regret"].append(ref_acc[ref_pick] - ref_acc[pick])
            log(f"  step {step}: {len(cands)} candidates measured")
        cur = cands[ref_pick]
    rows = []
    for name, s in stats.items():
        rows.append({"mode": name, "spearman": sum(s["rho"]) / len(s["rho"]), "kendall": sum(s["tau"]) / len(s["tau"]),
                     "top1_agree": f"{s['agree']}/{checked}", "regret_pts": sum(s["regret"]) / checked,
                     "seconds_per_step": s["seconds"] / checked})
    log(f"\nBN during scoring vs full recalibration ({net.space.model}, {len(hx)} held-out images, "
        f"steps {args.rank_at}, device {device})")
    log(f"{'mode':>34} {'Spearman':>9} {'Kendall':>8} {'top-1 agrees':>13} {'regret (pts)':>13} {'s/step':>8}")
    for r in rows:
        log(f"{r['mode']:>34} {r['spearman']:>9.3f} {r['kendall']:>8.3f} {r['top1_agree']:>13} "
            f"{r['regret_pts']:>13.2f} {r['seconds_per_step']:>8.2f}")
    return {"model": net.space.model, "heldout": len(hx), "steps": args.rank_at, "rows": rows}


# ---------------------------------------------------------------------------------------------
def _accuracy(net, cfg, calib, hx, hy, batch=500):
    """Held-out top-1 of ``cfg`` with exact BN statistics (calibrate_bn on ``calib``), eval mode."""
    from slimnet.calibrate import calibrate_bn
    calibrate_bn(net, cfg, calib, num_images=len(calib))
    net.eval()
    correct = 0
    with torch.inference_mode():
        for lo in range(0, len(hx), batch):
            correct += int((net(hx[lo:lo + batch]).argmax(1) == hy[lo:lo + batch]).sum())
    for m in net.modules():
        if isinstance(m, SlimBatchNorm2d):
            m.drop_stats(cfg.key)
    net.set_channels(net.space.max())
    return 100.0 * correct / len(hx)


def part_agreement(args, log):
    """Prescreen + leaders and batched greedy ("removals auto") against exact one-step greedy on a
    briefly trained supernet: (a) at every step of the exact trajectory, does the prescreened
    choice equal the full-set choice (and how many full-set points does it give up); (b) the
    configs found for each budget by each variant, compared by their held-out accuracy (exact
    BN statistics from calibration images, evaluated on a separate test split)."""
    size, device = args.agree_input, pick_device(args.device)
    n_test = args.agree_test
    x, y, hx, hy = fashion(args.agree_train, args.agree_heldout + args.agree_calib + n_test, size)
    calib = hx[:args.agree_calib]
    tx, ty = hx[args.agree_calib:args.agree_calib + n_test], hy[args.agree_calib:args.agree_calib + n_test]
    hx, hy = hx[args.agree_calib + n_test:], hy[args.agree_calib + n_test:]
    torch.manual_seed(0)
    net = slimnet.build(args.agree_model, num_classes=10, in_channels=1, input_size=size,
                        max_width=args.agree_width, min_width=args.agree_width * 0.35).to(device)
    log(f"training {args.agree_model} x{args.agree_width} supernet ({args.agree_steps} steps, {size}px)")
    t0 = time.time()
    train_supernet(net, x.to(device), y.to(device), args.agree_steps)
    train_s = time.time() - t0
    space = net.space
    full_macs = slimnet.profile(space, space.max()).macs
    lo = slimnet.profile(space, space.min()).macs
    fracs = [f for f in (0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.35) if f * full_macs > lo * 1.02 and f >= args.agree_down_to - 1e-9]
    budgets = [int(f * full_macs) for f in fracs]
    pre_n, leaders = args.prescreen, 3

    # (a) per-step agreement along the exact trajectory
    sc = CandidateScorer(net, hx, hy, bn="batch", batch_size=args.batch_size, device=device)
    cur, rows = space.max(), []
    while slimnet.profile(space, cur).macs > min(budgets) and len(rows) < args.agree_max_steps:
        cands = [c for _, c in space.slim_candidates(cur)]
        full = sc.score(cur, cands)
        ref = min(range(len(cands)), key=lambda i: (full[i].key(), i))
        pre = sc.score(cur, cands, pre_n)
        lead = sorted(range(len(cands)), key=lambda i: (pre[i].key(), i))[:leaders]
        pick = min(lead, key=lambda i: (full[i].key(), i))
        rows.append({"step": len(rows) + 1, "candidates": len(cands), "agree": pick == ref,
                     "regret_pts": full[ref].top1 - full[pick].top1, "ref_in_leaders": ref in lead})
        cur = cands[ref]
    n = len(rows)
    agree = sum(r["agree"] for r in rows)
    regret = [r["regret_pts"] for r in rows]
    log(f"\n(a) prescreen {pre_n} images + {leaders} leaders vs every candidate on all {len(hx)} held-out images, "
        f"along the exact greedy trajectory ({n} steps)")
    log(f"    same candidate chosen: {agree}/{n} steps; full-set choice among the leaders: "
        f"{sum(r['ref_in_leaders'] for r in rows)}/{n}; mean regret {sum(regret) / n:.3f} pts, max {max(regret):.2f} pts")

    # (b) whole searches, configs per budget
    variants = {"exact (prescreen off, removals 1)": dict(prescreen=None, removals=1),
                f"prescreen {pre_n}/{leaders} leaders, removals 1": dict(prescreen=pre_n, removals=1),
                "prescreen off, removals auto": dict(prescreen=None, removals="auto"),
                f"prescreen {pre_n}/{leaders} leaders, removals auto": dict(prescreen=pre_n, removals="auto")}
    found, table = {}, []
    for name, kw in variants.items():
        t0 = time.perf_counter()
        r = greedy_slim(net, hx, hy, flops=budgets, bn="batch", batch_size=args.batch_size, leaders=leaders,
                        device=device, **kw)
        wall = time.perf_counter() - t0
        cands = sum(row["candidates"] for row in r.trajectory)
        iters = r.trajectory[-1].get("iteration", len(r.trajectory) - 1)
        found[name] = r.configs
        accs = {b.label: _accuracy(net, cfg, calib, tx, ty) for b, cfg in ((b, r.configs[b.label]) for b in r.budgets)}
        table.append({"variant": name, "iterations": iters, "rows": len(r.trajectory) - 1, "candidates": cands,
                      "wall_s": round(wall, 2), "test_top1": accs,
                      "macs": {b.label: slimnet.profile(space, r.configs[b.label]).macs for b in r.budgets}})
        log(f"  {name}: {iters} iterations, {cands} candidates, {wall:.1f}s")
    ref = table[0]
    labels = list(ref["test_top1"])
    log(f"\n(b) test top-1 of the config found for each budget (exact BN stats from {len(calib)} images, "
        f"{n_test} test images; budgets {[f'{f:g}x' for f in fracs]} of {format_count(full_macs)} MACs)")
    log(f"{'variant':>44} {'iters':>6} {'cands':>6} {'wall s':>7} " + " ".join(f"{lb.replace('autoslim_', ''):>8}" for lb in labels)
        + f" {'mean diff':>9}")
    for t in table:
        diffs = [t["test_top1"][lb] - ref["test_top1"][lb] for lb in labels]
        t["diff_vs_exact"] = diffs
        t["mean_diff_pts"] = sum(diffs) / len(diffs)
        t["same_config"] = sum(found[t["variant"]][lb] == found[ref["variant"]][lb] for lb in labels)
        log(f"{t['variant']:>44} {t['iterations']:>6} {t['candidates']:>6} {t['wall_s']:>7.1f} "
            + " ".join(f"{t['test_top1'][lb]:>8.2f}" for lb in labels) + f" {t['mean_diff_pts']:>+9.2f}")
    return {"model": f"{args.agree_model} x{args.agree_width}, {size}px Fashion-MNIST, {args.agree_steps} sandwich+distillation steps "
                     f"({train_s:.0f}s)", "heldout": len(hx), "test": n_test, "calib": len(calib),
            "prescreen": pre_n, "leaders": leaders, "budgets": budgets, "budget_fractions": fracs,
            "per_step": {"steps": n, "agree": agree, "mean_regret_pts": sum(regret) / n, "max_regret_pts": max(regret),
                         "ref_in_leaders": sum(r["ref_in_leaders"] for r in rows), "rows": rows},
            "searches": table}


# ---------------------------------------------------------------------------------------------
def _mbv2(args, device):
    torch.manual_seed(0)
    net = slimnet.build("mobilenet_v2", num_classes=10, in_channels=1, input_size=args.input,
                        max_width=args.max_width, min_width=0.35)
    return net.to(device)


def part_speed(args, log):
    device = pick_device(args.device)
    net = _mbv2(args, device)
    images = torch.randn(args.speed_images, 1, args.input, args.input)
    labels = torch.randint(0, 10, (args.speed_images,))
    cur = net.space.max()
    cands = [c for _, c in net.space.slim_candidates(cur)]
    out = {}
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for reuse in (True, False):
        sc = CandidateScorer(net, images, labels, bn="batch", batch_size=args.batch_size, device=device,
                             reuse_prefix=reuse)
        sc.score(cur, cands[:1], min(64, len(images)))  # warm-up
        sync()
        t0 = time.perf_counter()
        sc.score(cur, cands)
        sync()
        out["search_prefix" if reuse else "search_full"] = (time.perf_counter() - t0) / len(cands)
    # pure forward: the candidate alone, same images, same chunks, train-mode BN (batch statistics)
    x = images.to(device)
    net.eval()
    for m in net.modules():
        if isinstance(m, SlimBatchNorm2d):
            m.train()
    total = 0.0
    with torch.inference_mode():
        for c in cands:
            net.set_channels(c)
            sync()
            t0 = time.perf_counter()
            for lo in range(0, len(x), args.batch_size):
                net(x[lo: lo + args.batch_size])
            sync()
            total += time.perf_counter() - t0
    net.set_channels(cur)
    out["pure_forward"] = total / len(cands)
    log(f"\nper-candidate wall time, MobileNet v2 x{args.max_width} {args.input}px, {len(images)} images, "
        f"{len(cands)} candidates of the max config, device {device}")
    log(f"{'':>36} {'s/candidate':>12} {'vs forward':>11}")
    for k, label in (("pure_forward", "pure forward of the candidate"), ("search_full", "search, full forward per candidate"),
                     ("search_prefix", "search, prefix reuse (default)")):
        log(f"{label:>36} {out[k]:>12.3f} {out[k] / out['pure_forward']:>10.2f}x")
    return {"images": len(images), "candidates": len(cands), **out,
            "ratio_prefix": out["search_prefix"] / out["pure_forward"], "ratio_full": out["search_full"] / out["pure_forward"]}


def part_search(args, log):
    device = pick_device(args.device)
    net = _mbv2(args, device)
    one = slimnet.profile(net.space, net.space.uniform(1.0) if args.max_width >= 1 else net.space.max()).macs
    fracs = [f for f in (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.45, 0.4, 0.35) if f >= args.search_down_to - 1e-9]
    budgets = [int(one * f) for f in fracs]
    images = torch.randn(args.search_images, 1, args.input, args.input)
    labels = torch.randint(0, 10, (args.search_images,))
    t0 = time.perf_counter()
    r = greedy_slim(net, images, labels, flops=budgets, bn="batch", batch_size=args.batch_size,
                    prescreen=args.prescreen or None, leaders=3, removals=args.removals, device=device,
                    max_steps=args.search_steps,
                    log=lambda m: log("  " + m) if args.verbose else None)
    wall = time.perf_counter() - t0
    steps = len(r.trajectory) - 1
    cands = sum(row["candidates"] for row in r.trajectory)
    log(f"\nwhole search: MobileNet v2 x{args.max_width} {args.input}px, {len(images)} held-out images, "
        f"budgets {[f'{f:g}x' for f in fracs]} of {format_count(one)} MACs, device {device}, "
        f"prescreen {args.prescreen}, 3 leaders, removals {args.removals}")
    log(f"ran {steps} steps{' (all)' if r.finished else f' of a step limit {args.search_steps}'}, "
        f"{cands} candidates, wall {wall:.1f}s ({wall / max(cands, 1):.3f} s/candidate, {wall / max(steps, 1):.1f} s/step)")
    out = {"model": f"mobilenet_v2 x{args.max_width}, {args.input}px, 1 channel, 10 classes, untrained",
           "images": len(images), "budgets": budgets, "prescreen": args.prescreen, "leaders": 3,
           "removals": args.removals, "steps": steps, "iterations": r.trajectory[-1].get("iteration", steps),
           "candidates": cands, "wall_s": wall, "finished": r.finished,
           "iteration_log": [{k: row[k] for k in ("step", "iteration", "macs", "candidates", "elapsed_s")}
                             for row in r.trajectory]}
    if not r.finished:
        # Project the whole search: the cost of a step is ~ proportional to the MACs of its
        # candidates. Simulate the trajectory by arithmetic only (profile), taking the candidate
        # that removes the most / the fewest MACs each step: a short and a long trajectory.
        space = net.space
        ran = sum(slimnet.profile(space, c).macs for row in r.trajectory[:-1]
                  for _, c in space.slim_candidates(space.config(row["config"])))
        rate = wall / max(ran, 1)
        for rule in ("most", "fewest"):
            cur, total, n_steps, n_cands = space.max(), 0, 0, 0
            while slimnet.profile(space, cur).macs > min(budgets):
                cs = [c for _, c in space.slim_candidates(cur)]
                costs = [slimnet.profile(space, c).macs for c in cs]
                total += sum(costs)
                n_steps, n_cands = n_steps + 1, n_cands + len(cs)
                pick = costs.index(min(costs) if rule == "most" else max(costs))
                cur = cs[pick]
            out[f"projected_{rule}"] = {"steps": n_steps, "candidates": n_cands, "seconds": total * rate}
            log(f"projected whole search (removing the {rule} MACs per step): {n_steps} steps, {n_cands} candidates, "
                f"{total * rate / 60:.1f} min")
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes (minutes on a laptop CPU)")
    p.add_argument("--parts", default="ranking,speed,search")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--checkpoint", help="trained universal supernet for the ranking part (default: train one)")
    p.add_argument("--rank-model", default="resnet20")
    p.add_argument("--rank-width", type=float, default=1.0)
    p.add_argument("--rank-input", type=int, default=28)
    p.add_argument("--rank-steps", type=int, default=600)
    p.add_argument("--rank-train", type=int, default=20000)
    p.add_argument("--rank-heldout", type=int, default=2000)
    p.add_argument("--rank-calib", type=int, default=2000)
    p.add_argument("--rank-at", type=lambda s: [int(v) for v in s.split(",")], default=[0, 5, 10])
    p.add_argument("--agree-model", default="resnet20")
    p.add_argument("--agree-width", type=float, default=0.5)
    p.add_argument("--agree-input", type=int, default=16)
    p.add_argument("--agree-steps", type=int, default=250)
    p.add_argument("--agree-train", type=int, default=8000)
    p.add_argument("--agree-heldout", type=int, default=1000)
    p.add_argument("--agree-calib", type=int, default=1000)
    p.add_argument("--agree-down-to", type=float, default=0.35, help="smallest budget, fraction of the max MACs")
    p.add_argument("--agree-max-steps", type=int, default=1000, help="part (a): at most this many steps")
    p.add_argument("--agree-test", type=int, default=2000)
    p.add_argument("--max-width", type=float, default=1.5)
    p.add_argument("--input", type=int, default=28)
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--speed-images", type=int, default=5000)
    p.add_argument("--search-images", type=int, default=5000)
    p.add_argument("--search-down-to", type=float, default=0.35)
    p.add_argument("--prescreen", type=int, default=500)
    p.add_argument("--removals", default="auto", choices=["auto", "1"])
    p.add_argument("--search-steps", type=int, default=None, help="stop after N steps and project the rest")
    p.add_argument("--verbose", action="store_true")
    p.add_argument("--out", default=os.path.join(HERE, "results", "bench_search.json"))
    args = p.parse_args(argv)
    if args.quick:
        args.rank_model, args.rank_width, args.rank_input = "resnet20", 0.5, 16
        args.rank_steps, args.rank_train, args.rank_heldout, args.rank_calib = 250, 8000, 1000, 2000
        args.rank_at = [0, 2, 4, 6, 8]
        args.max_width, args.input, args.batch_size = 1.5, 16, 250
        args.speed_images, args.search_images, args.search_down_to, args.prescreen = 500, 1000, 0.35, 250
        args.search_steps = 3
    if args.threads:
        torch.set_num_threads(args.threads)
    log = lambda m: print(m, flush=True)  # noqa: E731
    results = {"quick": args.quick, "threads": torch.get_num_threads(), "device": str(pick_device(args.device))}
    for part in args.parts.split(","):
        t0 = time.time()
        results[part] = {"ranking": part_ranking, "speed": part_speed, "search": part_search,
                         "agreement": part_agreement}[part](args, log)
        results[part]["bench_seconds"] = time.time() - t0
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
