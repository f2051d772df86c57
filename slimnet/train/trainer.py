"""The training run: :class:`Trainer` goes through its phases top to bottom (set up, resume,
wrap the model, open the outputs, then per epoch: train steps, evaluate, save), and
:func:`train` runs one under the process group ``torchrun`` describes."""
from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as tdist

from ..checkpoint import nonfinite_entries, save_checkpoint
from ..config import Config, ConfigError
from ..errors import TrainingDiverged
from ..loaders import build_loaders, experiment_data, mix
from ..profile import profile
from ..utils import check_output_dir
from .distributed import (
    DistInfo,
    all_reduce_sum,
    average_bn_buffers,
    init_distributed,
    private_bn_params,
    shutdown_distributed,
    wrap_ddp,
)
from .evaluation import evaluate_plan
from .modes import build_model, compile_modes, get_mode
from .optim import make_optimizer, make_scheduler
from .plan import best_label
from .report import Progress, RunReport
from .resume import (
    finish_replacing,
    load_resume_checkpoint,
    recover_output_dir,
    restore_previous_run,
    resume_path,
    rng_state,
    set_rng_state,
    stage_previous_run,
)
from .step import StepOptions, autocast_context, distill_ramp, train_step

__all__ = ["Trainer", "TrainingDiverged", "train"]




class Trainer:
    """One training run of the experiment config ``exp`` on this process (rank ``dist.rank``)."""

    def __init__(self, exp: Config, dist: DistInfo, device: torch.device, quiet: bool = False):
        self.exp, self.dist, self.device, self.quiet = exp, dist, device, quiet
        self.out_dir = Path(exp.output_dir())
        self.last_path, self.best_path = self.out_dir / "last.pt", self.out_dir / "best.pt"
        self.report = RunReport(self.out_dir, dist.main)
        self.log = self.report.log
        self.mode = get_mode(exp.train.mode)
        self.step_options = StepOptions.from_experiment(exp)
        self.resumed_from: str | None = None
        self.start_epoch, self.start_batch, self.step = 0, 0, 0
        self.carried_sums = None          # a mid-epoch checkpoint's loss sums of its epoch
        self.results: dict = {}           # the last evaluation
        self.grad_norm: float | None = None   # the last logged global gradient norm
        self.saved = None                 # (path, step) of the last good checkpoint this run wrote
        self.replacing = False            # a fresh run's previous outputs wait in .replaced/

    def run(self, resume=None, fresh: bool = False) -> dict:
        """Train (``resume`` / ``fresh`` as :func:`train`); the summary dict :func:`train` returns."""
        self.check_options()
        self.prepare_output_dir()
        self.resumed_from = resume_path(resume, fresh, self.last_path)
        self.set_up()
        if self.resumed_from is not None:
            self.resume(self.resumed_from)
        elif self.exp.model.reorder:
            self.reorder_channels()
        self.wrap_model()
        self.open_outputs()
        epochs = self.exp.train.epochs
        if self.start_epoch >= epochs:
            self.log(f"nothing to do: {self.resumed_from} already finished {self.start_epoch} of {epochs} epochs "
                     "(raise train.epochs to continue, or --fresh)")
        self.raw.train()
        for epoch in range(self.start_epoch, epochs):
            sums, t0, train_time, n_images = self.train_epoch(epoch)
            self.end_epoch(epoch, sums, t0, train_time, n_images)
        return self.finish()

    # ---------------------------------------------------------------------------------------
    # set up
    # ---------------------------------------------------------------------------------------
    def check_options(self) -> None:
        """What depends on the device or the mode at run time."""
        t = self.exp.train
        if t.amp == "fp16" and self.device.type != "cuda":
            raise ConfigError("train.amp: fp16 needs CUDA (GradScaler); use bf16 on CPU")
        if t.compile and not self.mode.supports_compile:
            raise ConfigError(f"train.compile: torch.compile does not fit {self.mode.name} mode: "
                              f"{self.mode.compile_problem}. It works for {compile_modes()} modes.")

    def prepare_output_dir(self) -> None:
        """Probe the output folder and clean up after a killed run (rank 0), before every rank
        decides about resuming."""
        check_output_dir(self.out_dir, "experiment.output_dir")
        if self.dist.main:
            recover_output_dir(self.out_dir, self.log)
        if self.dist.enabled:
            tdist.barrier()

    def set_up(self) -> None:
        """Data (missing datasets fail here, with data.py's message), model and plan, loaders,
        the step's config sampler, optimizer, schedule and gradient scaler."""
        exp, t, device = self.exp, self.exp.train, self.device
        bundle = experiment_data(exp)
        if exp.data.root is None and bundle.root is not None:
            exp.data.root = bundle.root      # config.yaml and the checkpoints record the folder actually read
        self.train_images = len(bundle.train)
        torch.manual_seed(exp.experiment.seed)
        self.raw, self.plan = build_model(exp, bundle.num_classes, bundle.in_channels, bundle.input_size)
        self.best_label = best_label(self.plan, exp)
        need_calib = self.plan.calibrate or exp.model.reorder == "activation"    # its importance is measured on them
        self.loaders = build_loaders(exp, bundle, device, need_calib, self.dist.rank, self.dist.world)
        self.steps_per_epoch = self.loaders.sampler.batches_per_epoch
        self.widths = self.plan.mode.sampler(self.raw, self.plan, exp)
        self.raw.to(device)
        if t.channels_last:
            self.raw.to(memory_format=torch.channels_last)
        self.optimizer = make_optimizer(self.raw, exp.optim)
        self.scheduler = make_scheduler(self.optimizer, exp.optim, t.epochs, self.steps_per_epoch)
        self.scaler = torch.amp.GradScaler(device.type, enabled=t.amp == "fp16")
        self.best = {"top1": -1.0, "epoch": 0, "label": self.best_label}

    def resume(self, path: str) -> None:
        """Model, optimizer, schedule, scaler, RNG and progress from the training checkpoint ``path``."""
        ckpt = load_resume_checkpoint(path, self.raw, self.exp, self.dist.world)
        self.raw.load_state_dict(ckpt["model_state"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        set_rng_state(ckpt["rng"])
        self.start_epoch, self.start_batch, self.step = ckpt["epoch"], ckpt["batch"], ckpt["step"]
        self.best = ckpt.get("best", self.best)
        self.carried_sums = ckpt.get("epoch_loss")
        self.log(f"resuming from {path}: epoch {self.start_epoch + 1}, batch {self.start_batch}, step {self.step}")

    def reorder_channels(self) -> None:
        """``model.reorder``: a fresh run sorts each group's channels by importance first (a
        pretrained model's; under DDP every rank takes rank 0's weights when the model is wrapped)."""
        from ..reorder import reorder_channels
        criterion = self.exp.model.reorder
        data = self.loaders.calib if criterion == "activation" else None
        perms = reorder_channels(self.raw, criterion, data, num_images=self.exp.eval.calib_images)
        self.log(f"model.reorder: sorted the channels of {len(perms)} group(s) by {criterion}")

    def wrap_model(self) -> None:
        """``self.model`` runs the forward: the network, in DDP under torchrun, compiled on request."""
        self.model, self.ghost_params = self.raw, []
        if self.dist.enabled:
            self.ghost_params = private_bn_params(self.raw)     # see train_step
            self.model = wrap_ddp(self.raw, self.device)
        if self.exp.train.compile:
            import torch._dynamo as dynamo
            dynamo.config.cache_size_limit = max(dynamo.config.cache_size_limit, 4 * len(self.plan.train_configs) + 8)
            self.model = torch.compile(self.model)
        self.autocast = autocast_context(self.device, self.exp.train.amp)

    def open_outputs(self) -> None:
        """Rank 0: a fresh run moves the previous run's outputs aside; config.yaml, metrics and
        TensorBoard open; the run is described."""
        if not self.dist.main:
            return
        exp, out_dir = self.exp, self.out_dir
        out_dir.mkdir(parents=True, exist_ok=True)
        resumed = self.resumed_from is not None
        if not resumed:
            self.replacing = stage_previous_run(out_dir, self.log)
        self.report.open(exp, self.start_epoch if resumed else None, self.step)
        n_params = sum(p.numel() for p in self.raw.parameters())
        world = f" x {self.dist.world} processes" if self.dist.enabled else ""
        self.log(f"slimnet train: {self.mode.name} {exp.model.name} ({n_params / 1e6:.2f}M params), "
                 f"{self.train_images} training images, {self.steps_per_epoch} steps/epoch x {exp.train.epochs} "
                 f"epochs, device {self.device}{world}")
        self.log(f"writing to {out_dir}/: last.pt, best.pt, config.yaml, metrics.jsonl, tb/ (TensorBoard)")
        if resumed and self.start_epoch < exp.train.epochs and (out_dir / "autoslim_state.json").exists():
            self.log(f"note: the search results in {out_dir}/ (autoslim_*) belong to the weights before this run; "
                     "slimnet autoslim on the new checkpoint starts its search afresh")

    # ---------------------------------------------------------------------------------------
    # an epoch
    # ---------------------------------------------------------------------------------------
    def train_epoch(self, epoch: int):
        """The steps of ``epoch`` (from a resumed batch); (loss sums per label, start time,
        training time, images)."""
        t = self.exp.train
        first_batch = self.start_batch if epoch == self.start_epoch else 0
        self.loaders.sampler.set_epoch(epoch, first_batch)
        labels = self.widths.labels()
        carried, self.carried_sums = self.carried_sums, None
        sums = dict(carried) if (carried and first_batch) else {lab: [0.0, 0] for lab in dict.fromkeys(labels)}
        show_bar = not self.quiet and self.dist.main and sys.stderr.isatty()
        bar = Progress(show_bar, self.steps_per_epoch, f"epoch {epoch + 1}/{t.epochs}", first_batch)
        t0, n_images = time.perf_counter(), 0
        for batch, (images, targets) in enumerate(self.loaders.train, start=first_batch):
            values, lr = self.train_batch(epoch, batch, images, targets)
            n_images += self.exp.data.batch_size * self.dist.world
            for label, v in zip(labels, values):
                sums[label][0] += v
                sums[label][1] += 1
            bar.update(loss=f"{values[0]:.3f}", lr=f"{lr:.3g}")
            self.report.step(self.step, lr, labels, values, self.grad_norm)
            if t.checkpoint_every and self.step % t.checkpoint_every == 0 and batch + 1 < self.steps_per_epoch:
                self.save_last(epoch, batch + 1, sums)
            if t.debug_step_delay:
                time.sleep(t.debug_step_delay)
        bar.close()
        return sums, t0, time.perf_counter() - t0, n_images

    def train_batch(self, epoch: int, batch: int, images, targets) -> tuple[list, float]:
        """One optimizer step on a batch: (the per-width losses averaged over ranks, its lr)."""
        exp, t, step = self.exp, self.exp.train, self.step
        images = images.to(self.device, non_blocking=True)
        targets = targets.to(self.device, non_blocking=True)
        if t.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        torch.manual_seed(mix(exp.experiment.seed, step, self.dist.rank))    # dropout etc.
        configs = self.widths.configs(step)
        ramp = distill_ramp(step, self.steps_per_epoch, t.distill_warmup_epochs)
        losses = train_step(self.model, self.raw, configs, images, targets, self.step_options, self.scaler,
                            self.autocast, step, self.dist.enabled, self.ghost_params, ramp=ramp)
        values = (all_reduce_sum(losses, self.dist) / self.dist.world).tolist()
        for (label, c), v in zip(configs, values):
            if not math.isfinite(v):
                self.optimizer.zero_grad(set_to_none=True)
                raise TrainingDiverged(
                    f"non-finite loss ({v}) at step {step} (epoch {epoch + 1}, batch {batch + 1}) for width "
                    f"{label!r} ({profile(c.space, c).macs / 1e6:.1f}M MACs); stopped before the optimizer "
                    f"step, {self.kept()}. Lower optim.lr, add warm-up or optim.grad_clip, or check the data.")
        self.grad_norm = self.clip_gradients(step)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        lr = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        self.step += 1
        return values, lr

    def clip_gradients(self, step: int) -> float | None:
        """Clip the global gradient norm to ``optim.grad_clip`` (when set); returns the norm before
        clipping at the steps rank 0 logs (every 10th: TensorBoard ``train/grad_norm``)."""
        clip = self.exp.optim.grad_clip
        logged = self.report.writer is not None and self.report.logs_step(step + 1)
        if clip is None and not logged:
            return None
        self.scaler.unscale_(self.optimizer)
        norm = torch.nn.utils.clip_grad_norm_([p for p in self.raw.parameters() if p.grad is not None],
                                              float("inf") if clip is None else clip)
        return float(norm) if logged else None

    def evaluate_widths(self) -> dict:
        """Top-1 / top-5 / loss / MACs of every evaluated config, summed over ranks."""
        return evaluate_plan(self.raw, self.plan, self.loaders, self.exp.eval.calib_images, self.device, self.dist,
                             self.autocast)

    def end_epoch(self, epoch: int, sums: dict, t0: float, train_time: float, n_images: int) -> None:
        """BN statistics averaged, evaluation when due, the epoch's record, best.pt when the chosen
        width improved, last.pt; nothing non-finite is ever written."""
        exp = self.exp
        ips = n_images / max(train_time, 1e-9)
        average_bn_buffers(self.raw, self.dist)
        last_epoch = epoch + 1 == exp.train.epochs
        self.results = results = {}
        if (epoch + 1) % exp.eval.every == 0 or last_epoch:
            self.results = results = self.evaluate_widths()
        improved = bool(results) and results[self.best_label]["top1"] > self.best["top1"]
        if improved:
            self.best = {"top1": results[self.best_label]["top1"], "epoch": epoch + 1, "label": self.best_label}
        train_loss = {lab: s / max(n, 1) for lab, (s, n) in sums.items()}
        record = {"epoch": epoch + 1, "step": self.step, "lr": self.optimizer.param_groups[0]["lr"],
                  "train_loss": train_loss, "eval": results, "images_per_s": ips, "time": time.perf_counter() - t0}
        diverged = bool(nonfinite_entries(self.raw.state_dict()))   # every rank: identical after averaging
        if self.dist.main:
            self.report.epoch(record, exp.train.epochs)
            if improved and not diverged:
                save_checkpoint(self.best_path, self.raw, config=exp.to_dict(), epoch=epoch + 1, batch=0,
                                step=self.step, metrics=results, best=self.best)
        if diverged:
            self.check_finite(f"after epoch {epoch + 1} (step {self.step}, with its evaluation's BN statistics)")
        self.save_last(epoch + 1, 0, None)

    # ---------------------------------------------------------------------------------------
    # save
    # ---------------------------------------------------------------------------------------
    def save_last(self, epoch: int, batch: int, loss_sums) -> None:
        """last.pt at (epoch, batch): everything a resumed run needs; the first good one of a fresh
        run removes the previous run's outputs."""
        exp, dist = self.exp, self.dist
        average_bn_buffers(self.raw, dist)
        self.check_finite(f"at step {self.step} (epoch {epoch + (1 if batch else 0)}, before writing "
                          f"{self.last_path.name})")
        if dist.main:
            save_checkpoint(self.last_path, self.raw, config=exp.to_dict(), epoch=epoch, batch=batch, step=self.step,
                            optimizer=self.optimizer.state_dict(), scheduler=self.scheduler.state_dict(),
                            scaler=self.scaler.state_dict(), rng=rng_state(), best=self.best, epoch_loss=loss_sums,
                            world_size=dist.world,
                            sampler={"seed": exp.experiment.seed, "epoch": epoch, "batch": batch})
            if self.replacing:    # this run has a good checkpoint: the previous run's outputs go
                finish_replacing(self.out_dir, self.log)
        self.saved, self.replacing = (str(self.last_path), self.step), False

    def check_finite(self, when: str) -> None:
        """Every rank (identical parameters; BN buffers averaged): NaN / inf never reach a checkpoint."""
        bad = nonfinite_entries(self.raw.state_dict())
        if bad:
            raise TrainingDiverged(
                f"non-finite values in the model {when} ({len(bad)} tensor(s): {', '.join(bad[:3])}"
                f"{', ...' if len(bad) > 3 else ''}); refusing to write a checkpoint; {self.kept()}. Lower optim.lr, "
                "add warm-up or optim.grad_clip, or check the data.")

    def kept(self) -> str:
        """What is intact when the run stops: the truly last good checkpoint (none is ever written
        with non-finite values)."""
        if self.saved:
            return f"the last good checkpoint {self.saved[0]} (step {self.saved[1]}) is intact"
        if self.resumed_from:
            return f"{self.resumed_from} (the checkpoint this run resumed from) is intact"
        if self.replacing:
            return f"no checkpoint was written yet, so the previous run's outputs are put back in {self.out_dir}/"
        return "no checkpoint was written yet"

    def finish(self) -> dict:
        self.report.close()
        best, epochs = self.best, self.exp.train.epochs
        if self.dist.main and epochs > self.start_epoch:
            self.log(f"done: best top-1 {best['top1']:.2f}% at width {best['label']} (epoch {best['epoch']}); "
                     f"checkpoints in {self.out_dir}/")
        return {"output_dir": str(self.out_dir), "last": str(self.last_path), "best": best, "eval": self.results,
                "step": self.step, "epochs": epochs, "model": self.raw}


def train(exp: Config | str, *, resume: bool | str | None = None, fresh: bool = False, quiet: bool = False) -> dict:
    """Train the experiment ``exp`` (a validated :class:`slimnet.config.Config`, or a YAML path).

    ``resume``: None resumes automatically when ``<output_dir>/last.pt`` exists (unless
    ``fresh``); True requires it; a path resumes from that checkpoint. ``fresh`` ignores an
    existing run and replaces it once this run has written its first good checkpoint (its
    outputs wait in ``<output_dir>/.replaced/`` and come back if this run stops before). Returns a
    summary dict: output_dir, last (path), best ({top1, epoch, label}), eval (the last evaluation
    per width), step, epochs, model (the trained, unwrapped network).
    Under ``torchrun`` each process calls this; only rank 0 writes files and logs.
    """
    if isinstance(exp, (str, os.PathLike)):
        from ..config import load_config
        exp = load_config(os.fspath(exp))
    if fresh and resume:
        raise ConfigError("--fresh and --resume contradict each other; pick one")
    dist, device = init_distributed(exp.experiment.device)
    try:
        return Trainer(exp, dist, device, quiet).run(resume, fresh)
    except BaseException:
        if dist.main:   # a fresh run that failed before its first checkpoint: the previous run comes back
            with contextlib.suppress(Exception):
                restore_previous_run(Path(exp.output_dir()), lambda msg: print(msg, flush=True))
        raise
    finally:
        shutdown_distributed(dist)
