"""AutoSlim greedy channel search.

Start at the supernet's max config. Each step, every channel group above its minimum is slimmed
by one step (``space.slim_candidates``: 1/12 of the group's max, rounded to its divisor); every
candidate is scored on a fixed held-out set and the best one is kept. The search goes on until
every budget is met; the config is recorded each time the trajectory crosses a budget, so one
trajectory serves every budget.

Cost is the whole fight (a MobileNet v2 search evaluates thousands of candidates), so:

* held-out images are preloaded once into one tensor on the device; inference mode, big batches;
  MACs / params are analytic (``slimnet.profile``), never measured;
* **prefix reuse**: the model is split into a pipeline of stages (the blocks of its
  ``nn.Sequential`` feature stack, then the head). A candidate that changes group ``g`` only
  changes stages from the first one that references ``g``: for each chunk of images the stages
  before it are run once at the current config and their outputs are shared by all candidates.
  The split is verified numerically against the model's own forward; a model that does not fit
  falls back to one stage (a full forward per candidate);
* **BN during scoring** (``bn=``): a universally slimmable supernet has no BN statistics for a
  candidate. ``"batch"`` scores with train-mode BN, i.e. the batch statistics of the scoring
  chunks (no calibration pass at all); ``"recalibrate"`` computes each candidate's exact
  statistics on ``calib_num`` images (``slimnet.calibrate_bn`` semantics, sharing the prefix too:
  the statistics of the unchanged layers are the current config's) and scores in eval mode;
  ``"subset"`` is the same on fewer images. bench/bench_search.py measures how well each ranks
  candidates against full recalibration;
* **prescreening** (``prescreen=N, leaders=k``): score every candidate on the first N images (the
  same ones every step) and re-score only the k leaders on the whole set; the leader with the best
  whole-set score is chosen and its whole-set score is what the trajectory records;
* **batched greedy** (``removals="auto"``): while the current config is far from the budgets, one
  iteration applies the best few candidates at once (distinct groups: each candidate slims one
  group), as long as together they remove at most ``removal_rate`` of the distance (MACs, or
  params for params budgets) to the smallest pending budget and the result still misses every
  pending budget. So every budget is crossed by an exact one-step greedy iteration, and close to
  the last budget the search is exact greedy. The trajectory has one row per applied removal
  (``iteration`` numbers the scoring rounds); only the first removal of an iteration was scored,
  the later rows have ``top1``/``loss`` None. ``removals=1`` is the paper's exact one-step greedy.

**Latency budgets** (``latency_ms=``) are measured, not computed: after each removal the plain
child with the new channels (``type(net)(**net.arch, channels=cfg)``, weights do not matter) runs
on the search's device (batch ``latency_batch``, eval mode; ``slimnet.profile.measure_latency``:
median of 20 timed runs) and a latency budget is met by the first trajectory config measured at or
under it. Measurements are cached per config and kept in the trajectory (``latency_ms``), so a
resumed search does not re-measure what it already has; they are only as stable as the machine.

The search writes its state after every step (atomically); ``resume=True`` continues a killed
search where it stopped and yields the same trajectory as an uninterrupted run. The state is keyed
on the supernet's weights (``slimnet.checkpoint.weights_fingerprint``: parameters and BN buffers,
not per-config calibrated statistics) as well as on the model, budgets and options: a state whose
supernet was trained further or replaced is not resumed, the search starts afresh (and says why).
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .checkpoint import weights_fingerprint
from .nn import (
    CalibratableBN,
    PerGroup,
    SlimBatchNorm2d,
    StatsCollector,
    SwitchableBatchNorm2d,
    calibrated_stats,
    ref_groups,
    restore_calibrated_stats,
)
from .profile import format_count, measure_latency, profile
from .space import ChannelConfig
from .utils import atomic_write_text, json_safe

BN_SCORING = ("batch", "recalibrate", "subset")
DEFAULT_PRESCREEN = 500       # images (off when the held-out set is not larger); bench/bench_search.py part "agreement"
DEFAULT_LEADERS = 3
DEFAULT_REMOVALS = "auto"     # "auto" (batched greedy far from the budgets) or 1 (exact one-step greedy)
DEFAULT_REMOVAL_RATE = 0.1    # "auto": one iteration removes at most this fraction of the MACs distance to the smallest budget
DEFAULT_BN = "batch"          # measured in bench/bench_search.py (see docs/RESULTS.md)
STATE_VERSION = 2             # 2: settings carry the supernet's weights fingerprint


class SearchError(ValueError):
    """Bad search input (budgets, model, data)."""


# ---------------------------------------------------------------------------------------------
# budgets
# ---------------------------------------------------------------------------------------------
BUDGET_WHAT = {"macs": "MACs", "params": "params", "latency": "latency"}


@dataclass(frozen=True)
class Budget:
    kind: str      # "macs" | "params" | "latency" (value in microseconds)
    value: int

    @property
    def label(self) -> str:
        """File-name label: 150M -> 'autoslim_150M', params 2M -> 'autoslim_params_2M', latency
        2.5 ms -> 'autoslim_latency_2.5ms'."""
        if self.kind == "latency":
            return f"autoslim_latency_{self.value / 1000:g}ms"
        text = _short(self.value)
        return f"autoslim_{text}" if self.kind == "macs" else f"autoslim_params_{text}"

    def show(self, value: float | None = None) -> str:
        """``value`` (default: the budget's) in this budget's unit, for messages."""
        v = self.value if value is None else value
        return f"{v / 1000:.4g} ms" if self.kind == "latency" else f"{format_count(v)} {BUDGET_WHAT[self.kind]}"


def _short(n: int) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{float(f'{n / scale:.4g}'):g}{unit}"
    return str(int(n))


def make_budgets(flops: Sequence[int] = (), params: Sequence[int] = (),
                 latency_ms: Sequence[float] = ()) -> list[Budget]:
    for v in latency_ms:
        if not (v > 0 and math.isfinite(v)):
            raise SearchError(f"latency budget must be a positive number of milliseconds, got {v}")
        if round(v * 1000) < 1:
            raise SearchError(f"latency budget {v} ms rounds to 0 microseconds (latencies are kept in whole "
                              "microseconds): give at least 0.001 ms")
    budgets = ([Budget("macs", int(v)) for v in flops] + [Budget("params", int(v)) for v in params]
               + [Budget("latency", int(round(v * 1000))) for v in latency_ms])
    for b in budgets:
        if b.value <= 0:
            raise SearchError(f"budget must be positive, got {b.value}")
    if not budgets:
        raise SearchError("give at least one budget (flops=[...] MACs, params=[...] and/or latency_ms=[...])")
    return sorted(set(budgets), key=lambda b: (b.kind, -b.value))


class ChildLatency:
    """Measured latency (microseconds) of the plain child of each config, cached by config key."""

    def __init__(self, net, input_size: int, batch: int = 1, device=None, repeats: int = 20):
        self.net, self.batch, self.repeats = net, int(batch), repeats
        self.shape = (self.batch, net.arch["in_channels"], input_size, input_size)
        self.device = torch.device(device) if device is not None else next(net.parameters()).device
        self.cache: dict[str, int] = {}

    def __call__(self, cfg: ChannelConfig) -> int:
        if cfg.key not in self.cache:
            child = type(self.net)(**self.net.arch, channels=cfg).to(self.device).eval()
            ms = measure_latency(child, self.shape, device=self.device, warmup=3, repeats=self.repeats)
            self.cache[cfg.key] = int(round(ms * 1000))
        return self.cache[cfg.key]


def check_budgets(space, budgets: Sequence[Budget], input_size: int | None = None,
                  latency: Callable[[ChannelConfig], int] | None = None) -> list[str]:
    """Raise if a budget is below the min config; return warnings for budgets at/above the max.
    Latency budgets need ``latency`` (config -> microseconds, e.g. :class:`ChildLatency`)."""
    lo, hi = profile(space, space.min(), input_size), profile(space, space.max(), input_size)
    notes = []
    for b in budgets:
        if b.kind == "latency":
            if latency is None:
                raise SearchError("latency budgets are measured: pass latency= (e.g. ChildLatency(net, input_size))")
            low, high = latency(space.min()), latency(space.max())
        else:
            low, high = (lo.macs, hi.macs) if b.kind == "macs" else (lo.params, hi.params)
        if b.value < low:
            if b.kind == "latency":
                got, has, use = b.show(), f"{b.show(low)} (measured on this device)", b.show(low)
            else:
                got, has, use = f"{format_count(b.value)} ({b.value:,})", f"{b.show(low)} ({low:,})", f"{low:,}"
            raise SearchError(f"{BUDGET_WHAT[b.kind]} budget {got} is below the smallest config of this supernet: "
                              f"its min config has {has}; use a budget >= {use}")
        if b.value >= high:
            notes.append(f"budget {b.show()} is at or above the max config "
                         f"({b.show(high)}): its result is the max config")
    return notes


# ---------------------------------------------------------------------------------------------
# the model as a pipeline of stages (for prefix reuse)
# ---------------------------------------------------------------------------------------------
class _Head(nn.Module):
    def __init__(self, pool, classifier):
        super().__init__()
        self.pool, self.classifier = pool, classifier

    def forward(self, x):
        return self.classifier(torch.flatten(self.pool(x), 1))


def _refs(module: nn.Module) -> set:
    names = set()
    for m in module.modules():
        for attr in ("in_ref", "out_ref", "ref"):
            ref = getattr(m, attr, None)
            if isinstance(ref, (str, tuple, PerGroup)):
                names.update(ref_groups(ref))
    return names


def pipeline_stages(net) -> list[nn.Module]:
    """The stages whose composition is ``net``'s forward: the blocks of its Sequential body
    (``stem`` / ``features`` / ``layers`` / ``units``), then pool + classifier. Returns
    ``[net]`` when the model does not have that shape. Verified by the caller."""
    body = [getattr(net, n) for n in ("stem", "features", "layers", "units") if isinstance(getattr(net, n, None), nn.Sequential)]
    classifier = getattr(net, "classifier", None) or getattr(net, "fc", None)
    pool = getattr(net, "pool", None)
    if not body or classifier is None or pool is None:
        return [net]
    stages = [m for seq in body for m in seq]
    return stages + [_Head(pool, classifier)]


# ---------------------------------------------------------------------------------------------
# candidate scoring
# ---------------------------------------------------------------------------------------------
@dataclass
class Score:
    correct: int = 0
    loss: float = 0.0
    images: int = 0

    @property
    def top1(self) -> float:
        return 100.0 * self.correct / max(self.images, 1)

    @property
    def mean_loss(self) -> float:
        return self.loss / max(self.images, 1)

    def key(self):
        """Sort key, best first: higher accuracy, then lower loss."""
        return (-self.correct / max(self.images, 1), self.mean_loss)


class CandidateScorer:
    """Scores many configs of one supernet on preloaded images, sharing unchanged prefixes.

    ``images``/``labels``: the held-out set (tensors, moved to ``device`` once). ``calib``: the
    images BN statistics are computed from for ``bn="recalibrate"``/``"subset"`` (default: the
    held-out images). ``batch_size`` is the chunk size (also the BN batch in ``"batch"`` mode
    and the calibration batch).
    """

    def __init__(self, net, images: torch.Tensor, labels: torch.Tensor, *, bn: str = DEFAULT_BN,
                 calib: torch.Tensor | None = None, calib_num: int | None = None, batch_size: int = 500,
                 device=None, reuse_prefix: bool = True):
        if bn not in BN_SCORING:
            raise SearchError(f"bn must be one of {BN_SCORING}, got {bn!r}")
        check_searchable(net)
        self.net = net
        self.device = torch.device(device) if device is not None else next(net.parameters()).device
        self.images = images.to(self.device)
        self.labels = labels.to(self.device).long()
        if len(self.images) != len(self.labels) or len(self.images) < 2:
            raise SearchError(f"need >= 2 held-out images with one label each, got {len(self.images)} images "
                              f"and {len(self.labels)} labels")
        self.bn = bn
        if calib_num is None:
            calib_num = 2000 if bn == "recalibrate" else 500
        calib = self.images if calib is None else calib.to(self.device)
        self.calib = calib[:calib_num]
        self.batch_size = int(batch_size)
        self.bn_layers = [m for m in net.modules() if isinstance(m, CalibratableBN)]
        self.collector = StatsCollector(self.bn_layers)
        self.stages = self._verified_stages() if reuse_prefix else [net]
        self.first_stage = self._first_stages()
        self.stage_bns = [[m for m in s.modules() if isinstance(m, CalibratableBN)] for s in self.stages]
        self.forwards = 0          # stage-images run, for the benchmark's bookkeeping

    # -- structure --------------------------------------------------------------------------
    @torch.inference_mode()
    def _verified_stages(self) -> list[nn.Module]:
        stages = pipeline_stages(self.net)
        if len(stages) == 1:
            return stages
        net, x = self.net, self.images[:4]
        modes = {m: m.training for m in net.modules()}
        net.eval()
        try:
            with self.collector:   # BN on batch statistics: no calibrated stats needed for the check
                ref = net(x)
                y = x
                for s in stages:
                    y = s(y)
            ok = y.shape == ref.shape and torch.allclose(y, ref, atol=1e-5, rtol=1e-4)
        finally:
            for m, training in modes.items():
                m.training = training
        if not ok:
            warnings.warn(f"{type(net).__name__}: forward is not the composition of its stages; "
                          "searching without prefix reuse (a full forward per candidate)")
            return [net]
        return stages

    def _first_stages(self) -> dict[str, int]:
        first = {}
        for i, stage in enumerate(self.stages):
            for g in _refs(stage):
                first.setdefault(g, i)
        return first

    def start_of(self, cur: ChannelConfig, cand: ChannelConfig) -> int:
        changed = [g for g in cand if cand[g] != cur[g]]
        if not changed:
            return len(self.stages) - 1
        return min(self.first_stage.get(g, 0) for g in changed)

    # -- running stages ---------------------------------------------------------------------
    def _run(self, x, start: int, stop: int | None = None, keep: set | None = None, store=None):
        stop = len(self.stages) if stop is None else stop
        for i in range(start, stop):
            if keep is not None and i in keep:
                store[i] = x
            x = self.stages[i](x)
            self.forwards += x.shape[0]
        if keep is not None and stop in keep:
            store[stop] = x
        return x

    # -- BN statistics for candidates --------------------------------------------------------
    def calibrate(self, cur: ChannelConfig, cands: Sequence[ChannelConfig], full: bool = False) -> None:
        """Exact BN statistics of every candidate (as ``calibrate_bn`` on ``self.calib`` in chunks
        of ``batch_size``), stored under each candidate's key. The statistics of layers before a
        candidate's first changed stage are the current config's (``full=False``: ``cur`` must
        be calibrated) or computed too (``full=True``, for ``cur`` itself)."""
        last_bn = max((i for i, b in enumerate(self.stage_bns) if b), default=0) + 1
        starts = {c.key: (0 if full else self.start_of(cur, c)) for c in cands}
        stats = {c.key: self.collector.new_stats(m for i in range(starts[c.key], last_bn) for m in self.stage_bns[i])
                 for c in cands}
        self.net.eval()
        with self.collector, torch.inference_mode():
            self._calibration_passes(cur, cands, starts, stats, last_bn)
        # stored outside inference mode: the buffers must be ordinary tensors
        with torch.no_grad():
            for c in cands:
                self.net.set_channels(c)
                self.collector.store(stats[c.key])
                if c.key != cur.key:   # the unchanged prefix: the current config's statistics
                    self.collector.copy_stats([m for m in self.bn_layers if m not in stats[c.key]], cur.key)
        self.net.set_channels(cur)

    def _calibration_passes(self, cur, cands, starts, stats, last_bn):
        keep = set(starts.values())
        for lo in range(0, len(self.calib), self.batch_size):
            x = self.calib[lo: lo + self.batch_size]
            store = {}
            self.net.set_channels(cur)
            self._run(x, 0, max(keep), keep, store)
            for c in cands:
                s = starts[c.key]
                self.net.set_channels(c)
                with self.collector.recording(stats[c.key]):
                    self._run(store[s] if s > 0 else x, s, last_bn)

    def drop(self, keys) -> None:
        for m in self.bn_layers:
            for k in keys:
                m.drop_stats(k)

    # -- scoring ------------------------------------------------------------------------------
    @torch.inference_mode()
    def score(self, cur: ChannelConfig, cands: Sequence[ChannelConfig], num_images: int | None = None) -> list[Score]:
        """Top-1 / loss of every candidate on the first ``num_images`` held-out images (all by
        default). In ``"batch"`` mode BN uses chunk statistics; otherwise each candidate's
        stored statistics (see ``calibrate``)."""
        net = self.net
        n = len(self.images) if num_images is None else min(int(num_images), len(self.images))
        starts = [self.start_of(cur, c) for c in cands]
        scores = [Score() for _ in cands]
        net.eval()
        # "batch": BN normalises with each chunk's statistics; otherwise with the stored ones
        with self.collector if self.bn == "batch" else contextlib.nullcontext():
            # equal chunks (no small ragged last one: in "batch" mode a chunk is a BN batch)
            k = math.ceil(n / self.batch_size)
            bounds = [round(i * n / k) for i in range(k + 1)]
            for lo, hi in zip(bounds, bounds[1:]):
                self._score_chunk(cur, cands, starts, scores, self.images[lo:hi], self.labels[lo:hi])
        net.set_channels(cur)
        return scores

    def _score_chunk(self, cur, cands, starts, scores, x, y):
        keep = set(starts)
        store = {}
        self.net.set_channels(cur)
        if max(keep) > 0:
            self._run(x, 0, max(keep), keep, store)
        for c, s, sc in zip(cands, starts, scores):
            self.net.set_channels(c)
            logits = self._run(store[s] if s > 0 else x, s).float()
            sc.correct += int((logits.argmax(1) == y).sum())
            sc.loss += float(F.cross_entropy(logits, y, reduction="sum"))
            sc.images += len(y)


def check_searchable(net) -> None:
    if getattr(net, "is_child", False):
        raise SearchError("the search needs a supernet; this is an exported child with fixed channels")
    if any(isinstance(m, SwitchableBatchNorm2d) for m in net.modules()):
        raise SearchError("the search needs a universally slimmable supernet (bn='universal'): this one has "
                          "switchable BN, which only has statistics for its fixed list of widths. Train an "
                          "AutoSlim supernet with bn: universal")
    if any(isinstance(m, SlimBatchNorm2d) and m.track_shared_stats for m in net.modules()):
        raise SearchError("the search needs a universally slimmable supernet (bn='universal'), not shared BN")


# ---------------------------------------------------------------------------------------------
# the greedy search
# ---------------------------------------------------------------------------------------------
@dataclass
class SearchResult:
    """``trajectory``: one row per applied removal (step, iteration, group, channels, macs, params,
    top1, loss, candidates, elapsed_s, config; top1/loss None for the unscored later removals of
    a batched iteration). ``configs``: budget label -> config (``None`` while not reached).
    ``finished``: every budget reached."""

    budgets: list[Budget]
    trajectory: list[dict]
    configs: dict[str, ChannelConfig | None]
    finished: bool
    notes: list[str] = field(default_factory=list)

    def config_for(self, kind: str, value: int) -> ChannelConfig | None:
        return self.configs.get(Budget(kind, int(value)).label)


def _settings(net, budgets, n_images, bn, calib_num, n_calib, fraction, batch_size, prescreen, leaders, input_size,
              removals, removal_rate, latency_batch):
    return {"model": net.space.model, "arch": {k: v for k, v in net.arch.items()},
            "weights": weights_fingerprint(net),
            "groups": {g.name: [g.min, g.max, g.divisor] for g in net.space},
            "budgets": [[b.kind, b.value] for b in budgets], "images": n_images, "bn": bn,
            "calib_images": n_calib if bn != "batch" else 0, "fraction": fraction, "batch_size": batch_size,
            "prescreen": prescreen, "leaders": leaders, "input_size": input_size, "removals": removals,
            "removal_rate": removal_rate if removals == "auto" else None,
            **({"latency_batch": latency_batch} if latency_batch is not None else {})}


def _batched_picks(cur, cands, ranked, value, pending, rate) -> list[int]:
    """Batched greedy: the best candidate, then the next best ones (distinct groups: one candidate
    per group) applied together, as long as the iteration removes at most ``rate`` of the
    distance from the current config to the smallest pending budget (per budget kind) and the
    result still misses every pending budget: a budget is always crossed by an exact one-step
    greedy iteration. ``value(cfg, kind)``: the config's MACs / params / latency. Returns
    candidate indices in order of application."""
    kinds = {b.kind for b in pending}
    v0 = {k: value(cur, k) for k in kinds}
    cap = {k: rate * (v0[k] - min(b.value for b in pending if b.kind == k)) for k in kinds}

    def fits(cfg):
        return (all(v0[k] - value(cfg, k) <= cap[k] for k in kinds)
                and not any(value(cfg, b.kind) <= b.value for b in pending))

    picks, new = [], cur
    for i in ranked:
        group, cand = cands[i]
        trial = new.replace(**{group: cand[group]})
        if not fits(trial):
            break
        picks.append(i)
        new = trial
    return picks or ranked[:1]


def read_state(path) -> dict:
    """A search state file, or SearchError naming it (truncated, not JSON, not a search state)."""
    try:
        with open(path) as f:
            state = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SearchError(f"{path} is truncated or not a search state ({e}); run the search with --fresh to start "
                          "it over (or delete the file)") from None
    except IsADirectoryError:
        raise SearchError(f"{path} is a folder, not a search state file; remove it or search with --out "
                          "elsewhere") from None
    keys = ("version", "settings", "current", "trajectory", "found", "elapsed_s")
    if not isinstance(state, dict) or any(k not in state for k in keys):
        raise SearchError(f"{path} is not a complete search state (expected the keys {', '.join(keys)}); run the "
                          "search with --fresh to start it over (or delete the file)")
    return state


def stale_state(state: dict, fingerprint: str) -> str | None:
    """Why a saved search state does not belong to the supernet whose ``weights_fingerprint`` is
    ``fingerprint`` (None when it does): it was trained further or replaced since, or the state
    predates weight fingerprints."""
    if state.get("version") != STATE_VERSION:
        return (f"it was written by another slimnet version (state version {state.get('version')}, now "
                f"{STATE_VERSION}) without a fingerprint of the supernet's weights")
    old, now = (state.get("settings") or {}).get("weights"), fingerprint
    if old != now:
        return (f"it was searched on other weights (fingerprint {old}, this checkpoint's {now}: the supernet was "
                "trained further or replaced since)")
    return None


def greedy_slim(net, images: torch.Tensor, labels: torch.Tensor, *, flops: Sequence[int] = (),
                params: Sequence[int] = (), latency_ms: Sequence[float] = (), latency_batch: int = 1,
                latency: ChildLatency | None = None,
                bn: str = DEFAULT_BN, calib_images: torch.Tensor | None = None,
                calib_num: int | None = None, fraction: float = 1 / 12, batch_size: int = 500,
                prescreen: int | None = DEFAULT_PRESCREEN, leaders: int = DEFAULT_LEADERS,
                removals: str | int = DEFAULT_REMOVALS,
                removal_rate: float = DEFAULT_REMOVAL_RATE, input_size: int | None = None,
                state_path: str | os.PathLike | None = None, resume: bool = False,
                max_steps: int | None = None, device=None, reuse_prefix: bool = True,
                log: Callable[[str], None] | None = None) -> SearchResult:
    """AutoSlim greedy search on a universally slimmable supernet.

    Args:
        images, labels: the held-out set (preloaded tensors; moved to ``device`` once).
        flops, params: budgets (MACs, parameters); every budget gets the first config of the
            trajectory at or under it.
        latency_ms, latency_batch: latency budgets (milliseconds) measured on ``device`` at this
            batch size (see the module docstring).
        latency: a :class:`ChildLatency` to reuse (its measurements and its batch size) instead of
            a new one, e.g. the one a caller checked the budgets with.
        bn: BN handling while scoring: ``"batch"`` | ``"recalibrate"`` | ``"subset"``.
        calib_images / calib_num: images for BN statistics (default: the held-out images; 2000
            for ``"recalibrate"``, 500 for ``"subset"``).
        fraction: one step of a group = ``fraction`` of its max channels.
        prescreen, leaders: score all candidates on the first ``prescreen`` images and re-score
            the ``leaders`` best on all images (``None`` / 0, or a held-out set of at most
            ``prescreen`` images: every candidate on all images).
        removals, removal_rate: ``"auto"``: batched greedy far from the budgets (see the module
            docstring); ``1``: exact one-step greedy.
        state_path, resume: the state file written after every step; with ``resume=True`` and
            an existing state file of this supernet's weights the search continues from it (a state
            of other weights is ignored, with a log line; one of other settings raises SearchError).
        max_steps: stop after this many iterations (scoring rounds) in this call (the state file
            allows resuming).

    Returns a :class:`SearchResult`. The net is left at its max config with the BN statistics it
    had before (statistics computed for candidates are dropped).
    """
    log = log or (lambda msg: None)
    check_searchable(net)
    space = net.space
    input_size = int(input_size or space.arch["input_size"])
    budgets = make_budgets(flops, params, latency_ms)
    device = torch.device(device) if device is not None else next(net.parameters()).device
    if not any(b.kind == "latency" for b in budgets):
        latency = None
    elif latency is None:
        latency = ChildLatency(net, input_size, latency_batch, device)
    notes = check_budgets(space, budgets, input_size, latency)
    for note in notes:
        warnings.warn(note)
    if not 0 < fraction <= 1:
        raise SearchError(f"fraction must be in (0, 1], got {fraction}")
    if str(removals) not in ("auto", "1"):
        raise SearchError(f"removals must be 'auto' or 1, got {removals!r}")
    removals = "auto" if str(removals) == "auto" else 1
    if not 0 < removal_rate <= 1:
        raise SearchError(f"removal_rate must be in (0, 1], got {removal_rate}")
    net.to(device)
    scorer = CandidateScorer(net, images, labels, bn=bn, calib=calib_images, calib_num=calib_num,
                             batch_size=batch_size, device=device, reuse_prefix=reuse_prefix)
    settings = _settings(net, budgets, len(scorer.images), bn, calib_num, len(scorer.calib), fraction,
                         batch_size, prescreen, leaders, input_size, removals, removal_rate,
                         latency.batch if latency is not None else None)
    state_path = os.fspath(state_path) if state_path is not None else None

    saved_stats = calibrated_stats(net)
    trajectory: list[dict] = []
    found: dict[str, dict | None] = {b.label: None for b in budgets}
    elapsed0 = 0.0
    cur = space.max()
    state, reason = None, None
    if resume and state_path and os.path.exists(state_path):
        state = read_state(state_path)
        reason = stale_state(state, settings["weights"])
        if reason is None and state["settings"] != settings:
            raise SearchError(f"{state_path} was written by a search with other settings (model, budgets, "
                              "images or search options differ); search with --fresh to start over (or delete it)")
    if reason is not None:
        log(f"not resuming {state_path}: {reason}; starting the search afresh")
    elif state is not None:
        trajectory = state["trajectory"]
        found = state["found"]
        elapsed0 = float(state["elapsed_s"])
        cur = space.config(state["current"])
        if latency is not None:   # keep the measurements the trajectory was built on
            latency.cache.update({space.config(r["config"]).key: r["latency_us"] for r in trajectory
                                  if r.get("latency_us") is not None})
        log(f"resuming at step {len(trajectory) - 1} ({format_count(trajectory[-1]['macs'])} MACs)")

    t0 = time.perf_counter()

    costs: dict[str, object] = {}

    def cost(cfg):   # every budget check, batched pick and trajectory row asks: compute once per config
        if cfg.key not in costs:
            costs[cfg.key] = profile(space, cfg, input_size)
        return costs[cfg.key]

    def value(cfg, kind):
        if kind == "latency":
            return latency(cfg)
        c = cost(cfg)
        return c.macs if kind == "macs" else c.params

    def measured(row, cfg):
        if latency is not None:
            row["latency_us"] = latency(cfg)
            row["latency_ms"] = round(row["latency_us"] / 1000, 3)
        return row

    def elapsed():
        return round(elapsed0 + time.perf_counter() - t0, 3)

    def save_state():
        if state_path:
            state = {"version": STATE_VERSION, "settings": settings, "current": dict(cur.channels),
                     "trajectory": trajectory, "found": found, "elapsed_s": elapsed(),
                     "finished": all(v is not None for v in found.values())}
            atomic_write_text(state_path, json.dumps(json_safe(state), allow_nan=False) + "\n")

    def record(row, cfg):
        for b in budgets:
            if found[b.label] is None and value(cfg, b.kind) <= b.value:
                found[b.label] = {"step": row["step"], "channels": dict(cfg.channels)}

    try:
        if bn != "batch":
            scorer.calibrate(cur, [cur], full=True)
        if not trajectory:
            sc = scorer.score(cur, [cur])[0]
            c = cost(cur)
            row = {"step": 0, "iteration": 0, "group": None, "channels": None, "macs": c.macs, "params": c.params,
                   "top1": round(sc.top1, 4), "loss": round(sc.mean_loss, 6), "candidates": 0,
                   "elapsed_s": elapsed(), "config": dict(cur.channels)}
            trajectory.append(measured(row, cur))
            record(row, cur)
            save_state()
            log(f"step 0: max config, {format_count(c.macs)} MACs, top-1 {sc.top1:.2f}%")
        steps = 0
        while not all(v is not None for v in found.values()):
            if max_steps is not None and steps >= max_steps:
                break
            cands = space.slim_candidates(cur, fraction)
            if not cands:
                break  # everything at its min (cannot happen past check_budgets; kept for safety)
            cfgs = [c for _, c in cands]
            if bn != "batch":
                scorer.calibrate(cur, cfgs)
            n_full = len(scorer.images)
            if prescreen and prescreen < n_full and len(cfgs) > leaders:
                pre = scorer.score(cur, cfgs, prescreen)
                by_pre = sorted(range(len(cfgs)), key=lambda i: (pre[i].key(), i))
                lead = by_pre[:leaders]
                full = dict(zip(lead, scorer.score(cur, [cfgs[i] for i in lead])))
                # leaders by their full-set score, then the others by their prescreen score
                ranked = sorted(lead, key=lambda i: (full[i].key(), i)) + by_pre[leaders:]
            else:
                full = dict(enumerate(scorer.score(cur, cfgs)))
                ranked = sorted(range(len(cfgs)), key=lambda i: (full[i].key(), i))
            picks = [ranked[0]]
            if removals == "auto":
                picks = _batched_picks(cur, cands, ranked, value, [b for b in budgets if found[b.label] is None],
                                       removal_rate)
            if bn != "batch":
                scorer.drop([c.key for c in cfgs if c.key != cfgs[picks[0]].key or len(picks) > 1] + [cur.key])
            iteration = (trajectory[-1].get("iteration", trajectory[-1]["step"]) + 1) if trajectory else 1
            for j, i in enumerate(picks):
                group = cands[i][0]
                cur = cur.replace(**{group: cands[i][1][group]})
                c = cost(cur)
                sc = full[i] if j == 0 else None   # later removals of a batched iteration are not scored
                row = {"step": len(trajectory), "iteration": iteration, "group": group, "channels": cur[group],
                       "macs": c.macs, "params": c.params,
                       "top1": round(sc.top1, 4) if sc else None, "loss": round(sc.mean_loss, 6) if sc else None,
                       "candidates": len(cfgs) if j == 0 else 0, "elapsed_s": elapsed(), "config": dict(cur.channels)}
                trajectory.append(measured(row, cur))
                record(row, cur)
            if bn != "batch" and len(picks) > 1:
                scorer.calibrate(cur, [cur], full=True)   # the next step's prefix statistics
            save_state()
            steps += 1
            best_score = full[picks[0]]
            log(f"step {row['step']}: {', '.join(f'{cands[i][0]} -> {cur[cands[i][0]]}' for i in picks)}, "
                f"{format_count(c.macs)} MACs, {format_count(c.params)} params, top-1 {best_score.top1:.2f}% "
                f"({len(cfgs)} candidates, {row['elapsed_s']:.1f}s)")
    finally:
        # leave the net as it was: max config, its own BN statistics only
        restore_calibrated_stats(net, saved_stats)
        net.set_channels(space.max())

    configs = {label: (space.config(v["channels"]) if v is not None else None) for label, v in found.items()}
    return SearchResult(budgets=budgets, trajectory=trajectory, configs=configs,
                        finished=all(v is not None for v in configs.values()), notes=notes)


# ---------------------------------------------------------------------------------------------
# outputs
# ---------------------------------------------------------------------------------------------
TRAJECTORY_FIELDS = ["step", "group", "channels", "macs", "params", "latency_ms", "top1", "loss", "candidates",
                     "elapsed_s", "iteration"]


def write_outputs(result: SearchResult, out_dir: str | os.PathLike, plot: bool = True) -> dict[str, str]:
    """Write one channel JSON per reached budget, the trajectory (JSONL + CSV) and a plot of
    accuracy against MACs. Returns {what: path}."""
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    paths = {}
    for label, cfg in result.configs.items():
        if cfg is not None:
            p = os.path.join(out_dir, f"{label}.json")
            cfg.save(p)
            paths[label] = p
    p = os.path.join(out_dir, "autoslim_trajectory.jsonl")
    atomic_write_text(p, "".join(json.dumps(json_safe(r), allow_nan=False) + "\n" for r in result.trajectory))
    paths["trajectory_jsonl"] = p
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=TRAJECTORY_FIELDS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in result.trajectory:
        w.writerow(r)
    p = os.path.join(out_dir, "autoslim_trajectory.csv")
    atomic_write_text(p, buf.getvalue())
    paths["trajectory_csv"] = p
    if plot:
        from .plots import plot_trajectory
        p = plot_trajectory([r for r in result.trajectory if r["top1"] is not None], os.path.join(out_dir, "autoslim_trajectory.png"),
                            marks={label: cfg for label, cfg in result.configs.items() if cfg is not None})
        if p:
            paths["plot"] = p
    return paths


def rank_correlation(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """(Spearman rho, Kendall tau-b) of two score lists (ties get average ranks / tau-b)."""
    n = len(a)
    if n < 2:
        return float("nan"), float("nan")

    def ranks(v):
        order = sorted(range(n), key=lambda i: v[i])
        r = [0.0] * n
        i = 0
        while i < n:
            j = i
            while j + 1 < n and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                r[order[k]] = (i + j) / 2
            i = j + 1
        return r

    ra, rb = ranks(a), ranks(b)
    ma, mb = sum(ra) / n, sum(rb) / n
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    va = math.sqrt(sum((x - ma) ** 2 for x in ra))
    vb = math.sqrt(sum((y - mb) ** 2 for y in rb))
    rho = cov / (va * vb) if va and vb else float("nan")
    conc = disc = ta = tb = 0
    for i in range(n):
        for j in range(i + 1, n):
            da, db = a[i] - a[j], b[i] - b[j]
            if da == 0 and db == 0:
                continue
            if da == 0:
                ta += 1
            elif db == 0:
                tb += 1
            elif (da > 0) == (db > 0):
                conc += 1
            else:
                disc += 1
    denom = math.sqrt((conc + disc + ta) * (conc + disc + tb))
    tau = (conc - disc) / denom if denom else float("nan")
    return rho, tau
