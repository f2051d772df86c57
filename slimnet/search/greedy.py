"""AutoSlim's greedy search, the default strategy.

Start at the supernet's max config. Each scoring round, every channel group above its minimum is
slimmed by one step (``space.slim_candidates``: ``fraction`` of the group's max, rounded to its
divisor); every candidate is scored on the held-out set and the best one is kept. The search goes
on until every budget is met; the config is recorded each time the trajectory crosses a budget,
so one trajectory serves every budget.

* **prescreening** (``prescreen=N, leaders=k``): score every candidate on the first N images (the
  same ones every round) and re-score only the k leaders on the whole set; the leader with the best
  whole-set score is chosen and its whole-set score is what the trajectory records;
* **batched greedy** (``removals="auto"``): while the current config is far from the budgets, one
  iteration applies the best few candidates at once (distinct groups: each candidate slims one
  group), as long as together they remove at most ``removal_rate`` of the distance (MACs, or
  params for params budgets) to the smallest pending budget and the result still misses every
  pending budget. So every budget is crossed by an exact one-step greedy iteration, and close to
  the last budget the search is exact greedy. The trajectory has one row per applied removal
  (``iteration`` numbers the scoring rounds); only the first removal of an iteration was scored,
  the later rows have ``top1``/``loss`` None. ``removals=1`` is the paper's exact one-step greedy.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from ..profile import format_count
from ..space import ChannelConfig
from .budgets import Budget, SearchError, make_budgets
from .options import ScoringOptions, option
from .run import SearchResult, SearchRun
from .scorer import Score, check_searchable

DEFAULT_PRESCREEN = 500       # images (off when the held-out set is not larger); bench/bench_search.py part "agreement"
DEFAULT_LEADERS = 3
DEFAULT_REMOVALS = "auto"     # "auto" (batched greedy far from the budgets) or 1 (exact one-step greedy)
DEFAULT_REMOVAL_RATE = 0.1    # "auto": one iteration removes at most this fraction of the MACs distance to the smallest budget


@dataclass(frozen=True)
class GreedyOptions(ScoringOptions):
    """Everything that shapes a greedy search's trajectory (with the scoring options it derives)."""

    fraction: float = option(1 / 12, "one step = this fraction of a group's max", type=float)
    prescreen: int | None = option(DEFAULT_PRESCREEN, "score every candidate on this many images first (the same "
                                   "ones every step), re-score only the leaders on all (0: off)", minimum=0, type=int,
                                   from_cli=lambda v: v or None)
    leaders: int = option(DEFAULT_LEADERS, "candidates re-scored on all images after --prescreen", minimum=1,
                          type=int)
    removals: str | int = option(DEFAULT_REMOVALS, "auto: far from the budgets, apply the best few candidates "
                                 "(distinct groups) at once; every budget is still crossed by an exact one-step "
                                 "greedy step. 1: exact greedy", flag="--removals-per-step", choices=["auto", "1"])
    removal_rate: float = option(DEFAULT_REMOVAL_RATE, "with --removals-per-step auto: one step removes at most this "
                                 "fraction of the MACs distance to the smallest budget", type=float)

    def __post_init__(self):
        if str(self.removals) in ("auto", "1"):    # "1" (the command line) is 1
            object.__setattr__(self, "removals", "auto" if str(self.removals) == "auto" else 1)

    def validate(self) -> None:
        if not 0 < self.fraction <= 1:
            raise SearchError(f"fraction must be in (0, 1], got {self.fraction}")
        if self.removals not in ("auto", 1):
            raise SearchError(f"removals must be 'auto' or 1, got {self.removals!r}")
        if not 0 < self.removal_rate <= 1:
            raise SearchError(f"removal_rate must be in (0, 1], got {self.removal_rate}")
        super().validate()

    def fingerprint(self, calib_images: int) -> dict:
        return {**super().fingerprint(calib_images), "fraction": self.fraction, "prescreen": self.prescreen,
                "leaders": self.leaders, "removals": self.removals,
                "removal_rate": self.removal_rate if self.removals == "auto" else None}


# the keywords of greedy_slim that are SearchRun's, not options
RUN_PARAMETERS = set(inspect.signature(SearchRun.__init__).parameters) - {"self", "net", "images", "labels",
                                                                          "options", "budgets"}


class GreedySearch(SearchRun):
    """AutoSlim's greedy search (see the module docstring); ``run()`` it."""

    options_type = GreedyOptions

    def iterate(self) -> bool:
        cur = self.state.current
        cands = self.space.slim_candidates(cur, self.options.fraction)
        if not cands:
            return False  # everything at its min (cannot happen past check_budgets; kept for safety)
        cfgs = [c for _, c in cands]
        if self.scorer.needs_statistics:
            self.scorer.calibrate(cur, cfgs)
        full, ranked = self._rank(cur, cfgs)
        picks = ranked[:1]
        if self.options.removals == "auto":
            picks = batched_picks(cur, cands, ranked, self.costs.value, self.pending_budgets(),
                                  self.options.removal_rate)
        if self.scorer.needs_statistics:
            self.scorer.drop([c.key for c in cfgs if c.key != cfgs[picks[0]].key or len(picks) > 1] + [cur.key])
        last = self.state.trajectory[-1]
        iteration = last.get("iteration", last["step"]) + 1
        for j, i in enumerate(picks):
            group = cands[i][0]
            cur = cur.replace(**{group: cands[i][1][group]})
            row = self.add_row(cur, iteration=iteration, group=group, score=full[i] if j == 0 else None,
                               candidates=len(cfgs) if j == 0 else 0)
        if self.scorer.needs_statistics and len(picks) > 1:
            self.scorer.calibrate(cur, [cur], full=True)   # the next step's prefix statistics
        c = self.costs.of(cur)
        self.log(f"step {row['step']}: {', '.join(f'{cands[i][0]} -> {cur[cands[i][0]]}' for i in picks)}, "
                 f"{format_count(c.macs)} MACs, {format_count(c.params)} params, top-1 {full[picks[0]].top1:.2f}% "
                 f"({len(cfgs)} candidates, {row['elapsed_s']:.1f}s)")
        return True

    def _rank(self, cur: ChannelConfig, cfgs: list[ChannelConfig]) -> tuple[dict[int, Score], list[int]]:
        """Whole-set scores (of every candidate, or of the prescreen leaders) and the candidates'
        order, best first: the leaders by their whole-set score, then the others by prescreen."""
        o, scorer = self.options, self.scorer
        if o.prescreen and o.prescreen < len(scorer.images) and len(cfgs) > o.leaders:
            pre = scorer.score(cur, cfgs, o.prescreen)
            by_pre = sorted(range(len(cfgs)), key=lambda i: (pre[i].key(), i))
            lead = by_pre[:o.leaders]
            full = dict(zip(lead, scorer.score(cur, [cfgs[i] for i in lead])))
            return full, sorted(lead, key=lambda i: (full[i].key(), i)) + by_pre[o.leaders:]
        full = dict(enumerate(scorer.score(cur, cfgs)))
        return full, sorted(range(len(cfgs)), key=lambda i: (full[i].key(), i))


def batched_picks(cur: ChannelConfig, cands, ranked: list[int], value: Callable[[ChannelConfig, str], int],
                  pending: Sequence[Budget], rate: float) -> list[int]:
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


def greedy_slim(net, images: torch.Tensor, labels: torch.Tensor, options: GreedyOptions | None = None, *,
                macs: Sequence[int] = (), params: Sequence[int] = (), latency_ms: Sequence[float] = (),
                flops: Sequence[int] = (), max_steps: int | None = None, **run_args) -> SearchResult:
    """AutoSlim greedy search on a universally slimmable supernet; returns a :class:`SearchResult`.

    Budgets: ``macs`` (``flops`` is its old name), ``params``, ``latency_ms`` (measured on the
    search's device, see ``costs.ChildLatency``); every budget gets the first config of the
    trajectory at or under it. ``options``: a :class:`GreedyOptions`; its fields may also be
    given as keywords (``bn="recalibrate"``, ``prescreen=None``...), overriding it. The other
    keywords are :class:`SearchRun`'s (``latency``, ``latency_batch``, ``calib_images``,
    ``input_size``, ``state_path``, ``resume``, ``device``, ``log``); ``max_steps`` stops after
    that many scoring rounds in this call (the state file allows resuming).

    The net is left at its max config, in its train/eval mode, with the BN statistics it had before.
    """
    check_searchable(net)
    budgets = make_budgets(macs, params, latency_ms, flops=flops)
    values = {k: run_args.pop(k) for k in list(run_args) if k not in RUN_PARAMETERS}
    options = (options or GreedyOptions()).replace(**values)   # an unknown name raises, listing the options
    return GreedySearch(net, images, labels, options, budgets=budgets, **run_args).run(max_steps)
