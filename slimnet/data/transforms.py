"""Per-sample (torchvision v2) and whole-batch transforms of each dataset, with its statistics."""
from __future__ import annotations

from typing import Callable

import torch
from torchvision.transforms import v2

from ..batch_transforms import BatchTransform

AUGMENTS = ("default", "mobile", "none")

# Per-channel statistics of the *training* sets, in [0, 1] pixel units.
_STATS = {
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "imagefolder": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
_NATIVE_SIZE = {"fashion_mnist": 28, "cifar10": 32, "cifar100": 32, "imagefolder": 224}
_CROP_PADDING = {"fashion_mnist": 2, "cifar10": 4, "cifar100": 4}


class _PlainTensor:
    """Last transform step: strip the ``tv_tensors.Image`` subclass so batches are
    ordinary tensors (some ops and ``torch.compile`` treat subclasses specially)."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x.as_subclass(torch.Tensor)

    def __repr__(self) -> str:
        return "PlainTensor()"


def _to_float_normalized(name: str) -> list[Callable]:
    mean, std = _STATS[name]
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std), _PlainTensor()]


def build_transforms(name: str, input_size: int, augment: str = "default") -> tuple[v2.Compose, v2.Compose]:
    """(train_transform, eval_transform) for a canonical dataset name.

    ``augment="none"`` returns the eval transform for training too, which makes
    training inputs deterministic (tests, debugging).
    """
    if augment not in AUGMENTS:
        raise ValueError(f"unknown augment {augment!r}; valid: {', '.join(AUGMENTS)}")
    tail = _to_float_normalized(name)
    if name == "imagefolder":
        min_scale = 0.25 if augment == "mobile" else 0.08
        train = [v2.RandomResizedCrop(input_size, scale=(min_scale, 1.0), antialias=True),
                 v2.RandomHorizontalFlip(),
                 v2.ColorJitter(0.4, 0.4, 0.4)]
        evaluation = [v2.Resize(int(input_size / 0.875), antialias=True), v2.CenterCrop(input_size)]
    else:
        native = _NATIVE_SIZE[name]
        resize = [] if input_size == native else [v2.Resize((input_size, input_size), antialias=True)]
        train = [v2.RandomCrop(native, padding=_CROP_PADDING[name]), v2.RandomHorizontalFlip()] + resize
        evaluation = resize
    eval_tf = v2.Compose(evaluation + tail)
    train_tf = eval_tf if augment == "none" else v2.Compose(train + tail)
    return train_tf, eval_tf


def build_batch_transforms(name: str, input_size: int, augment: str = "default") -> tuple[BatchTransform,
                                                                                          BatchTransform]:
    """(train, eval) :class:`BatchTransform` with the distributions of :func:`build_transforms`, for
    the datasets held in memory as uint8 tensors (Fashion-MNIST, CIFAR)."""
    if augment not in AUGMENTS:
        raise ValueError(f"unknown augment {augment!r}; valid: {', '.join(AUGMENTS)}")
    if name not in _CROP_PADDING:
        raise ValueError(f"{name}: batch transforms exist for the in-memory datasets "
                         f"({', '.join(_CROP_PADDING)}), not for image folders")
    mean, std = _STATS[name]
    evaluation = BatchTransform(mean, std, input_size)
    train = evaluation if augment == "none" else BatchTransform(mean, std, input_size, _CROP_PADDING[name], True)
    return train, evaluation
