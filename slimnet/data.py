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
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler
from torchvision import tv_tensors
from torchvision.transforms import v2

from .batch_transforms import BatchTransform

__all__ = [
    "DATASETS",
    "DataBundle",
    "ImageView",
    "TensorImages",
    "build_batch_transforms",
    "build_data",
    "build_transforms",
    "canonical_name",
    "make_loader",
    "read_idx",
    "split_heldout",
]

DATASETS = ("fashion_mnist", "cifar10", "cifar100", "imagefolder")
_ALIASES = {"imagenet": "imagefolder"}
AUGMENTS = ("default", "mobile", "none")

FASHION_MNIST_SYSTEM_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)

# Per-channel statistics of the *training* sets, in [0, 1] pixel units.
_STATS = {
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "imagefolder": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
_NATIVE_SIZE = {"fashion_mnist": 28, "cifar10": 32, "cifar100": 32, "imagefolder": 224}
_CROP_PADDING = {"fashion_mnist": 2, "cifar10": 4, "cifar100": 4}


# --------------------------------------------------------------------------- #
# Dataset containers
# --------------------------------------------------------------------------- #
class TensorImages(Dataset):
    """Untransformed images held in memory as one uint8 tensor ``(N, C, H, W)``.

    Items come back as ``tv_tensors.Image`` so the v2 transforms know without
    guessing that the tensor is an image (not a mask or bounding boxes).
    """

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, classes: Sequence[str]):
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be a uint8 tensor (N, C, H, W); got {images.dtype} {tuple(images.shape)}")
        if targets.ndim != 1 or len(targets) != len(images):
            raise ValueError(f"targets must be 1-D with one label per image; got {tuple(targets.shape)} "
                             f"for {len(images)} images")
        self.images = images
        self.targets = targets.long()
        self.classes = list(classes)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[tv_tensors.Image, int]:
        return tv_tensors.Image(self.images[index]), int(self.targets[index])


class ImageView(Dataset):
    """A transformed view of some indices of a shared base dataset.

    ``base[i]`` must return ``(raw_image, target)`` and ``base.targets`` hold all
    labels; the view applies its own transform, so two views over one base can
    differ in augmentation while the pixels are stored once.  ``targets`` is the
    LongTensor of this view's labels (read without touching any image).
    """

    def __init__(self, base: Dataset, indices: torch.Tensor | None, transform: Callable | None):
        self.base = base
        self.indices = torch.arange(len(base)) if indices is None else torch.as_tensor(indices, dtype=torch.long)
        self.transform = transform
        self.targets = torch.as_tensor(base.targets, dtype=torch.long)[self.indices]
        self.classes = list(getattr(base, "classes", []))

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image, target = self.base[int(self.indices[index])]
        if self.transform is not None:
            image = self.transform(image)
        return image, int(target)

    def view(self, positions: torch.Tensor, transform: Callable | None = None) -> "ImageView":
        """A view of some positions of *this* view (same base, no copy), with this
        view's transform unless another is given."""
        positions = torch.as_tensor(positions, dtype=torch.long)
        return ImageView(self.base, self.indices[positions], self.transform if transform is None else transform)


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


# --------------------------------------------------------------------------- #
# IDX (MNIST-family) reader
# --------------------------------------------------------------------------- #
_IDX_DTYPES = {0x08: np.uint8}


def read_idx(path: str | os.PathLike, expected_ndim: int | None = None) -> np.ndarray:
    """Read an IDX file (gzipped or not) into a uint8 numpy array.

    The IDX header is two zero bytes, a type code (0x08 = unsigned byte), the
    number of dimensions, then each dimension as a big-endian int32.  Only the
    uint8 type is accepted because that is what every MNIST-family file uses;
    anything else means the file is not what we think it is.
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":  # gzip magic: decide by content, not by file name
        raw = gzip.decompress(raw)
    if len(raw) < 4:
        raise ValueError(f"{path}: too short to be an IDX file ({len(raw)} bytes)")
    magic = int.from_bytes(raw[:4], "big")
    zero, type_code, ndim = int.from_bytes(raw[:2], "big"), raw[2], raw[3]
    if zero != 0 or type_code not in _IDX_DTYPES:
        raise ValueError(f"{path}: bad IDX magic number 0x{magic:08x}; expected 0x000008NN "
                         f"(uint8 data, NN dimensions), e.g. 0x00000803 for images, 0x00000801 for labels")
    if expected_ndim is not None and ndim != expected_ndim:
        raise ValueError(f"{path}: IDX file has {ndim} dimensions (magic 0x{magic:08x}); expected {expected_ndim} "
                         f"(magic 0x{0x800 + expected_ndim:08x})")
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise ValueError(f"{path}: truncated IDX header ({len(raw)} bytes, need {header_len})")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    expected = int(np.prod(dims, dtype=np.int64))
    payload = len(raw) - header_len
    if payload != expected:
        raise ValueError(f"{path}: IDX header promises dims {dims} = {expected} bytes of data but the file "
                         f"holds {payload}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header_len).reshape(dims).copy()


def _find_idx_file(directory: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        candidate = directory / name
        if candidate.is_file():
            return candidate
    return None


def _fashion_mnist_search_dirs(root: str | None) -> list[Path]:
    """A given root and its usual sub-folders only (never a silent fallback elsewhere); the
    system's copy when no root is given."""
    if root is not None:
        r = Path(root).expanduser()
        return [r, r / "FashionMNIST" / "raw", r / "fashion-mnist"]
    return [Path(FASHION_MNIST_SYSTEM_DIR)]


def _locate_fashion_mnist(root: str | None) -> dict[str, Path] | None:
    """First directory (in search order) that holds all four IDX files."""
    for directory in _fashion_mnist_search_dirs(root):
        found = {key: _find_idx_file(directory, stem) for key, stem in FASHION_MNIST_FILES.items()}
        if all(found.values()):
            return found
    return None


def _fashion_mnist_missing_error(root: str | None) -> FileNotFoundError:
    searched = ", ".join(str(d) for d in _fashion_mnist_search_dirs(root))
    names = ", ".join(f"{s}[.gz]" for s in FASHION_MNIST_FILES.values())
    return FileNotFoundError(
        f"Fashion-MNIST not found: looked for all of {names} in {searched}. To get the data: `apt-get install "
        f"dataset-fashion-mnist` (installs it in {FASHION_MNIST_SYSTEM_DIR}, used when no root is given), or set "
        "`data.download: true` (download=True) on a machine with internet access, or copy the four IDX files "
        "into `root`."
    )


def _load_fashion_mnist(root: str | None, download: bool) -> tuple[TensorImages, TensorImages, str]:
    files = _locate_fashion_mnist(root)
    if files is None and download:
        if root is None:
            raise ValueError("fashion_mnist: download=True needs a `root` directory to download into")
        from torchvision.datasets import FashionMNIST

        FashionMNIST(root, train=True, download=True)  # fetches all four files into root/FashionMNIST/raw
        files = _locate_fashion_mnist(root)
    if files is None:
        raise _fashion_mnist_missing_error(root)

    def split(images_key: str, labels_key: str) -> TensorImages:
        images = read_idx(files[images_key], expected_ndim=3)
        labels = read_idx(files[labels_key], expected_ndim=1)
        if len(images) != len(labels):
            raise ValueError(f"{files[images_key]} has {len(images)} images but {files[labels_key]} has "
                             f"{len(labels)} labels")
        if labels.size and labels.max() >= len(FASHION_MNIST_CLASSES):
            raise ValueError(f"{files[labels_key]}: label {int(labels.max())} out of range; Fashion-MNIST "
                             f"labels are 0..{len(FASHION_MNIST_CLASSES) - 1}")
        return TensorImages(torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels).long(),
                            FASHION_MNIST_CLASSES)

    used = str(Path(root).expanduser().resolve()) if root is not None else str(files["train_images"].parent)
    return split("train_images", "train_labels"), split("test_images", "test_labels"), used


# --------------------------------------------------------------------------- #
# CIFAR
# --------------------------------------------------------------------------- #
def _load_cifar(name: str, root: str | None, download: bool) -> tuple[TensorImages, TensorImages]:
    """Load CIFAR-10/100 through torchvision (including its md5 integrity check)
    and keep the pixels as one CHW uint8 tensor, so the v2 transforms run on
    tensors rather than PIL images and both splits can share storage."""
    from torchvision.datasets import CIFAR10, CIFAR100

    cls = CIFAR10 if name == "cifar10" else CIFAR100
    if root is None:
        raise ValueError(f"{name}: `root` is required (the directory that contains {cls.base_folder}/)")
    folder = Path(root).expanduser() / cls.base_folder
    expected = [f for f, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    missing = [f for f in expected if not (folder / f).is_file()]
    if missing and not download:
        tarball = cls.url.rsplit("/", 1)[-1]
        raise FileNotFoundError(
            f"{name} not found: expected the python-pickle layout {folder}/{{{', '.join(expected)}}}; "
            f"missing: {', '.join(missing)}. Get it with `data.download: true` (download=True) on a machine "
            f"with internet access, or download {cls.url} and extract {tarball} into {Path(root)}."
        )
    splits = []
    for train in (True, False):
        try:
            ds = cls(str(root), train=train, download=download)
        except RuntimeError as err:
            raise RuntimeError(f"{name}: torchvision rejected the files in {folder} ({err}). They exist but "
                               "failed its md5 integrity check, i.e. they are not the official CIFAR files; "
                               "re-download them.") from err
        images = torch.from_numpy(np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2)))
        splits.append(TensorImages(images, torch.as_tensor(ds.targets, dtype=torch.long), ds.classes))
    return splits[0], splits[1]


# --------------------------------------------------------------------------- #
# ImageFolder / ImageNet
# --------------------------------------------------------------------------- #
def _class_dirs(directory: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(directory) if e.is_dir())


def read_image(path: str):
    """ImageFolder's loader (RGB PIL image) with an error that names an unreadable file."""
    from PIL import Image

    try:
        with open(path, "rb") as f:
            return Image.open(f).convert("RGB")
    except (OSError, ValueError, SyntaxError) as e:   # PIL's UnidentifiedImageError is an OSError
        raise ValueError(f"imagefolder: cannot read image {path} ({' '.join(str(e).split())}); remove or replace "
                         "the file") from None


def _load_imagefolder(root: str | None) -> tuple[Dataset, Dataset]:
    from torchvision.datasets import ImageFolder

    if root is None:
        raise ValueError("imagefolder: `root` is required (a directory with train/<class>/... and val/<class>/...)")
    root_path = Path(root).expanduser()
    for split in ("train", "val"):
        d = root_path / split
        if not d.is_dir():
            raise FileNotFoundError(f"imagefolder: {d} does not exist; expected {root_path}/train/<class>/<img> "
                                    f"and {root_path}/val/<class>/<img>")
        if not _class_dirs(d):
            raise FileNotFoundError(f"imagefolder: {d} has no class sub-directories; expected {d}/<class>/<img>")
    train, val = (ImageFolder(str(root_path / split), loader=read_image) for split in ("train", "val"))
    if train.classes != val.classes:
        only_train = sorted(set(train.classes) - set(val.classes))
        only_val = sorted(set(val.classes) - set(train.classes))
        raise ValueError(f"imagefolder: class folders of train and val differ (labels would not line up); "
                         f"only in train: {only_train}, only in val: {only_val}")
    for ds in (train, val):
        ds.targets = torch.as_tensor(ds.targets, dtype=torch.long)
    return train, val


# --------------------------------------------------------------------------- #
# Transforms
# --------------------------------------------------------------------------- #
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


# --------------------------------------------------------------------------- #
# Splits
# --------------------------------------------------------------------------- #
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


# --------------------------------------------------------------------------- #
# Public entry points
# --------------------------------------------------------------------------- #
def canonical_name(name: str) -> str:
    key = name.lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in DATASETS:
        valid = ", ".join(DATASETS + tuple(_ALIASES))
        raise ValueError(f"unknown dataset {name!r}; valid names: {valid}")
    return key


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
    if root is not None and not download and not Path(root).expanduser().is_dir():
        what = "is a file, not a folder" if Path(root).expanduser().exists() else "does not exist"
        unset = " (leave it unset for the system's Fashion-MNIST)" if key == "fashion_mnist" else ""
        raise FileNotFoundError(f"data root {root} {what}: give the folder that holds the {key} files{unset}")
    used_root = str(Path(root).expanduser().resolve()) if root is not None else None
    if key == "fashion_mnist":
        train_base, test_base, used_root = _load_fashion_mnist(root, download)
        in_channels = 1
    elif key in ("cifar10", "cifar100"):
        train_base, test_base = _load_cifar(key, root, download)
        in_channels = 3
    else:
        train_base, test_base = _load_imagefolder(root)
        in_channels = 3
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
