"""Transforms of whole batches, for datasets held in memory as one uint8 tensor.

The per-sample transforms of ``data.build_transforms`` (torchvision v2, one image at a time) cost
more than a small network's training step on a CPU. For datasets whose images all fit in memory
(Fashion-MNIST, CIFAR) the loaders in ``slimnet.loaders`` keep the uint8 pixels on the training
device and apply the *same* transform to a whole batch with tensor ops:

    random crop with zero padding  (v2.RandomCrop(size, padding=p): offsets uniform in [0, 2p])
    horizontal flip                (v2.RandomHorizontalFlip(): probability 0.5)
    resize                         (v2.Resize(antialias=True), only when the input size differs)
    to float in [0, 1], normalize  (v2.ToDtype(scale=True), v2.Normalize)

The random choices are explicit :class:`CropFlip` parameters drawn by the caller from a seeded
generator, so a sample's augmentation is a function of (seed, epoch, index) and the same on any
device. Crop and flip are one gather with per-sample indices (no Python loop over samples).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

__all__ = ["BatchTransform", "CropFlip"]


@dataclass
class CropFlip:
    """Per-sample random choices of a batch: crop offsets into the padded image and flips."""

    top: torch.Tensor     # (N,) int64 in [0, 2 * padding]
    left: torch.Tensor    # (N,) int64 in [0, 2 * padding]
    flip: torch.Tensor    # (N,) bool

    @staticmethod
    def draw(n: int, padding: int, generator: torch.Generator) -> "CropFlip":
        """``n`` draws from the distributions of v2.RandomCrop(padding=padding) and
        v2.RandomHorizontalFlip() (on CPU, from ``generator``)."""
        top = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
        left = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
        flip = torch.rand(n, generator=generator) < 0.5
        return CropFlip(top, left, flip)

    def __getitem__(self, index) -> "CropFlip":
        return CropFlip(self.top[index], self.left[index], self.flip[index])

    def to(self, device) -> "CropFlip":
        return CropFlip(self.top.to(device), self.left.to(device), self.flip.to(device))


@dataclass(frozen=True)
class BatchTransform:
    """uint8 (N, C, H, W) -> normalized float32 (N, C, size, size).

    ``padding`` > 0 or ``flip`` make it a training transform that needs :class:`CropFlip`
    parameters; without them it is deterministic (evaluation)."""

    mean: tuple
    std: tuple
    size: int                 # output side (a resize when the images are another size)
    padding: int = 0          # random crop with this zero padding (crop size = the image size)
    flip: bool = False        # random horizontal flip

    @property
    def random(self) -> bool:
        return self.padding > 0 or self.flip

    def __call__(self, images: torch.Tensor, params: CropFlip | None = None) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"expected a uint8 batch (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if self.random:
            if params is None:
                raise ValueError("this is a random (training) transform: pass CropFlip parameters")
            images = self._crop_flip(images, params)
        if images.shape[-2:] != (self.size, self.size):   # on uint8 with torchvision's kernel: v2.Resize exactly
            images = TF.resize(images, [self.size, self.size], antialias=True)
        x = images.float().div_(255.0)
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        return x.sub_(mean).div_(std)

    def _crop_flip(self, images: torch.Tensor, params: CropFlip) -> torch.Tensor:
        n, c, h, w = images.shape
        p = self.padding
        if p:
            images = F.pad(images, (p, p, p, p))
        dev = images.device
        rows = params.top.to(dev).view(n, 1) + torch.arange(h, device=dev)            # (N, H)
        cols = torch.arange(w, device=dev).expand(n, w)                              # (N, W)
        if self.flip:   # crop, then flip: output column j reads crop column w - 1 - j
            cols = torch.where(params.flip.to(dev).view(n, 1), w - 1 - cols, cols)
        cols = cols + params.left.to(dev).view(n, 1)
        batch = torch.arange(n, device=dev).view(n, 1, 1, 1)
        chan = torch.arange(c, device=dev).view(1, c, 1, 1)
        return images[batch, chan, rows.view(n, 1, h, 1), cols.view(n, 1, 1, w)]
