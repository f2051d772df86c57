"""The experiment config's schema: one dataclass per YAML section, defaults and comments."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Optional, Union

from ..errors import ExperimentConfigError

__all__ = ["ConfigError", "Config", "ExperimentConfig", "ModelConfig", "DataConfig", "OptimConfig", "TrainConfig",
           "EvalConfig"]


ConfigError = ExperimentConfigError   # the name this module has always used (slimnet.errors)


@dataclass
class ExperimentConfig:
    name: str = "default"
    output_dir: Optional[str] = None      # default: checkpoints/<name>
    seed: int = 0
    device: str = "auto"                  # auto | cpu | cuda | cuda:N (DDP: cuda:LOCAL_RANK)


@dataclass
class ModelConfig:
    name: str = "mobilenet_v2"
    max_width: float = 1.0
    min_width: Optional[float] = None     # default: the model's (0.25, or the smallest trained width)
    bn: Optional[str] = None              # default: from train.mode (its bn_kinds)
    channels: Optional[str] = None        # channel JSON of a fixed child (train.mode: fixed)
    kwargs: dict = field(default_factory=dict)   # extra build() arguments, e.g. {dropout: 0.0}
    reorder: Optional[str] = None         # bn | l1 | activation: sort channels by importance before a fresh run


@dataclass
class DataConfig:
    name: str = "fashion_mnist"
    root: Optional[str] = None
    download: bool = False
    input_size: Optional[int] = None      # default: the dataset's native size
    heldout_size: int = 0                 # images carved from the training set (seeded)
    heldout_seed: int = 0
    exclude_heldout: bool = False         # train without the held-out images (AutoSlim supernets)
    augment: str = "default"              # default | mobile | none
    subset: Optional[int] = None          # train on the first N images (seeded) only
    test_subset: Optional[int] = None
    batch_size: int = 128                 # per process and per step (split into train.accum_steps)
    eval_batch_size: Optional[int] = None  # default: batch_size
    workers: int = 2                      # per-sample loading processes (image folders)
    in_memory: Optional[bool] = None      # pixels on the device, batch augmentation; default: when
                                          # the dataset is one tensor (fashion_mnist, cifar10/100)


@dataclass
class OptimConfig:
    name: str = "sgd"                     # sgd | adamw
    lr: float = 0.1                       # peak learning rate (after warm-up)
    momentum: float = 0.9
    nesterov: bool = True
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    weight_decay: float = 1e-4            # on conv / linear weights only, unless the flags below
    decay_bn: bool = False
    decay_bias: bool = False
    decay_depthwise: bool = False
    schedule: str = "cosine"              # cosine | linear | step | exponential | constant (per iteration)
    warmup_epochs: float = 0.0
    warmup_start: float = 0.0             # lr factor at the first warm-up step
    milestones: list[float] = field(default_factory=list)   # step schedule, in epochs
    gamma: float = 0.1                    # step: factor at each milestone; exponential: factor per epoch
    min_lr: float = 0.0                   # floor of cosine / linear decay
    grad_clip: Optional[float] = None     # max global grad norm


@dataclass
class TrainConfig:
    mode: str = "autoslim"                # switchable | universal | autoslim | fixed
    epochs: int = 1
    widths: list[Union[float, str]] = field(default_factory=list)  # switchable/fixed: widths or channel JSONs
    num_random: int = 2                   # universal/autoslim: random widths per step (sandwich: + max + min)
    distill: str = "soft_ce"              # soft_ce | kl | alpha | none (all widths on hard labels)
    temperature: float = 1.0
    distill_weight: float = 1.0
    hard_label_weight: float = 0.0        # extra hard-label term for the distilled widths
    distill_warmup_epochs: float = 0.0    # students blend linearly from the hard-label loss to
                                          # distillation over this many epochs (0: the papers')
    label_smoothing: float = 0.0          # on the hard-label losses
    alpha_min: float = -1.0               # alpha-divergence options (distill: alpha)
    alpha_max: float = 1.0
    alpha_clip: float = 5.0
    accum_steps: int = 1                  # micro-batches per step (every k-th sample each)
    amp: str = "none"                     # none | bf16 | fp16 (fp16: CUDA only, with GradScaler)
    channels_last: bool = False
    compile: bool = False                 # torch.compile (fixed and switchable modes only)
    checkpoint_every: int = 0             # also save last.pt every N steps (0: epoch ends only)
    debug_nan_at_step: Optional[int] = None   # test hook: make the loss NaN at this step
    debug_step_delay: float = 0.0             # test hook: sleep this many seconds after each step


@dataclass
class EvalConfig:
    widths: Optional[list[Union[float, str]]] = None   # default: the trained widths / 4 widths max..min
    split: str = "test"                   # test | heldout
    calibrate: Optional[bool] = None      # BN calibration before eval; default: universal/autoslim
    calib_images: int = 2000
    every: int = 1                        # evaluate every N epochs (and always after the last)
    best_width: Union[str, float] = "max"  # which width picks best.pt: max | min | a width | a label
    max_images: Optional[int] = None


@dataclass
class Config:
    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def output_dir(self) -> str:
        return self.experiment.output_dir or os.path.join("checkpoints", self.experiment.name)

