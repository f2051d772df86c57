"""Faults a user or tester causes (issue 9): no checkpoint runs code, no run destroys good results,
every bad input gets a one-line error. docs/FAULTS.md lists each case and what is kept."""
from __future__ import annotations

import json
import os

import pytest
import torch
from helpers import write_noise_fashion

import slimnet
from slimnet.checkpoint import load_checkpoint, save_checkpoint
from slimnet.cli import main
from slimnet.config import load_config

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def noise_data(tmp_path_factory):
    return write_noise_fashion(str(tmp_path_factory.mktemp("fm")), n_train=48, n_test=16, seed=0)


def tiny_args(out, root, *extra):
    return [f"experiment.output_dir={out}", "experiment.name=t", "experiment.device=cpu", "model.name=resnet20",
            "model.max_width=0.5", "model.min_width=0.25", f"data.root={root}", "data.batch_size=8",
            "data.workers=0", "data.augment=none", "train.epochs=1", "train.num_random=1", "train.mode=universal",
            "optim.lr=0.05", "eval.calib_images=16", *extra]


def one_line_error(capsys, argv, code=2):
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == code, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


# ---------------------------------------------------------------------------------------------
# 1. no checkpoint runs code
# ---------------------------------------------------------------------------------------------
class _Payload:
    """Unpickling this creates (opens for writing) the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_payload_never_runs(tmp_path, noise_data, capsys):
    marker = tmp_path / "marker"
    payload = tmp_path / "evil.pt"
    torch.save({"format": "slimnet-ckpt-v1", "model": _Payload(marker)}, payload)
    # the same file planted as a training run's last.pt (automatic resume) and as a child file
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"format": "slimnet-ckpt-v1", "model_state": _Payload(marker)}, run / "last.pt")
    torch.save({"format": "slimnet-child-v1", "config": _Payload(marker)}, tmp_path / "child.pt")

    for load in (slimnet.load_supernet, load_checkpoint):
        with pytest.raises(ValueError, match=r"io\.open.*not loaded \(loading it could run code\)"):
            load(payload)
    with pytest.raises(ValueError, match="not loaded"):
        slimnet.load_child(tmp_path / "child.pt")
    os.replace(payload, tmp_path / "best.pt")        # --experiment-dir reads DIR/best.pt
    payload = tmp_path / "best.pt"
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("")
    train = ["train", "--config", str(yaml_file), "--quiet"]
    for argv in (["autoslim", "--checkpoint", str(payload), "--flops", "1M"],
                 ["export", "--checkpoint", str(payload), "--width", "0.25", "--out", str(tmp_path / "x")],
                 ["evaluate", "--checkpoint", str(payload)],
                 ["evaluate", "--experiment-dir", str(tmp_path), "--width", "0.25"],
                 ["calibrate", "--checkpoint", str(payload), "--width", "0.25"],
                 ["evaluate", "--child", str(tmp_path / "child.pt")],
                 train + ["--resume", str(payload), *tiny_args(tmp_path / "other", noise_data)],
                 train + tiny_args(run, noise_data)):           # the planted last.pt: automatic resume
        err = one_line_error(capsys, argv)
        assert "not loaded (loading it could run code)" in err, (argv, err)
        assert not marker.exists(), argv
    assert (run / "last.pt").exists()                 # the refused file is left where it was
