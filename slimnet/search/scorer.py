"""Candidate scoring: top-1 and loss of many configs of one supernet on preloaded held-out images.

Cost is the whole fight (a MobileNet v2 search scores thousands of candidates): the images are
moved to the device once, scoring runs in inference mode in big chunks, and candidates share the
outputs of the stages before the first one they change (``stages.py``).

**BN during scoring** (``bn=``): a universally slimmable supernet has no BN statistics for a
candidate. ``"batch"`` normalises with the batch statistics of the scoring chunks (no calibration
pass at all); ``"recalibrate"`` computes each candidate's exact statistics on ``calib_num``
images (``calibrate_bn`` semantics, through the same ``nn.StatsCollector``, sharing the prefix
too: the statistics of the unchanged layers are the current config's) and scores in eval mode;
``"subset"`` is the same on fewer images. bench/bench_search.py measures how well each ranks
candidates against full recalibration.
"""
from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..nn import CalibratableBN, SlimBatchNorm2d, StatsCollector, SwitchableBatchNorm2d
from ..space import ChannelConfig
from .budgets import SearchError
from .stages import first_stages, model_stages

BN_SCORING = ("batch", "recalibrate", "subset")
DEFAULT_BN = "batch"          # measured in bench/bench_search.py (see docs/RESULTS.md)


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


def check_searchable(net) -> None:
    if getattr(net, "is_child", False):
        raise SearchError("the search needs a supernet; this is an exported child with fixed channels")
    if any(isinstance(m, SwitchableBatchNorm2d) for m in net.modules()):
        raise SearchError("the search needs a universally slimmable supernet (bn='universal'): this one has "
                          "switchable BN, which only has statistics for its fixed list of widths. Train an "
                          "AutoSlim supernet with bn: universal")
    if any(isinstance(m, SlimBatchNorm2d) and m.track_shared_stats for m in net.modules()):
        raise SearchError("the search needs a universally slimmable supernet (bn='universal'), not shared BN")


def calibration_count(bn: str, calib_num: int | None = None) -> int:
    """How many images BN statistics are computed from when scoring with ``bn``: ``calib_num``
    when given, else 2000 for ``"recalibrate"`` (calibrate_bn's default) and 500 for ``"subset"``."""
    return calib_num if calib_num is not None else (2000 if bn == "recalibrate" else 500)


class CandidateScorer:
    """Scores many configs of one supernet on preloaded images, sharing unchanged prefixes.

    ``images``/``labels``: the held-out set (tensors, moved to ``device`` once). ``calib``: the
    images BN statistics are computed from for ``bn="recalibrate"``/``"subset"`` (default: the
    held-out images). ``batch_size`` is the chunk size (also the BN batch in ``"batch"`` mode
    and the calibration batch). ``reuse_prefix=False``: a full forward per candidate.
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
        calib_num = calibration_count(bn, calib_num)
        calib = self.images if calib is None else calib.to(self.device)
        self.calib = calib[:calib_num]
        self.batch_size = int(batch_size)
        self.bn_layers = [m for m in net.modules() if isinstance(m, CalibratableBN)]
        self.collector = StatsCollector(self.bn_layers)
        self.stages = self._verified_stages() if reuse_prefix else [net]
        self.first_stage = first_stages(self.stages)
        self.stage_bns = [[m for m in s.modules() if isinstance(m, CalibratableBN)] for s in self.stages]
        self.forwards = 0          # stage-images run, for the benchmark's bookkeeping

    @property
    def needs_statistics(self) -> bool:
        """Whether candidates need BN statistics (``calibrate``) before they are scored."""
        return self.bn != "batch"

    # -- structure --------------------------------------------------------------------------
    @torch.inference_mode()
    def _verified_stages(self) -> list[nn.Module]:
        """The model's stages, if they compose to its forward and none writes into its input (a
        cached stage input is fed to every candidate); else the whole net, with a warning."""
        stages = model_stages(self.net)
        if len(stages) == 1:
            return stages
        net, x = self.net, self.images[:4]
        modes = {m: m.training for m in net.modules()}
        net.eval()
        try:
            with self.collector:   # BN on batch statistics: no calibrated stats needed for the check
                ref = net(x)
                y, intact = x, True
                for s in stages:
                    given = y.clone()
                    out = s(y)
                    intact = intact and torch.equal(y, given)
                    y = out
            composes = y.shape == ref.shape and torch.allclose(y, ref, atol=1e-5, rtol=1e-4)
        finally:
            for m, training in modes.items():
                m.training = training
        if not (composes and intact):
            why = "forward is not the composition of its stages" if not composes else \
                "a stage writes into its input in place (the search reuses stage inputs)"
            warnings.warn(f"{type(net).__name__}: {why}; searching without prefix reuse (a full forward per candidate)")
            return [net]
        return stages

    def start_of(self, cur: ChannelConfig, cand: ChannelConfig) -> int:
        changed = [g for g in cand if cand[g] != cur[g]]
        if not changed:
            return len(self.stages) - 1
        return min(self.first_stage.get(g, 0) for g in changed)

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
                    self.collector.copy_stats([m for bns in self.stage_bns for m in bns if m not in stats[c.key]],
                                              cur.key)
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
        """Forget the statistics of these config keys."""
        for m in self.bn_layers:
            for k in keys:
                m.drop_stats(k)

    # -- scoring ------------------------------------------------------------------------------
    @torch.inference_mode()
    def score(self, cur: ChannelConfig, cands: Sequence[ChannelConfig], num_images: int | None = None) -> list[Score]:
        """Top-1 / loss of every candidate on the first ``num_images`` held-out images (all by
        default). In ``"batch"`` mode BN uses chunk statistics; otherwise each candidate's
        stored statistics (see ``calibrate``)."""
        n = len(self.images) if num_images is None else min(int(num_images), len(self.images))
        starts = [self.start_of(cur, c) for c in cands]
        scores = [Score() for _ in cands]
        self.net.eval()
        with self.collector if self.bn == "batch" else contextlib.nullcontext():
            # equal chunks (no small ragged last one: in "batch" mode a chunk is a BN batch)
            k = math.ceil(n / self.batch_size)
            bounds = [round(i * n / k) for i in range(k + 1)]
            for lo, hi in zip(bounds, bounds[1:]):
                self._score_chunk(cur, cands, starts, scores, self.images[lo:hi], self.labels[lo:hi])
        self.net.set_channels(cur)
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
