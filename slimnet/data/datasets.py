"""In-memory and view datasets: pixels stored once, each split a transformed view of indices."""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors


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
