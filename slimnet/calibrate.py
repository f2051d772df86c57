"""Post-training BN statistics ("BN calibration") for any channel config.

Universally slimmable nets do not track BN statistics in training: each width and each per-layer
config needs its own. ``calibrate_bn`` computes them exactly (the mean and unbiased variance of
every BN input over all calibration images, as a cumulative average would with momentum=None,
but without its per-batch approximation of the variance) in train mode under no_grad, then
stores them for that config. When to calibrate: always before evaluating or exporting a config
of a universal / AutoSlim supernet; for a switchable (S-Net) config it is optional and replaces
the running statistics of that config's private BN.
"""
from __future__ import annotations

import torch

from .nn import CalibratableBN, StatsCollector


def _bn_layers(net):
    layers = [m for m in net.modules() if isinstance(m, CalibratableBN)]
    if not layers:
        raise ValueError("this model has no slimmable BN layers to calibrate (is it an exported child?)")
    return layers


def image_batches(data, device):
    """Yield image batches (N, C, H, W) from: a bare tensor (one batch; a single image (C, H, W)
    counts as a batch of one), a DataLoader / iterable of (images, labels) pairs or of image
    tensors (a list/tuple of tensors is a list of batches)."""
    if isinstance(data, torch.Tensor):
        data = [data]
    for batch in data:
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"calibration data must yield image tensors (or (images, labels) pairs), got "
                            f"{type(images).__name__}")
        if images.dim() == 3:
            images = images.unsqueeze(0)
        if images.dim() != 4:
            raise ValueError(f"calibration images must be a 4-D batch (N, C, H, W), got shape {tuple(images.shape)}")
        yield images.to(device, non_blocking=True)


@torch.no_grad()
def calibrate_bn(net, cfg, data, num_images: int = 2000, device=None) -> int:
    """Compute and store the BN statistics of ``cfg`` from up to ``num_images`` images of ``data``
    (a DataLoader or any iterable of batches, or one tensor of images used as a single batch).
    Returns the number of images used.

    The net is left at ``cfg`` and in the train/eval mode it was in before.
    """
    if num_images < 2:
        raise ValueError(f"num_images must be >= 2, got {num_images}")
    device = device or next(net.parameters()).device
    cfg = net.set_channels(cfg)
    collector = StatsCollector(_bn_layers(net))
    stats = collector.new_stats()
    was_training = net.training
    net.train()
    seen = 0
    try:
        with collector, collector.recording(stats):
            for images in image_batches(data, device):
                images = images[: num_images - seen]
                net(images)
                seen += images.shape[0]
                if seen >= num_images:
                    break
        if seen < 2:
            raise ValueError("calibration data yielded fewer than 2 images")
        collector.store(stats)
    finally:
        net.train(was_training)
    return seen
