"""DDP plumbing: joining the process group ``torchrun`` describes, sums over ranks, and the BN
running statistics that stay per rank during training and are averaged before they are used."""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import torch
import torch.distributed as tdist
import torch.nn as nn

from ..nn import SwitchableBatchNorm2d
from ..utils import pick_device

__all__ = ["DistInfo", "init_distributed", "all_reduce_sum", "average_bn_buffers", "private_bn_params",
           "wrap_ddp"]


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    created: bool = False      # we initialised the process group (and destroy it at the end)

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device_name: str) -> tuple[DistInfo, torch.device]:
    """Join the process group ``torchrun`` describes in the environment (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(), pick_device(device_name)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    created = False
    if not tdist.is_initialized():
        tdist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        created = True
    return DistInfo(rank, world, local_rank, created), device


def shutdown_distributed(dist: DistInfo) -> None:
    """Leave the process group if :func:`init_distributed` created it."""
    if dist.created and tdist.is_initialized():
        tdist.destroy_process_group()


def all_reduce_sum(t: torch.Tensor, dist: DistInfo) -> torch.Tensor:
    """``t`` summed over ranks, in place (unchanged in a single process)."""
    if dist.enabled:
        tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
    return t


def average_bn_buffers(net: nn.Module, dist: DistInfo) -> None:
    """Per-rank BN running statistics -> their mean, so every rank (and the checkpoint) agrees."""
    if not dist.enabled:
        return
    for buf in net.buffers():
        if buf.is_floating_point():
            tdist.all_reduce(buf, op=tdist.ReduceOp.SUM)
            buf.div_(dist.world)


def private_bn_params(net: nn.Module) -> list:
    """The parameters of switchable (private per config) BN: under DDP the step adds them to the
    last, synced loss as ``0 * sum`` so their gradients are all-reduced too (see ``train_step``)."""
    return [p for mod in net.modules() if isinstance(mod, SwitchableBatchNorm2d) for p in mod.parameters()]


def wrap_ddp(net: nn.Module, device: torch.device) -> nn.Module:
    """``net`` in DistributedDataParallel with BN statistics kept per rank (``broadcast_buffers``
    off) until :func:`average_bn_buffers` (epoch ends, checkpoints)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False)
