"""``slimnet autoslim``: AutoSlim greedy channel search of a universally slimmable supernet.

Writes, under the experiment's folder (the checkpoint's folder unless ``--out DIR``): one channel
JSON per budget (``autoslim_150M.json``, ``autoslim_params_2M.json``), the trajectory
(``autoslim_trajectory.jsonl`` / ``.csv``), a plot (``autoslim_trajectory.png``) and the
resumable state (``autoslim_state.json``: a killed search picks up where it stopped); the prefix
is ``slimnet.search.OUTPUT_PREFIX``. ``--strategy`` picks a registered search strategy
(``slimnet.search.STRATEGIES``; greedy by default), whose options dataclass gives its flags. The state
is keyed on the checkpoint's weights: after more training (or a replaced checkpoint) the same
command starts afresh, saying why, and removes the old search's results from the folder.
"""
from __future__ import annotations

import os
import sys
import warnings

import torch

from ..checkpoint import load_supernet, weights_fingerprint
from ..profile import format_count
from ..search import (
    OUTPUT_PREFIX,
    STRATEGIES,
    Budget,
    ChildLatency,
    SearchError,
    check_budgets,
    check_searchable,
    make_budgets,
    option_minimums,
    options_from_args,
    output_names,
    read_state,
    stale_state,
    state_file,
    write_outputs,
)
from ..search import add_option_arguments as add_search_option_arguments
from ..search.scorer import calibration_count
from ..utils import check_output_dir, clean_stale_temps, pick_device
from .common import (
    add_checkpoint_args,
    add_data_args,
    add_debug,
    calibration_data,
    check_counts,
    checkpoint_experiment,
    in_training_memory_format,
    load_bundle,
    parse_count,
    preload,
    resolve_checkpoint,
)


def add_arguments(p):
    add_checkpoint_args(p)
    b = p.add_argument_group("budgets (repeatable; one search serves all)")
    b.add_argument("--macs", "--flops", dest="macs", type=parse_count, action="append", default=[], metavar="MACS",
                   help="MACs budget: 150M, 1.5G, 150e6 or 150000000 (--flops: the same)")
    b.add_argument("--params", type=parse_count, action="append", default=[], metavar="N",
                   help="parameter budget, e.g. 2M")
    b.add_argument("--latency", type=float, action="append", default=[], metavar="MS",
                   help="latency budget in milliseconds, measured on --device: the plain child's forward pass "
                        "at --latency-batch (median of 20 runs) after every search step")
    b.add_argument("--latency-batch", type=int, default=1, help="batch size of the latency measurement (default 1)")
    s = p.add_argument_group("search")
    s.add_argument("--strategy", choices=sorted(STRATEGIES), default="greedy", help="search strategy (default greedy)")
    add_search_option_arguments(s, [strategy.options_type for strategy in STRATEGIES.values()])
    s.add_argument("--search-images", type=int, default=None, help="held-out images to score on (default: all)")
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
    budgets = [Budget(kind, value) for kind, value in (old.get("settings") or {}).get("budgets", [])]
    names = output_names([b for b in budgets if old["found"].get(b.label) is not None], OUTPUT_PREFIX)
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


def _checked_budgets(args, net, device):
    """The budgets and the latency metric, checked against the supernet before any data is read."""
    budgets = make_budgets(args.macs, args.params, args.latency)
    latency = None
    if args.latency:
        net.to(device)
        latency = ChildLatency(net, net.arch["input_size"], args.latency_batch, device)
    check_budgets(net.space, budgets, latency=latency)
    return budgets, latency


def _calibration_images(options, exp, bundle, args):
    """The images candidates' BN statistics come from when the options recalibrate (the one
    calibration policy of every tool); None for batch-statistics scoring."""
    if options.bn == "batch":
        return None
    count = calibration_count(options.bn, options.calib_num)
    return torch.cat([x for x, _ in calibration_data(exp, bundle, count, args, torch.device("cpu"))])


def _search(args, net, images, labels, calib, budgets, latency, state, device):
    """Run the chosen strategy; its warnings become 'warning:' lines on stderr."""
    strategy = STRATEGIES[args.strategy]
    options = options_from_args(strategy.options_type, args)
    log = (lambda m: None) if args.quiet else (lambda m: print(m, flush=True))
    log(f"searching {net.space.model} ({len(net.space)} groups) on {len(images)} held-out images, "
        f"device {device}, BN scoring '{options.bn}'")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        search = strategy(net.to(device), images, labels, options, budgets=budgets, latency=latency,
                          calib_images=calib, state_path=state, resume=True, device=device, log=log)
        result = search.run(args.max_steps)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    return result


def _print_summary(result, paths, lat: bool, state: str) -> None:
    """The table of budgets (MACs, params, latency, held-out top-1, step, file)."""
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
    print(f"trajectory: {paths['trajectory_csv']} ({len(result.trajectory)} steps)" +
          (f", plot: {paths['plot']}" if "plot" in paths else ""))
    if not result.finished:
        print(f"search stopped before every budget was met; run again to resume from {state}")


def run(args) -> int:
    if not args.macs and not args.params and not args.latency:
        raise ValueError("give at least one budget: --macs 150M (or --flops), --params 2M and/or --latency 5 "
                         "(milliseconds), each repeatable")
    options_type = STRATEGIES[args.strategy].options_type
    check_counts(args, latency_batch=1, batch_size=1, search_images=2, **option_minimums(options_type),
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
    budgets, latency = _checked_budgets(args, net, device)
    exp = checkpoint_experiment(ckpt, args)
    if not exp.data.heldout_size:
        raise ValueError("the search scores candidates on a held-out split of the training set and this checkpoint's "
                         "config has none: give --heldout-size N (ideally the split the supernet was trained without)")
    bundle = load_bundle(exp, "the search", net)
    in_training_memory_format(net, exp)
    images, labels = preload(bundle.heldout, args.search_images)
    calib = _calibration_images(options_from_args(STRATEGIES[args.strategy].options_type, args), exp, bundle, args)
    os.makedirs(out, exist_ok=True)
    clean_stale_temps(out)
    state = state_file(out, OUTPUT_PREFIX)
    if args.fresh and os.path.exists(state):
        os.remove(state)
    elif os.path.exists(state):
        _drop_stale_search(state, out, net)
    result = _search(args, net, images, labels, calib, budgets, latency, state, device)
    paths = write_outputs(result, out, plot=not args.no_plot, prefix=OUTPUT_PREFIX)
    _print_summary(result, paths, bool(args.latency), state)
    return 0
