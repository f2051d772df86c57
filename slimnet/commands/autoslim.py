"""``slimnet autoslim``: AutoSlim greedy channel search of a universally slimmable supernet.

Writes, under the experiment's folder (the checkpoint's folder unless ``--out DIR``): one channel
JSON per budget (``autoslim_150M.json``, ``autoslim_params_2M.json``), the trajectory
(``autoslim_trajectory.jsonl`` / ``.csv``), a plot (``autoslim_trajectory.png``) and the
resumable state (``autoslim_state.json``: a killed search picks up where it stopped). The state
is keyed on the checkpoint's weights: after more training (or a replaced checkpoint) the same
command starts afresh, saying why, and removes the old search's results from the folder.
"""
from __future__ import annotations

import os
import sys
import warnings

from ..checkpoint import load_supernet, weights_fingerprint
from ..profile import format_count
from ..search import (BN_SCORING, DEFAULT_BN, ChildLatency, DEFAULT_LEADERS, DEFAULT_PRESCREEN, DEFAULT_REMOVAL_RATE,
                      DEFAULT_REMOVALS, SearchError, check_budgets, check_searchable, greedy_slim, make_budgets,
                      read_state, stale_state, write_outputs)
from ..utils import check_output_dir, clean_stale_temps, pick_device
from .common import (add_checkpoint_args, add_data_args, add_debug, check_counts, data_settings, load_bundle,
                     parse_count, preload, resolve_checkpoint)


def add_arguments(p):
    add_checkpoint_args(p)
    b = p.add_argument_group("budgets (repeatable; one search serves all)")
    b.add_argument("--flops", type=parse_count, action="append", default=[], metavar="MACS",
                   help="MACs budget: 150M, 1.5G, 150e6 or 150000000")
    b.add_argument("--params", type=parse_count, action="append", default=[], metavar="N",
                   help="parameter budget, e.g. 2M")
    b.add_argument("--latency", type=float, action="append", default=[], metavar="MS",
                   help="latency budget in milliseconds, measured on --device: the plain child's forward pass "
                        "at --latency-batch (median of 20 runs) after every search step")
    b.add_argument("--latency-batch", type=int, default=1, help="batch size of the latency measurement (default 1)")
    s = p.add_argument_group("search")
    s.add_argument("--bn", choices=BN_SCORING, default=DEFAULT_BN,
                   help=f"BN while scoring candidates (default {DEFAULT_BN}, see bench/bench_search.py)")
    s.add_argument("--calib-images", type=int, default=None,
                   help="images for per-candidate BN statistics (--bn recalibrate: 2000, subset: 500)")
    s.add_argument("--search-images", type=int, default=None, help="held-out images to score on (default: all)")
    s.add_argument("--prescreen", type=int, default=DEFAULT_PRESCREEN,
                   help="score every candidate on this many images first (the same ones every step), re-score "
                        f"only the leaders on all (default {DEFAULT_PRESCREEN}; 0: off)")
    s.add_argument("--leaders", type=int, default=DEFAULT_LEADERS,
                   help=f"candidates re-scored on all images after --prescreen (default {DEFAULT_LEADERS})")
    s.add_argument("--removals-per-step", choices=["auto", "1"], default=str(DEFAULT_REMOVALS),
                   help="auto: far from the budgets, apply the best few candidates (distinct groups) at once; "
                        "every budget is still crossed by an exact one-step greedy step. 1: exact greedy "
                        f"(default {DEFAULT_REMOVALS})")
    s.add_argument("--removal-rate", type=float, default=DEFAULT_REMOVAL_RATE,
                   help="with --removals-per-step auto: one step removes at most this fraction of the MACs "
                        f"distance to the smallest budget (default {DEFAULT_REMOVAL_RATE})")
    s.add_argument("--fraction", type=float, default=1 / 12, help="one step = this fraction of a group's max")
    s.add_argument("--max-steps", type=int, default=None, help="stop after N steps (resume later)")
    s.add_argument("--fresh", action="store_true", help="ignore a saved search state and start over (a state "
                                                         "searched on other weights is never resumed)")
    p.add_argument("--out", help="output folder (default: the checkpoint's folder)")
    p.add_argument("--no-plot", action="store_true", help="do not write the PNG plot")
    p.add_argument("--quiet", action="store_true", help="no per-step log")
    add_data_args(p)
    p.set_defaults(batch_size=500)
    add_debug(p)


def _drop_stale_search(state_path: str, out: str, net) -> None:
    """A saved search of other weights (the supernet was trained further or replaced since): its
    results are not this checkpoint's, so they are removed, saying so, and the search starts afresh."""
    old = read_state(state_path)
    reason = stale_state(old, weights_fingerprint(net))
    if reason is None:
        return
    names = [f"{label}.json" for label, v in old["found"].items() if v is not None]
    names += ["autoslim_trajectory.jsonl", "autoslim_trajectory.csv", "autoslim_trajectory.png"]
    removed = []
    for name in names:
        p = os.path.join(out, name)
        if os.path.isfile(p):
            os.remove(p)
            removed.append(name)
    os.remove(state_path)
    print(f"note: not resuming {state_path}: {reason}. Starting the search afresh"
          + (f"; removed its results, which belong to those weights: {', '.join(removed)}" if removed else ""),
          file=sys.stderr, flush=True)


def run(args) -> int:
    if not args.flops and not args.params and not args.latency:
        raise ValueError("give at least one budget: --flops 150M (MACs), --params 2M and/or --latency 5 "
                         "(milliseconds), each repeatable")
    check_counts(args, latency_batch=1, batch_size=1, search_images=2, prescreen=0, leaders=1, calib_images=2,
                 max_steps=0, heldout_size=0)
    path = resolve_checkpoint(args)
    out = args.out or os.path.dirname(os.path.abspath(path))
    check_output_dir(out, "--out" if args.out else "the checkpoint's folder (the default --out)")
    device = pick_device(args.device)
    net, ckpt = load_supernet(path)
    try:
        check_searchable(net)
    except SearchError as e:
        raise ValueError(f"{path}: {e}") from None
    # budgets are checked before any data is read
    budgets = make_budgets(args.flops, args.params, args.latency)
    latency = None
    if args.latency:
        net.to(device)
        latency = ChildLatency(net, net.arch["input_size"], args.latency_batch, device)
    check_budgets(net.space, budgets, latency=latency)
    settings = data_settings(ckpt, args, net)
    if not settings["heldout_size"]:
        raise ValueError("the search scores candidates on a held-out split of the training set and this checkpoint's "
                         "config has none: give --heldout-size N (ideally the split the supernet was trained without)")
    bundle = load_bundle(settings, "the search", net)
    images, labels = preload(bundle.heldout, args.search_images)
    os.makedirs(out, exist_ok=True)
    clean_stale_temps(out)
    state = os.path.join(out, "autoslim_state.json")
    if args.fresh and os.path.exists(state):
        os.remove(state)
    elif os.path.exists(state):
        _drop_stale_search(state, out, net)
    log = (lambda m: None) if args.quiet else (lambda m: print(m, flush=True))
    log(f"searching {net.space.model} ({len(net.space)} groups) on {len(images)} held-out images, "
        f"device {device}, BN scoring '{args.bn}'")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = greedy_slim(net.to(device), images, labels, flops=args.flops, params=args.params,
                             latency_ms=args.latency, latency=latency, bn=args.bn,
                             calib_num=args.calib_images, fraction=args.fraction, batch_size=args.batch_size,
                             prescreen=args.prescreen or None, leaders=args.leaders,
                             removals=args.removals_per_step, removal_rate=args.removal_rate,
                             state_path=state, resume=True,
                             max_steps=args.max_steps, device=device, log=log)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    paths = write_outputs(result, out, plot=not args.no_plot)
    rows = {r["step"]: r for r in result.trajectory}
    lat = bool(args.latency)
    print(f"{'budget':>24} {'MACs':>9} {'params':>9}" + (f" {'latency':>10}" if lat else "") +
          f" {'held-out top-1':>15} {'step':>5}  file")
    for b in result.budgets:
        cfg = result.configs[b.label]
        if cfg is None:
            print(f"{b.label:>24}   (not reached yet)")
            continue
        row = next(r for r in result.trajectory if r["config"] == dict(cfg.channels))
        top1 = f"{row['top1']:>14.2f}%" if row["top1"] is not None else f"{'(not scored)':>15}"
        print(f"{b.label:>24} {format_count(row['macs']):>9} {format_count(row['params']):>9}" +
              (f" {row['latency_ms']:>7.3f} ms" if lat else "") + f" {top1} {row['step']:>5}  {paths.get(b.label, '')}")
    print(f"trajectory: {paths['trajectory_csv']} ({len(rows)} steps)" +
          (f", plot: {paths['plot']}" if "plot" in paths else ""))
    if not result.finished:
        print(f"search stopped before every budget was met; run again to resume from {state}")
    return 0
