"""Evaluation during training: every config of the plan (BN calibrated first when the plan says
so), metrics summed over ranks."""
from __future__ import annotations

import torch

from ..calibrate import calibrate_bn
from ..metrics import evaluate, summarize
from ..profile import profile
from .distributed import DistInfo, all_reduce_sum

__all__ = ["evaluate_plan"]


def evaluate_plan(net, plan, loaders, calib_images: int, device, dist: DistInfo, autocast) -> dict:
    """{label: {top1, top5, loss, macs}} of every config in ``plan.eval_configs``."""
    out = {}
    for label, c in plan.eval_configs:
        if not net.is_child:
            if plan.calibrate:
                calibrate_bn(net, c, loaders.calib, calib_images, device=device)
            net.set_channels(c)
        with autocast:
            r = evaluate(net, loaders.eval, device)
        sums = torch.tensor([r["correct1"], r["correct5"], r["loss_sum"], r["images"]], dtype=torch.float64,
                            device=device)
        sums[3] = float(loaders.eval_images_rank)     # exact count (summarize() floors it at 1)
        s = summarize(*all_reduce_sum(sums, dist).tolist())
        out[label] = {"top1": s["top1"], "top5": s["top5"], "loss": s["loss"], "macs": profile(net.space, c).macs}
    return out
