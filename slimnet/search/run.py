"""What every search strategy shares: one run of a search over a trajectory of configs.

:class:`SearchRun` checks the model and the budgets, makes the candidate scorer and the cost
metrics, resumes a saved state, appends trajectory rows (recording each budget the first time a
row is at or under it), writes the state after every scoring round, and leaves the net as it
found it. A strategy subclasses it, names its options dataclass (``options_type``, derived from
``ScoringOptions``) and implements ``iterate()``: one scoring round that appends rows.
"""
from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from ..nn import calibrated_stats, restore_calibrated_stats
from ..profile import format_count
from ..space import ChannelConfig
from .budgets import Budget, check_budgets
from .costs import ChildLatency, ConfigCosts
from .options import ScoringOptions
from .scorer import CandidateScorer, Score, check_searchable
from .state import SearchState, search_settings


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


class SearchRun:
    """One search of ``net`` (a universally slimmable supernet) under ``budgets``, scored on
    ``images`` / ``labels`` (the held-out set; ``calib_images``: BN statistics images, default
    the held-out ones). ``latency``: the latency metric of latency budgets (default: a
    :class:`ChildLatency` at ``latency_batch``); ``state_path`` / ``resume``: the state file."""

    options_type: type = ScoringOptions

    def __init__(self, net, images: torch.Tensor, labels: torch.Tensor, options: ScoringOptions | None = None, *,
                 budgets: Sequence[Budget], latency: ChildLatency | None = None, latency_batch: int = 1,
                 calib_images: torch.Tensor | None = None, input_size: int | None = None,
                 state_path: str | os.PathLike | None = None, resume: bool = False, device=None,
                 log: Callable[[str], None] | None = None):
        self.log = log or (lambda msg: None)
        check_searchable(net)
        self.net, self.space, self.budgets = net, net.space, list(budgets)
        self.options = options if options is not None else self.options_type()
        self.input_size = int(input_size or self.space.arch["input_size"])
        self.device = torch.device(device) if device is not None else next(net.parameters()).device
        self.latency = None
        if any(b.kind == "latency" for b in self.budgets):
            self.latency = latency if latency is not None else ChildLatency(net, self.input_size, latency_batch,
                                                                            self.device)
        self.notes = check_budgets(self.space, self.budgets, self.input_size, self.latency)
        for note in self.notes:
            warnings.warn(note)
        self.options.validate()
        net.to(self.device)
        self.scorer = CandidateScorer(net, images, labels, calib=calib_images, device=self.device,
                                      **self.options.scorer_kwargs())
        self.costs = ConfigCosts(self.space, self.input_size, self.latency)
        self.settings = search_settings(net, self.budgets, len(self.scorer.images), self.input_size,
                                        self.options.fingerprint(len(self.scorer.calib)),
                                        self.latency.batch if self.latency is not None else None)
        self.state_path = os.fspath(state_path) if state_path is not None else None
        self.state = (self._resumed_state() if resume else None) or SearchState(
            self.settings, self.space.max(), [], {b.label: None for b in self.budgets})
        self._elapsed0, self._t0 = self.state.elapsed_s, time.perf_counter()

    # -- the strategy's part -------------------------------------------------------------------
    def iterate(self) -> bool:  # pragma: no cover - interface
        """One scoring round from ``self.state.current``, appending its rows (``add_row``).
        False when the strategy cannot go on."""
        raise NotImplementedError

    # -- shared machinery ------------------------------------------------------------------------
    def run(self, max_steps: int | None = None) -> SearchResult:
        """Search until every budget is reached (or ``max_steps`` scoring rounds in this call).
        The net is left at its max config, in its train/eval mode, with the BN statistics it had
        before (statistics computed for candidates are dropped)."""
        saved, was_training = calibrated_stats(self.net), self.net.training
        try:
            if self.scorer.needs_statistics:
                self.scorer.calibrate(self.state.current, [self.state.current], full=True)
            if not self.state.trajectory:
                self.start()
            steps = 0
            while not self.state.finished and (max_steps is None or steps < max_steps) and self.iterate():
                self.save_state()
                steps += 1
        finally:
            restore_calibrated_stats(self.net, saved)
            self.net.set_channels(self.space.max())
            self.net.train(was_training)
        return self.result()

    def start(self) -> None:
        """Row 0: the max config, scored."""
        cur = self.state.current
        score = self.scorer.score(cur, [cur])[0]
        row = self.add_row(cur, iteration=0, group=None, score=score, candidates=0)
        self.save_state()
        self.log(f"step 0: max config, {format_count(row['macs'])} MACs, top-1 {score.top1:.2f}%")

    def add_row(self, cfg: ChannelConfig, *, iteration: int, group: str | None, score: Score | None,
                candidates: int) -> dict:
        """Append ``cfg`` (reached by slimming ``group``) to the trajectory and make it current."""
        c = self.costs.of(cfg)
        row = {"step": len(self.state.trajectory), "iteration": iteration, "group": group,
               "channels": cfg[group] if group is not None else None, "macs": c.macs, "params": c.params,
               "top1": round(score.top1, 4) if score is not None else None,
               "loss": round(score.mean_loss, 6) if score is not None else None,
               "candidates": candidates, "elapsed_s": self.elapsed(), "config": dict(cfg.channels)}
        if self.latency is not None:
            row["latency_us"] = self.latency(cfg)
            row["latency_ms"] = round(row["latency_us"] / 1000, 3)
        self.state.trajectory.append(row)
        self.state.current = cfg
        for b in self.budgets:
            if self.state.found[b.label] is None and self.costs.value(cfg, b.kind) <= b.value:
                self.state.found[b.label] = {"step": row["step"], "channels": dict(cfg.channels)}
        return row

    def pending_budgets(self) -> list[Budget]:
        return [b for b in self.budgets if self.state.found[b.label] is None]

    def elapsed(self) -> float:
        return round(self._elapsed0 + time.perf_counter() - self._t0, 3)

    def save_state(self) -> None:
        if self.state_path:
            self.state.save(self.state_path, self.elapsed())

    def _resumed_state(self) -> SearchState | None:
        if not (self.state_path and os.path.exists(self.state_path)):
            return None
        state = SearchState.resume(self.state_path, self.settings, self.space, self.log)
        if state is None:
            return None
        if self.latency is not None:   # keep the measurements the trajectory was built on
            self.latency.cache.update({self.space.config(r["config"]).key: r["latency_us"] for r in state.trajectory
                                       if r.get("latency_us") is not None})
        self.log(f"resuming at step {len(state.trajectory) - 1} ({format_count(state.trajectory[-1]['macs'])} MACs)")
        return state

    def result(self) -> SearchResult:
        configs = {label: (self.space.config(v["channels"]) if v is not None else None)
                   for label, v in self.state.found.items()}
        return SearchResult(budgets=self.budgets, trajectory=self.state.trajectory, configs=configs,
                            finished=all(v is not None for v in configs.values()), notes=self.notes)
