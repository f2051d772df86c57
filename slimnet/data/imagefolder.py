"""ImageNet-style image folders: ``root/train/<class>/<image>`` and ``root/val/<class>/<image>``."""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch.utils.data import Dataset


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


def load_imagefolder(root: str | None) -> tuple[Dataset, Dataset]:
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
