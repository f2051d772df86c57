"""The training engine: one plain loop for every slimmable training mode.

``train(exp)`` trains the experiment config ``exp`` (``slimnet.config``): what depends on
``train.mode`` (switchable, universal, autoslim, fixed) is decided by the mode's class in
:mod:`~slimnet.train.modes`; the rest is the same for every mode.

Modules, in the order a run uses them:

* ``modes``: the training modes (BN kinds, config checks, model and plan, the configs of a step)
  and their registry ``MODES`` / ``get_mode(name)``; ``build_model(exp, ...)`` asks the mode.
* ``plan``: ``TrainPlan`` (which configs are trained, evaluated, calibrated) and its helpers.
* ``widths``: the samplers of a step's configs (a fixed list; the sandwich rule).
* ``optim``: parameter groups (weight decay), optimizer, the per-iteration lr schedule.
* ``step``: one sandwich step (``train_step``) and the loss of each width (``DistillLoss``).
* ``distributed``: DDP set-up, sums over ranks, BN statistics averaged over ranks.
* ``resume``: RNG state, resume checks, the ``--fresh`` replacement of a previous run.
* ``report``: log lines, progress bar, config.yaml, metrics.jsonl, TensorBoard.
* ``trainer``: the ``Trainer`` (set up, resume, epochs of steps, evaluate, save) and ``train()``.

One step, for each micro-batch (``train.accum_steps``, every k-th sample): the widths in order,
the largest first; each width does forward, loss and backward at once, so its graph is freed
before the next width runs (peak memory: one width's activations). The largest width learns
from the labels; the others from its detached output (inplace distillation) unless
``train.distill: none``. Gradients accumulate; one optimizer step. Under DDP every backward but
the last runs in ``no_sync()``: one gradient all-reduce per step.

Reproducibility: everything random is a function of (seed, step) or (seed, epoch, sample): the
widths of a step come from ``random.Random`` seeded by (seed, step) (identical on every rank),
the global torch RNG (dropout) is reseeded each step from (seed, step, rank), the data order is a
permutation seeded by (seed, epoch), and each sample's augmentation runs under a seed of
(seed, epoch, index) (``slimnet.loaders``). So a run resumed mid-epoch from ``last.pt`` ends with
the weights of an uninterrupted run, with any number of data workers. RNG states are saved too,
for the record.

Design notes:

* ``fixed`` mode trains a plain child, not a supernet pinned to one config: identical maths
  (BN over the same channels), no slicing overhead, and weight decay / momentum touch only the
  weights that exist.
* DDP with switchable BN: the last (synced) backward reaches only the last width's private BN.
  DDP would leave the gradients the other BNs accumulated under ``no_sync`` un-reduced (each
  rank would keep its own), so ``train_step`` adds ``0 * sum(p)`` of the private BN parameters
  to the last loss: all parameters are in the final graph and one all-reduce covers them
  (``find_unused_parameters`` is not needed). BN running statistics stay per rank
  (``broadcast_buffers=False``) and are averaged over ranks before evaluation and checkpoints.
* Batch size is per process; ``train.accum_steps=k`` splits it into k micro-batches of every
  k-th sample (BN sees each micro-batch alone, as each DDP rank sees its own batch).
* ``train.compile`` fits the modes whose channel counts do not change from step to step
  (``TrainingMode.supports_compile``); the others are refused before anything runs.
"""
from .distributed import DistInfo, init_distributed
from .modes import (
    MODES,
    AutoSlim,
    Fixed,
    Switchable,
    TrainingMode,
    Universal,
    build_model,
    get_mode,
)
from .optim import lr_factor, make_optimizer, make_scheduler, param_groups
from .plan import TrainPlan
from .resume import (
    REPLACED,
    RESUME_SAFE_KEYS,
    RESUME_SAFE_PREFIXES,
    check_resume_compatible,
)
from .step import DistillLoss, StepOptions, distill_ramp, train_step, width_loss
from .trainer import Trainer, TrainingDiverged, train
from .widths import WidthSampler, width_sampler

__all__ = ["train", "Trainer", "TrainingDiverged", "build_model", "TrainPlan", "WidthSampler", "width_sampler",
           "TrainingMode", "Switchable", "Universal", "AutoSlim", "Fixed", "MODES", "get_mode", "param_groups",
           "make_optimizer", "make_scheduler", "lr_factor", "train_step", "StepOptions", "DistillLoss", "width_loss",
           "distill_ramp", "DistInfo", "init_distributed", "RESUME_SAFE_KEYS", "RESUME_SAFE_PREFIXES", "REPLACED",
           "check_resume_compatible"]
