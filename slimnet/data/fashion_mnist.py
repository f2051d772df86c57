"""Fashion-MNIST from its four IDX files (gzipped or not), and the IDX reader."""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch

from .datasets import TensorImages

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


def _fashion_mnist_search_dirs(root: str | None, system_dir: str) -> list[Path]:
    """A given root and its usual sub-folders only (never a silent fallback elsewhere); the
    system's copy (``system_dir``) when no root is given."""
    if root is not None:
        r = Path(root).expanduser()
        return [r, r / "FashionMNIST" / "raw", r / "fashion-mnist"]
    return [Path(system_dir)]


def _locate_fashion_mnist(root: str | None, system_dir: str) -> dict[str, Path] | None:
    """First directory (in search order) that holds all four IDX files."""
    for directory in _fashion_mnist_search_dirs(root, system_dir):
        found = {key: _find_idx_file(directory, stem) for key, stem in FASHION_MNIST_FILES.items()}
        if all(found.values()):
            return found
    return None


def _fashion_mnist_missing_error(root: str | None, system_dir: str) -> FileNotFoundError:
    searched = ", ".join(str(d) for d in _fashion_mnist_search_dirs(root, system_dir))
    names = ", ".join(f"{s}[.gz]" for s in FASHION_MNIST_FILES.values())
    return FileNotFoundError(
        f"Fashion-MNIST not found: looked for all of {names} in {searched}. To get the data: `apt-get install "
        f"dataset-fashion-mnist` (installs it in {system_dir}, used when no root is given), or set "
        "`data.download: true` (download=True) on a machine with internet access, or copy the four IDX files "
        "into `root`."
    )


def load_fashion_mnist(root: str | None, download: bool, system_dir: str) -> tuple[TensorImages, TensorImages, str]:
    """(train, test, folder read): the four IDX files from ``root`` (or ``system_dir`` without a
    root), downloaded into ``root`` by torchvision when missing and ``download``."""
    files = _locate_fashion_mnist(root, system_dir)
    if files is None and download:
        if root is None:
            raise ValueError("fashion_mnist: download=True needs a `root` directory to download into")
        from torchvision.datasets import FashionMNIST

        FashionMNIST(root, train=True, download=True)  # fetches all four files into root/FashionMNIST/raw
        files = _locate_fashion_mnist(root, system_dir)
    if files is None:
        raise _fashion_mnist_missing_error(root, system_dir)

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
