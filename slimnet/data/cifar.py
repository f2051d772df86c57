"""CIFAR-10 / CIFAR-100 in torchvision's python-pickle layout, held as one uint8 tensor."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .datasets import TensorImages


def load_cifar(name: str, root: str | None, download: bool) -> tuple[TensorImages, TensorImages]:
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
