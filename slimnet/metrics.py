"""Evaluation: top-1 / top-5 accuracy and loss of a model on a data loader."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def topk_correct(logits: torch.Tensor, targets: torch.Tensor, ks=(1, 5)) -> list[int]:
    """Number of samples whose target is among the top-k predictions, for each k."""
    kmax = min(max(ks), logits.shape[1])
    top = logits.topk(kmax, dim=1).indices
    hits = top.eq(targets.unsqueeze(1))
    return [int(hits[:, : min(k, kmax)].any(dim=1).sum()) for k in ks]


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader, device=None, max_images: int | None = None) -> dict:
    """Top-1 / top-5 accuracy (percent) and mean cross-entropy over ``loader`` in eval mode.

    Returns raw sums too (``correct1``, ``correct5``, ``loss_sum``, ``images``) so distributed
    callers can all-reduce them before dividing.
    """
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    c1 = c5 = n = 0
    loss_sum = 0.0
    try:
        for images, targets in loader:
            if max_images is not None and n >= max_images:
                break
            images = images.to(device, non_blocking=True)
            targets = targets.to(device, non_blocking=True)
            logits = model(images).float()
            loss_sum += F.cross_entropy(logits, targets, reduction="sum").item()
            a1, a5 = topk_correct(logits, targets)
            c1, c5, n = c1 + a1, c5 + a5, n + targets.shape[0]
    finally:
        model.train(was_training)
    return summarize(c1, c5, loss_sum, n)


def summarize(correct1: float, correct5: float, loss_sum: float, images: float) -> dict:
    images = max(int(images), 1)
    return {"top1": 100.0 * correct1 / images, "top5": 100.0 * correct5 / images, "loss": loss_sum / images,
            "correct1": int(correct1), "correct5": int(correct5), "loss_sum": float(loss_sum), "images": images}
