"""Datasets, transforms and loaders for slimnet.

Everything a training or evaluation script needs comes out of two calls:

* :func:`build_data` returns a :class:`DataBundle` with the training set, an
  optional held-out split carved from the training set, the set used for
  BatchNorm re-calibration, and the official test split.
* :func:`make_loader` wraps any of those in a ``DataLoader`` with seeded
  shuffling and optional ``DistributedSampler``.

Design notes
------------
Each dataset is loaded from disk exactly once into a *base* object (a uint8
tensor of images for Fashion-MNIST and CIFAR, a ``torchvision`` ``ImageFolder``
for ImageNet-style folders).  The public datasets are :class:`ImageView` objects:
an index list plus a transform over a shared base.  That is what lets the
training split (augmented) and the held-out split (eval transform) come from the
same arrays without a second read, and it gives every dataset a ``.targets``
LongTensor so callers can stratify or subset without touching images.

The package holds one file per concern: ``datasets`` (the in-memory and view containers), one
reader per format (``fashion_mnist``, ``cifar``, ``imagefolder``), ``transforms`` (per-sample
and whole-batch, with each dataset's statistics); this file is the entry point.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from ..batch_transforms import BatchTransform
from .cifar import load_cifar
from .datasets import ImageView, TensorImages
from .fashion_mnist import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_FILES,
    load_fashion_mnist,
    read_idx,
)
from .imagefolder import load_imagefolder, read_image
from .transforms import _NATIVE_SIZE, AUGMENTS, build_batch_transforms, build_transforms

__all__ = [
    "AUGMENTS",
    "DATASETS",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_FILES",
    "FASHION_MNIST_SYSTEM_DIR",
    "DataBundle",
    "ImageView",
    "TensorImages",
    "build_batch_transforms",
    "build_data",
    "build_transforms",
    "canonical_name",
    "make_loader",
    "read_idx",
    "read_image",
    "split_heldout",
]

DATASETS = ("fashion_mnist", "cifar10", "cifar100", "imagefolder")
_ALIASES = {"imagenet": "imagefolder"}

FASHION_MNIST_SYSTEM_DIR = "/usr/share/datasets/fashion-mnist"   # read when no root is given


@dataclass
class DataBundle:
    """All splits of one dataset plus the facts a model needs to be built for it.

    ``calib`` is what BatchNorm re-calibration iterates over: the held-out split
    when there is one (so calibration never peeks at the test set and uses data
    the optimiser did not fit to), else the training set.  It deliberately uses
    the *training* augmentation transform: recalibrated BN statistics must match
    the input distribution the shared weights were trained under, otherwise the
    calibrated running means/variances describe un-augmented images that the
    network never saw during training.
    """

    train: Dataset
    heldout: Dataset | None
    calib: Dataset
    test: Dataset
    num_classes: int
    in_channels: int
    input_size: int
    # (train, eval) transforms of whole batches when every split is a uint8 tensor in memory
    # (Fashion-MNIST, CIFAR): the training loaders then keep the pixels on the device.
    batch_transforms: tuple[BatchTransform, BatchTransform] | None = None
    root: str | None = None      # the folder the data was read from (the system's Fashion-MNIST when root=None)


def split_heldout(n: int, heldout_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(heldout_indices, remaining_indices), both sorted, from a seeded permutation.

    The permutation uses its own ``torch.Generator`` so the split depends only
    on ``seed`` and ``n``, never on the global RNG state of the caller.
    """
    if heldout_size < 0:
        raise ValueError(f"heldout_size must be >= 0, got {heldout_size}")
    if heldout_size >= n:
        raise ValueError(f"heldout_size ({heldout_size}) must be smaller than the training set ({n} images) "
                         "so that some training images remain")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[:heldout_size].sort().values, perm[heldout_size:].sort().values


def _seeded_first(indices: torch.Tensor, count: int | None, seed: int, what: str) -> torch.Tensor:
    """The first ``count`` of ``indices`` after a seeded shuffle (all of them if
    ``count`` is None or not smaller). Sorted, for locality when reading."""
    if count is None:
        return indices
    if count <= 0:
        raise ValueError(f"{what} must be a positive number of images or None, got {count}")
    if count >= len(indices):
        return indices
    perm = torch.randperm(len(indices), generator=torch.Generator().manual_seed(seed))
    return indices[perm[:count]].sort().values



def canonical_name(name: str) -> str:
    key = name.lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in DATASETS:
        valid = ", ".join(DATASETS + tuple(_ALIASES))
        raise ValueError(f"unknown dataset {name!r}; valid names: {valid}")
    return key


def _read_base_splits(key: str, root: str | None, download: bool) -> tuple[Dataset, Dataset, int, str | None]:
    """(train base, test base, input channels, folder read) of a canonical dataset name, read from
    disk once by the dataset's reader."""
    if root is not None and not download and not Path(root).expanduser().is_dir():
        what = "is a file, not a folder" if Path(root).expanduser().exists() else "does not exist"
        unset = " (leave it unset for the system's Fashion-MNIST)" if key == "fashion_mnist" else ""
        raise FileNotFoundError(f"data root {root} {what}: give the folder that holds the {key} files{unset}")
    used_root = str(Path(root).expanduser().resolve()) if root is not None else None
    if key == "fashion_mnist":
        train_base, test_base, used_root = load_fashion_mnist(root, download, FASHION_MNIST_SYSTEM_DIR)
        return train_base, test_base, 1, used_root
    if key in ("cifar10", "cifar100"):
        return *load_cifar(key, root, download), 3, used_root
    return *load_imagefolder(root), 3, used_root


def build_data(name: str, root: str | None = None, *, input_size: int | None = None, heldout_size: int = 0,
               heldout_seed: int = 0, exclude_heldout: bool = False, download: bool = False,
               augment: str = "default", subset: int | None = None,
               test_subset: int | None = None) -> DataBundle:
    """Load dataset ``name`` and return all splits as a :class:`DataBundle`.

    Args:
        name: one of :data:`DATASETS` (``"imagenet"`` is an alias of ``"imagefolder"``).
        root: data directory (see the per-dataset loaders for the expected layout). A root that
            does not exist is an error (unless ``download``); only Fashion-MNIST without a root
            reads the system's copy. ``DataBundle.root`` is the folder actually read.
        input_size: side of the square network input; defaults to the native size
            (28 Fashion-MNIST, 32 CIFAR, 224 imagefolder). A non-native size for
            Fashion-MNIST/CIFAR adds a Resize.
        heldout_size: number of training images carved out (seeded by
            ``heldout_seed``) as a validation split with the eval transform.
        exclude_heldout: drop the held-out images from ``train``. Without it the
            held-out split overlaps ``train`` (useful only for calibration).
        download: let torchvision download Fashion-MNIST/CIFAR when missing.
        augment: ``"default"``, ``"mobile"`` (milder RandomResizedCrop for
            imagefolder) or ``"none"`` (eval transform for training too).
        subset / test_subset: keep only the first N images (after a shuffle
            seeded by ``heldout_seed``) of train / test, for quick runs and tests.
    """
    key = canonical_name(name)
    train_base, test_base, in_channels, used_root = _read_base_splits(key, root, download)
    size = _NATIVE_SIZE[key] if input_size is None else int(input_size)
    if size <= 0:
        raise ValueError(f"input_size must be positive, got {input_size}")
    train_tf, eval_tf = build_transforms(key, size, augment)

    n_train = len(train_base)
    all_train = torch.arange(n_train)
    heldout = None
    if heldout_size:
        heldout_idx, rest_idx = split_heldout(n_train, heldout_size, heldout_seed)
        heldout = ImageView(train_base, heldout_idx, eval_tf)
        train_idx = rest_idx if exclude_heldout else all_train
    else:
        train_idx = all_train
    train_idx = _seeded_first(train_idx, subset, heldout_seed + 1, "subset")
    test_idx = _seeded_first(torch.arange(len(test_base)), test_subset, heldout_seed + 2, "test_subset")

    train = ImageView(train_base, train_idx, train_tf)
    calib_idx = heldout.indices if heldout is not None else train_idx
    calib = ImageView(train_base, calib_idx, train_tf)
    test = ImageView(test_base, test_idx, eval_tf)
    batch_tfs = build_batch_transforms(key, size, augment) if isinstance(train_base, TensorImages) else None
    return DataBundle(train=train, heldout=heldout, calib=calib, test=test,
                      num_classes=len(train_base.classes), in_channels=in_channels, input_size=size,
                      batch_transforms=batch_tfs, root=used_root)


def make_loader(dataset: Dataset, batch_size: int, *, train: bool, workers: int = 2, distributed: bool = False,
                seed: int = 0, drop_last: bool | None = None,
                device: str | torch.device = "cpu") -> DataLoader:
    """A ``DataLoader`` with reproducible order.

    Training loaders shuffle with a generator seeded by ``seed`` (the same seed
    also fixes the per-worker RNG seeds, so augmentation is reproducible too).
    With ``distributed=True`` a ``DistributedSampler`` (needs an initialised
    process group) shards the data; the caller must call
    ``loader.sampler.set_epoch(epoch)`` each epoch to get a new order.
    ``drop_last`` defaults to ``train``: a ragged last batch skews BatchNorm
    statistics during training but must be kept when evaluating.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    n = len(dataset)
    if n == 0:
        raise ValueError("cannot build a loader over an empty dataset")
    drop_last = train if drop_last is None else bool(drop_last)
    sampler = None
    per_replica = n
    if distributed:
        sampler = DistributedSampler(dataset, shuffle=train, seed=seed, drop_last=train)
        per_replica = len(sampler)
    if drop_last and batch_size > per_replica:
        where = f"per process ({n} in total)" if distributed else "in the dataset"
        raise ValueError(f"batch_size {batch_size} is larger than the {per_replica} samples {where}; with "
                         "drop_last=True this would give zero batches. Use a smaller batch_size or drop_last=False.")
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=train and sampler is None,
        sampler=sampler,
        num_workers=workers,
        pin_memory=torch.device(device).type == "cuda",
        drop_last=drop_last,
        persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(seed),
    )
