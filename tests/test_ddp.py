"""DistributedDataParallel: 2 CPU processes (gloo, torchrun) stay in sync and match one process.

Why the comparison is exact in principle: BatchNorm normalises each rank's batch with that
batch's own statistics, so one process on the global batch of 8 would *not* match 2 ranks of 4
(SyncBatchNorm does not apply: slimmable BN is not ``nn.BatchNorm``). The engine's micro-batches
do match: with ``train.accum_steps=2`` one process splits its batch of 8 into every-other-sample
halves, and the engine's sampler shards the same seeded permutation rank::world like
``DistributedSampler``, so micro-batch i of the single process is exactly the batch of rank i.
Each half goes through BN alone, its loss is halved and the gradients add up: what DDP's gradient
averaging computes. Only the float summation order differs.

Why float64 and noise images: tiny nets on 4-image batches are chaotic in float32. A one-ulp
change of the learning rate alone moves the gradients by percents within a few steps (ReLU
boundaries flip; Fashion-MNIST's constant black backgrounds flip thousands of identical pixels at
once). So the workers build the model in float64 (inputs cast to it) and train on random-noise
images written in Fashion-MNIST's IDX format: round-off stays near 1e-14 and the comparison
tests the engine, not float32 chaos.

This file is also the worker that ``torchrun`` runs (``python tests/test_ddp.py OUT KEY=VALUE...``).
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
import torch
from helpers import write_noise_fashion

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _overrides(out: str, data_root: str, mode: str) -> list[str]:
    widths = "train.widths=[0.5,0.25]" if mode == "switchable" else "train.widths=[]"
    return [
        "experiment.name=ddp", f"experiment.output_dir={out}", "model.name=resnet20", "model.max_width=0.5",
        "model.min_width=0.25", f"data.root={data_root}", "data.batch_size=4", "data.workers=0",
        "data.augment=none", f"train.mode={mode}", widths, "train.epochs=2", "train.num_random=1",
        "optim.lr=0.05", "eval.calib_images=16",
    ]


def _float64(setattr_=setattr) -> None:
    """Build models in float64, cast inputs to it (see the module docstring)."""
    import slimnet.train.trainer as engine

    torch.set_default_dtype(torch.float64)
    build_model = engine.build_model

    def build_model_f64(*args, **kwargs):
        net, plan = build_model(*args, **kwargs)
        net.register_forward_pre_hook(lambda mod, inputs: (inputs[0].double(),))
        return net, plan

    setattr_(engine, "build_model", build_model_f64)


def _worker(out: str, overrides: list[str]) -> None:
    import slimnet.train.trainer as engine
    from slimnet.config import load_config

    cfg = load_config(None, overrides)
    rank = int(os.environ.get("RANK", "0"))
    summary = engine.train(cfg, fresh=True, quiet=True)
    params = {k: v.detach().clone() for k, v in summary["model"].named_parameters()}
    torch.save(params, os.path.join(out, f"params_rank{rank}.pt"))


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


@pytest.mark.parametrize("mode", ["switchable", "universal"])
def test_ddp_two_ranks_match_single_process(tmp_path, mode, monkeypatch):
    data_root = write_noise_fashion(str(tmp_path / "data"))
    ddp_out, single_out = str(tmp_path / "ddp"), str(tmp_path / "single")
    os.makedirs(ddp_out)
    os.makedirs(single_out)
    cmd = [PY, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), os.path.abspath(__file__), ddp_out,
           *_overrides(ddp_out, data_root, mode)]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # the single-process reference runs here (same code, float64 too)
    single = _overrides(single_out, data_root, mode) + ["data.batch_size=8", "train.accum_steps=2"]
    dtype, threads = torch.get_default_dtype(), torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        _float64(monkeypatch.setattr)
        _worker(single_out, single)
    finally:
        torch.set_default_dtype(dtype)
        torch.set_num_threads(threads)

    r0 = torch.load(os.path.join(ddp_out, "params_rank0.pt"))
    r1 = torch.load(os.path.join(ddp_out, "params_rank1.pt"))
    ref = torch.load(os.path.join(single_out, "params_rank0.pt"))
    for name in r0:   # ranks in lock-step: bit-identical weights (the same all-reduced gradients)
        assert torch.equal(r0[name], r1[name]), f"ranks diverged at {name}"
    worst = max((r0[k] - ref[k]).abs().max().item() for k in r0)
    assert worst < 1e-9, f"DDP and single-process runs differ by {worst}"
    # only rank 0 writes files; one metrics line per epoch
    assert os.path.isfile(os.path.join(ddp_out, "last.pt"))
    lines = open(os.path.join(ddp_out, "metrics.jsonl")).read().splitlines()
    assert len(lines) == 2


if __name__ == "__main__":
    torch.set_num_threads(1)
    sys.path.insert(0, ROOT)
    _float64()
    _worker(sys.argv[1], sys.argv[2:])
