"""Seeded sampling and the training engine's loaders.

Everything random about the data is a function of (seed, epoch, index): the order of an epoch is a
permutation seeded by (seed, epoch), and each sample's augmentation is drawn under a seed of
(seed, epoch, index). A run resumed mid-epoch therefore sees exactly the batches an uninterrupted
run would, with any number of workers.

Two paths deliver the same distributions:

* **in memory** (default for Fashion-MNIST and CIFAR, ``data.in_memory``): the split's uint8
  pixels are copied once to the training device and every batch is gathered, cropped, flipped and
  normalized there with tensor ops (``slimnet.batch_transforms``). No per-sample Python work, so
  the data never holds back the network.
* **per sample** (image folders / ImageNet, or ``data.in_memory: false``): a ``DataLoader`` over
  the v2 transforms, ``data.workers`` processes.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from .batch_transforms import BatchTransform, CropFlip
from .config import Config, ConfigError
from .data import DataBundle, ImageView, build_data, make_loader

__all__ = ["EpochSampler", "FixedSeedView", "Loaders", "MemoryBatches", "MemoryEpochs", "SeededItems",
           "build_loaders", "calibration_batches", "calibration_positions", "evaluation_batches", "experiment_data",
           "mix", "use_memory"]


def mix(*parts: int) -> int:
    """A 63-bit seed from several integers (order matters)."""
    h = 0x9E3779B97F4A7C15
    for p in parts:
        h = (h ^ (int(p) + 0x9E3779B97F4A7C15 + (h << 6) + (h >> 2))) & 0xFFFFFFFFFFFFFFFF
    return h & 0x7FFFFFFFFFFFFFFF


# --------------------------------------------------------------------------------------------
# Order
# --------------------------------------------------------------------------------------------
class EpochSampler(Sampler):
    """This rank's (index, seed) keys for one epoch.

    The order is a permutation seeded by (seed, epoch), sharded rank::world like
    ``DistributedSampler`` and cut to whole batches; ``set_epoch(epoch, start_batch)`` also skips
    the batches a resumed run has already done. A single process taking every k-th sample of its
    batch (``accum_steps=k``) sees exactly the per-rank batches of k DDP ranks.
    """

    def __init__(self, n: int, batch_size: int, world: int = 1, rank: int = 0, seed: int = 0):
        self.n, self.batch_size, self.world, self.rank, self.seed = n, batch_size, world, rank, seed
        self.epoch, self.start_batch = 0, 0
        self.batches_per_epoch = (n // world) // batch_size

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def positions(self) -> torch.Tensor:
        """The dataset positions this rank still visits this epoch, in order."""
        g = torch.Generator().manual_seed(mix(self.seed, self.epoch))
        perm = torch.randperm(self.n, generator=g)
        per_rank = self.n // self.world
        mine = perm[self.rank: per_rank * self.world: self.world]
        return mine[self.start_batch * self.batch_size: self.batches_per_epoch * self.batch_size]

    def __iter__(self):
        for idx in self.positions().tolist():
            yield idx, mix(self.seed, self.epoch, idx)

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.start_batch) * self.batch_size


# --------------------------------------------------------------------------------------------
# Per-sample path
# --------------------------------------------------------------------------------------------
class SeededItems(Dataset):
    """Dataset wrapper whose keys are ``(index, seed)``: the item's transform runs under its own
    RNG seed, so augmentation is a function of the sample and epoch, not of worker RNG state."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]


class FixedSeedView(Dataset):
    """Some indices of a dataset, each with a fixed augmentation seed (the calibration images)."""

    def __init__(self, dataset: Dataset, indices, seed: int):
        self.dataset, self.indices, self.seed = dataset, list(indices), seed

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(mix(self.seed, i))
            return self.dataset[self.indices[i]]


# --------------------------------------------------------------------------------------------
# In-memory path
# --------------------------------------------------------------------------------------------
def _pixels(view: ImageView, positions: torch.Tensor | None, device) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images and labels of ``view`` (at ``positions``, or all) copied once to ``device``."""
    indices = view.indices if positions is None else view.indices[positions]
    return view.base.images[indices].to(device), view.base.targets[indices].to(device)


class MemoryEpochs:
    """Training batches of a split held on the device, in the order of an :class:`EpochSampler`.

    The augmentation of an epoch is drawn for every position at once from a generator seeded by
    (seed, epoch), so sample ``i`` of epoch ``e`` is augmented the same way whichever batch (or
    resumed run) it falls in."""

    def __init__(self, view: ImageView, transform: BatchTransform, sampler: EpochSampler, device):
        self.images, self.targets = _pixels(view, None, device)
        self.transform, self.sampler, self.batch_size = transform, sampler, sampler.batch_size

    def __len__(self) -> int:
        return self.sampler.batches_per_epoch - self.sampler.start_batch

    def __iter__(self):
        s = self.sampler
        order = s.positions().to(self.images.device)
        params = None
        if self.transform.random:
            g = torch.Generator().manual_seed(mix(s.seed, s.epoch, 0x5EED))
            params = CropFlip.draw(s.n, self.transform.padding, g).to(self.images.device)
        for start in range(0, len(order), self.batch_size):
            idx = order[start: start + self.batch_size]
            yield self.transform(self.images[idx], params[idx] if params is not None else None), self.targets[idx]


class MemoryBatches:
    """Fixed batches of a split held on the device (evaluation; calibration with a fixed draw of
    augmentation per image when ``seed`` is given)."""

    def __init__(self, view: ImageView, transform: BatchTransform, batch_size: int, device,
                 positions: torch.Tensor | None = None, seed: int | None = None):
        self.images, self.targets = _pixels(view, positions, device)
        self.transform, self.batch_size = transform, batch_size
        self.params = None
        if transform.random:
            if seed is None:
                raise ValueError("a random transform needs a seed for its fixed per-image draw")
            g = torch.Generator().manual_seed(mix(seed, 0xCA1B))
            self.params = CropFlip.draw(len(self.images), transform.padding, g).to(self.images.device)

    @property
    def num_images(self) -> int:
        return len(self.images)

    def __len__(self) -> int:
        return -(-len(self.images) // self.batch_size)

    def __iter__(self):
        for start in range(0, len(self.images), self.batch_size):
            sl = slice(start, start + self.batch_size)
            params = self.params[sl] if self.params is not None else None
            yield self.transform(self.images[sl], params), self.targets[sl]


# --------------------------------------------------------------------------------------------
# The engine's loaders
# --------------------------------------------------------------------------------------------
@dataclass
class Loaders:
    train: DataLoader | MemoryEpochs
    sampler: EpochSampler
    eval: DataLoader | MemoryBatches
    calib: DataLoader | MemoryBatches | None
    eval_images: int            # evaluation images in all (every rank)
    eval_images_rank: int       # this rank's share


def use_memory(want: bool | None, bundle: DataBundle, what: str = "data.in_memory") -> bool:
    """Whether the splits are held on the device (``want``: the config's ``data.in_memory``;
    None: whenever the dataset is one tensor)."""
    if want and bundle.batch_transforms is None:
        raise ConfigError(f"{what}: true needs a dataset held as one tensor (fashion_mnist, cifar10, "
                          f"cifar100); this one is read image by image (use data.workers instead)")
    return bundle.batch_transforms is not None if want is None else bool(want)


def _in_memory(exp: Config, bundle: DataBundle) -> bool:
    return use_memory(exp.data.in_memory, bundle)


def calibration_positions(n: int, count: int, seed: int) -> torch.Tensor:
    """Which ``count`` of ``n`` calibration-split images calibrate BN: a draw seeded by ``seed``."""
    g = torch.Generator().manual_seed(mix(seed, 7))
    return torch.randperm(n, generator=g)[:min(count, n)]


def calibration_batches(bundle: DataBundle, count: int, seed: int, batch_size: int, device, in_memory: bool,
                        workers: int = 0) -> DataLoader | MemoryBatches:
    """The calibration-image policy, the one every path uses (training's evaluations, ``evaluate``,
    ``export``, ``calibrate`` and the search's recalibrating BN modes): ``count`` images of the
    calibration split (the held-out split when there is one, else the training set) drawn by
    :func:`calibration_positions` with ``seed`` (the experiment's seed by default), each under the
    training augmentation with a fixed per-image draw. Same data, count and seed: the same images,
    so a config gets the same statistics whichever tool calibrates it."""
    positions = calibration_positions(len(bundle.calib), count, seed)
    if in_memory:
        train_tf, _ = bundle.batch_transforms
        return MemoryBatches(bundle.calib, train_tf, batch_size, device, positions=positions, seed=seed)
    return make_loader(FixedSeedView(bundle.calib, positions.tolist(), seed), batch_size, train=False,
                       workers=workers, device=device)


def evaluation_batches(bundle: DataBundle, view, batch_size: int, device, in_memory: bool, workers: int = 0,
                       positions: torch.Tensor | None = None) -> DataLoader | MemoryBatches:
    """Batches of an evaluation split (``view``: ``bundle.test`` or ``bundle.heldout``; at
    ``positions`` only, e.g. one rank's shard), streamed: on the device as uint8 for in-memory
    datasets, through a ``DataLoader`` otherwise (never the whole split as one float tensor)."""
    if in_memory:
        _, eval_tf = bundle.batch_transforms
        return MemoryBatches(view, eval_tf, batch_size, device, positions=positions)
    subset = view if positions is None else Subset(view, positions.tolist())
    return make_loader(subset, batch_size, train=False, workers=workers, device=device)


def experiment_data(exp: Config) -> DataBundle:
    """The splits an experiment config's ``data`` section describes."""
    d = exp.data
    return build_data(d.name, d.root, input_size=d.input_size, heldout_size=d.heldout_size,
                      heldout_seed=d.heldout_seed, exclude_heldout=d.exclude_heldout, download=d.download,
                      augment=d.augment, subset=d.subset, test_subset=d.test_subset)


def build_loaders(exp: Config, bundle: DataBundle, device: torch.device, need_calib: bool,
                  rank: int = 0, world: int = 1) -> Loaders:
    d = exp.data
    n = len(bundle.train)
    per_rank = n // world
    if d.batch_size > per_rank:
        where = f"per process ({n} images over {world} processes)" if world > 1 else "in the training set"
        raise ConfigError(f"data.batch_size: {d.batch_size} is larger than the {per_rank} images {where}; "
                          "use a smaller batch size (or more data: data.subset)")
    sampler = EpochSampler(n, d.batch_size, world, rank, exp.experiment.seed)
    eval_view = bundle.heldout if exp.eval.split == "heldout" else bundle.test
    total = len(eval_view)
    if exp.eval.max_images is not None:
        total = min(total, exp.eval.max_images)
    mine = torch.arange(rank, total, world)   # exact shards, no padding duplicates: metrics are summed
    ebs = d.eval_batch_size or d.batch_size
    # The same calibration images on every rank, each with a fixed augmentation draw: identical
    # statistics everywhere, the same every epoch.
    memory = _in_memory(exp, bundle)
    calib = (calibration_batches(bundle, exp.eval.calib_images, exp.experiment.seed, ebs, device, memory, d.workers)
             if need_calib else None)
    evaluation = evaluation_batches(bundle, eval_view, ebs, device, memory, d.workers, positions=mine)
    if memory:
        train = MemoryEpochs(bundle.train, bundle.batch_transforms[0], sampler, device)
    else:
        pin = device.type == "cuda"
        train = DataLoader(SeededItems(bundle.train), batch_size=d.batch_size, sampler=sampler, drop_last=True,
                           num_workers=d.workers, pin_memory=pin, persistent_workers=d.workers > 0)
    return Loaders(train, sampler, evaluation, calib, total, len(mine))
