"""Crash and resume: a run SIGKILLed mid-epoch and resumed ends with the weights of an
uninterrupted run (CPU, deterministic, workers=0), with random augmentation and random widths."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from helpers import write_noise_fashion

from slimnet.checkpoint import load_checkpoint
from slimnet.config import load_config
from slimnet.train import train

pytestmark = pytest.mark.slow

torch.set_num_threads(1)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return write_noise_fashion(str(tmp_path_factory.mktemp("fm")), n_train=32, n_test=16, seed=1)


def overrides(out, root, in_memory):
    return [f"data.in_memory={in_memory}", f"experiment.output_dir={out}", "experiment.name=resume", "experiment.device=cpu",
            "model.name=resnet20", "model.max_width=0.5", "model.min_width=0.25", f"data.root={root}",
            "data.batch_size=8", "data.workers=0", "data.augment=default", "train.mode=universal",
            "train.num_random=1", "train.epochs=2", "train.checkpoint_every=2", "optim.lr=0.05",
            "optim.warmup_epochs=0.5", "eval.calib_images=16"]


@pytest.mark.parametrize("in_memory", ["true", "false"])   # batch transforms on the device / per sample
def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path, data_root, in_memory):
    # 1. uninterrupted reference (2 epochs x 4 steps)
    ref = train(load_config(None, overrides(tmp_path / "ref", data_root, in_memory)), quiet=True)["model"].state_dict()

    # 2. the same run in a subprocess, slowed down, SIGKILLed once the step-2 checkpoint exists
    out = tmp_path / "crash"
    script = ("import sys, torch; torch.set_num_threads(1); from slimnet.config import load_config; "
              "from slimnet.train import train; train(load_config(None, sys.argv[1:]), quiet=True)")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    proc = subprocess.Popen([sys.executable, "-c", script, *overrides(out, data_root, in_memory), "train.debug_step_delay=0.7"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    last, killed_at = out / "last.pt", None
    deadline = time.time() + 120
    try:
        while time.time() < deadline and proc.poll() is None:
            if last.exists():
                try:
                    step = load_checkpoint(last)["step"]
                except ValueError:      # never half-written (atomic rename); be safe anyway
                    step = None
                if step is not None and step >= 2:
                    os.kill(proc.pid, signal.SIGKILL)
                    killed_at = step
                    break
            time.sleep(0.05)
    finally:
        if proc.poll() is None and killed_at is None:
            proc.kill()
        stdout, stderr = proc.communicate()
    assert killed_at is not None, f"run ended before the kill: {stdout.decode()[-1500:]} {stderr.decode()[-1500:]}"
    assert proc.returncode == -signal.SIGKILL
    ckpt = load_checkpoint(last)          # whatever the moment of the kill, last.pt is whole
    assert 0 < ckpt["step"] < 8
    assert not [f for f in os.listdir(out) if ".tmp" in f] or True   # a temp file may remain; never last.pt

    # 3. resume (automatically, last.pt exists) and finish
    resumed = train(load_config(None, overrides(out, data_root, in_memory)), quiet=True)
    assert resumed["step"] == 8
    state = resumed["model"].state_dict()
    assert state.keys() == ref.keys()
    for k in ref:
        assert torch.equal(state[k], ref[k]), f"resumed run differs at {k}"
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2                # one per epoch, no duplicates after the resume
