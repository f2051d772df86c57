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


# ---------------------------------------------------------------------------------------------
# a small supernet checkpoint for the commands (random weights: only the failures matter)
# ---------------------------------------------------------------------------------------------
ARCH = dict(num_classes=10, in_channels=1, input_size=16, max_width=0.5, min_width=0.25)


def data_cfg(root):
    return {"name": "fashion_mnist", "root": root, "heldout_size": 16, "heldout_seed": 0, "input_size": 16}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, noise_data):
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("exp")
    save_checkpoint(d / "best.pt", slimnet.build("resnet20", **ARCH), config={"data": data_cfg(noise_data)})
    return d / "best.pt"


# ---------------------------------------------------------------------------------------------
# 2. a search is keyed on the supernet's weights
# ---------------------------------------------------------------------------------------------
def test_search_state_of_other_weights_starts_afresh(tmp_path, noise_data, capsys):
    from slimnet.checkpoint import weights_fingerprint
    torch.manual_seed(0)
    net = slimnet.build("resnet20", **ARCH)
    path = tmp_path / "best.pt"
    save_checkpoint(path, net, config={"data": data_cfg(noise_data)})
    budget = int(slimnet.profile(net.space).macs * 0.9)
    argv = ["autoslim", "--checkpoint", str(path), "--flops", str(budget), "--batch-size", "16", "--no-plot"]
    state_file = tmp_path / "autoslim_state.json"
    assert main(argv) == 0
    first = json.loads(state_file.read_text())
    assert first["finished"] and first["settings"]["weights"] == weights_fingerprint(net)
    found = sorted(tmp_path.glob("autoslim_*M.json"))
    assert len(found) == 1
    capsys.readouterr()
    assert main(argv) == 0                              # same weights: resumes the finished search
    assert "resuming at step" in capsys.readouterr().out
    assert main(["calibrate", "--checkpoint", str(path), "--width", "0.25", "--images", "16"]) == 0
    capsys.readouterr()
    assert main(argv) == 0                              # calibrated statistics are not what the search used
    assert "resuming at step" in capsys.readouterr().out

    with torch.no_grad():                               # "train more": other weights in the same file
        next(net.parameters()).add_(0.5)
    save_checkpoint(path, net, config={"data": data_cfg(noise_data)})
    assert main(argv + ["--max-steps", "0"]) == 0
    out, err = capsys.readouterr()
    assert "resuming" not in out
    assert "searched on other weights" in err and "afresh" in err and found[0].name in err
    assert not found[0].exists()                        # the old supernet's result is gone, saying so
    assert main(argv) == 0
    new = json.loads(state_file.read_text())
    assert new["finished"] and new["settings"]["weights"] == weights_fingerprint(net) != first["settings"]["weights"]
    assert found[0].exists()

    # a state of the old format (no fingerprint) is not resumed either
    new["version"] = 1
    state_file.write_text(json.dumps(new))
    assert main(argv) == 0
    assert "another slimnet version" in capsys.readouterr().err
    # a truncated state names the file and --fresh
    state_file.write_text(state_file.read_text()[:40])
    err = one_line_error(capsys, argv)
    assert "autoslim_state.json is truncated or not a search state" in err and "--fresh" in err
    assert main(argv + ["--fresh"]) == 0


# ---------------------------------------------------------------------------------------------
# 3. divergence never reaches a checkpoint; metrics stay valid JSON
# ---------------------------------------------------------------------------------------------
def strict_json_lines(path):
    def refuse(name):
        raise ValueError(f"{name} is not JSON")
    return [json.loads(line, parse_constant=refuse) for line in open(path)]


def test_nonfinite_weights_never_reach_a_checkpoint(tmp_path, noise_data, monkeypatch):
    """A finite loss with an infinite gradient at step 3 (weights go non-finite in the optimizer
    step): the checkpoint due at step 4 is refused and the step-2 one is named as the last good one."""
    import slimnet.train.trainer as engine
    from slimnet.train import TrainingDiverged, train
    real = engine.train_step

    def poisoned(model, raw, configs, images, targets, cfg, scaler, autocast, step, *rest, **kw):
        losses = real(model, raw, configs, images, targets, cfg, scaler, autocast, step, *rest, **kw)
        if step == 3:
            next(raw.parameters()).grad.fill_(float("inf"))
        return losses

    monkeypatch.setattr(engine, "train_step", poisoned)
    cfg = load_config(None, tiny_args(tmp_path / "run", noise_data, "train.checkpoint_every=2"))
    with pytest.raises(TrainingDiverged, match=r"non-finite values in the model at step 4 .*last good checkpoint "
                                               r".*last\.pt \(step 2\) is intact"):
        train(cfg, quiet=True)
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt["step"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["model_state"].values() if v.is_floating_point())


def test_nonfinite_bn_statistics_after_eval_write_no_checkpoint(tmp_path, noise_data, monkeypatch):
    """Calibrated BN statistics that overflow (what optim.lr=1e9 does): metrics.jsonl records the
    epoch as valid JSON (null for the non-finite eval loss), no best.pt / last.pt is written."""
    import slimnet.train.evaluation as engine
    from slimnet.train import TrainingDiverged, train
    real = engine.calibrate_bn

    def overflowing(net, cfg, *a, **kw):
        out = real(net, cfg, *a, **kw)
        for name, buf in net.named_buffers():
            if f"stats_{cfg.key}_" in name:
                buf.fill_(float("inf"))
        return out

    monkeypatch.setattr(engine, "calibrate_bn", overflowing)
    run = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match="after epoch 1 .*stats_.*no checkpoint was written yet"):
        train(load_config(None, tiny_args(run, noise_data)), quiet=True)
    assert not (run / "last.pt").exists() and not (run / "best.pt").exists()
    (rec,) = strict_json_lines(run / "metrics.jsonl")
    assert rec["epoch"] == 1 and all(r["loss"] is None for r in rec["eval"].values())


# ---------------------------------------------------------------------------------------------
# 4. --fresh keeps the previous run until the new one has a checkpoint; killed writes are cleaned
# ---------------------------------------------------------------------------------------------
def test_fresh_run_replaces_previous_only_after_its_first_checkpoint(tmp_path, noise_data, capsys):
    import subprocess
    import sys

    from slimnet.train import REPLACED, TrainingDiverged, train
    from slimnet.train.resume import stage_previous_run as _stage_previous_run
    run = tmp_path / "run"
    train(load_config(None, tiny_args(run, noise_data)), quiet=True)
    (run / "autoslim_20M.json").write_text("{}")
    (run / "child").mkdir()
    for name in ("child.pt", "child.json"):
        (run / "child" / name).write_text("x")
    before = {n: (run / n).read_bytes() for n in ("last.pt", "best.pt", "metrics.jsonl", "autoslim_20M.json")}

    # a fresh run that fails before its first checkpoint: everything of the previous run is back
    with pytest.raises(TrainingDiverged, match="previous run's outputs are put back"):
        train(load_config(None, tiny_args(run, noise_data, "train.debug_nan_at_step=1")), fresh=True, quiet=True)
    assert {n: (run / n).read_bytes() for n in before} == before and not (run / REPLACED).exists()
    assert "restored the previous run's outputs" in capsys.readouterr().out

    # a fresh run killed before its first checkpoint (its outputs moved aside, nothing more), and
    # temporary files of killed writes: the next run in the folder puts back and cleans up
    _stage_previous_run(run, print)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    for name in (f"last.pt.tmp{pid}", f"autoslim_state.json.tmp{pid}"):
        (run / name).write_bytes(b"partial")
    (run / "metrics.jsonl").write_text('{"epoch": 1}\n')       # the killed run's partial output
    summary = train(load_config(None, tiny_args(run, noise_data)), quiet=True)
    out = capsys.readouterr().out
    assert "removed temporary files" in out and "restored the previous run's outputs" in out
    assert summary["step"] == 6 and "nothing to do" in out     # the previous run, resumed as it was
    assert {n: (run / n).read_bytes() for n in before} == before
    assert not [f for f in os.listdir(run) if ".tmp" in f]

    # a fresh run that writes its first checkpoint replaces the previous run, saying what went
    train(load_config(None, tiny_args(run, noise_data, "train.checkpoint_every=2", "optim.lr=0.01")),
          fresh=True, quiet=True)
    out = capsys.readouterr().out
    assert "replaced the previous run" in out and "autoslim_20M.json" in out and "child/child.pt" in out
    assert not (run / "autoslim_20M.json").exists() and not (run / REPLACED).exists()
    assert (run / "child" / "child.pt").exists()               # exported children are kept (noted)
    assert (run / "last.pt").read_bytes() != before["last.pt"]
    assert [r["epoch"] for r in strict_json_lines(run / "metrics.jsonl")] == [1]


# ---------------------------------------------------------------------------------------------
# 5. one line for every bad input
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv, expect", [
    (["evaluate", "--checkpoint", "x.pt", "--batch-size", "0"], "--batch-size must be a positive integer, got 0"),
    (["autoslim", "--checkpoint", "x.pt", "--flops", "1M", "--prescreen", "-1"], "--prescreen must be an integer >= 0"),
    (["autoslim", "--checkpoint", "x.pt", "--flops", "1M", "--search-images", "0"], "--search-images must be"),
    (["autoslim", "--checkpoint", "x.pt", "--flops", "1M", "--search-images", "-3"], "got -3"),
    (["autoslim", "--checkpoint", "x.pt", "--flops", "1M", "--max-steps", "-1"], "--max-steps must be"),
    (["autoslim", "--checkpoint", "x.pt", "--flops", "1M", "--latency-batch", "0"], "--latency-batch must be"),
    (["export", "--checkpoint", "x.pt", "--width", "0.5", "--out", "o", "--latency-batch", "0"], "--latency-batch"),
    (["export", "--checkpoint", "x.pt", "--width", "0.5", "--out", "o", "--calibrate-images", "0"],
     "--calibrate-images must be an integer >= 2"),
    (["evaluate", "--checkpoint", "x.pt", "--calibrate-images", "0"], "--calibrate-images"),
    (["evaluate", "--checkpoint", "x.pt", "--test-subset", "0"], "--test-subset must be a positive integer"),
    (["calibrate", "--checkpoint", "x.pt", "--width", "0.5", "--batch-size", "-2"], "--batch-size"),
    (["profile", "--model", "resnet20", "--width", "0.5", "--latency", "--batch-size", "0"], "--batch-size"),
    (["profile", "--model", "resnet20", "--width", "0.5", "--max-width", "0"], "--max-width must be a positive"),
    (["export", "--checkpoint", "x.pt", "--width", "0.5", "--out", "o", "--name", "../../x"], "--name must be a plain"),
    (["export", "--checkpoint", "x.pt", "--width", "0.5", "--out", "o", "--name", "a/b"], "--name must be a plain"),
])
def test_bad_counts_and_names_are_refused_first(argv, expect, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert expect in one_line_error(capsys, argv)
    assert os.listdir(tmp_path) == []                   # refused before anything is read or written


def test_bad_config_values_name_the_key(tmp_path, noise_data, capsys):
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("")
    err = one_line_error(capsys, ["train", "--config", str(yaml_file), "train.epochs=0"])
    assert "train.epochs: must be >= 1, got 0" in err
    err = one_line_error(capsys, ["train", "--config", str(tmp_path)])
    assert "is a folder; give an experiment YAML file" in err


def test_output_paths(ckpt, tmp_path, noise_data, capsys):
    afile = tmp_path / "afile"
    afile.write_text("keep")
    base = ["export", "--checkpoint", str(ckpt), "--width", "0.5", "--no-latency"]
    assert "--out " + str(afile) + " is a file, not a folder" in one_line_error(capsys, base + ["--out", str(afile)])
    err = one_line_error(capsys, ["autoslim", "--checkpoint", str(ckpt), "--flops", "1M", "--out", str(afile / "x")])
    assert f"is under {afile}, which is a file" in err
    err = one_line_error(capsys, ["evaluate", "--checkpoint", str(ckpt), "--json", str(tmp_path)])
    assert "--json " + str(tmp_path) + " is a folder; give a file path" in err
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("")
    err = one_line_error(capsys, ["train", "--config", str(yaml_file), *tiny_args(afile / "run", noise_data)])
    assert "experiment.output_dir" in err and "which is a file" in err
    assert afile.read_text() == "keep"
    # a folder that cannot be written (root ignores permission bits: make it immutable then)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    immutable = False
    try:
        if os.access(ro, os.W_OK):
            import subprocess
            immutable = subprocess.run(["chattr", "+i", str(ro)], capture_output=True).returncode == 0
        try:
            (ro / "probe").write_text("")
            pytest.skip("cannot make a read-only folder here")
        except OSError:
            pass
        err = one_line_error(capsys, base + ["--out", str(ro / "child")])
        assert "cannot be written" in err and "not writable" in err
    finally:
        if immutable:
            import subprocess
            subprocess.run(["chattr", "-i", str(ro)])
        ro.chmod(0o755)


def test_disk_full_is_one_line_and_keeps_the_file(ckpt, tmp_path, capsys, monkeypatch):
    import errno
    target = tmp_path / "cal.pt"
    target.write_bytes(b"previous")

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    err = one_line_error(capsys, ["calibrate", "--checkpoint", str(ckpt), "--width", "0.5", "--images", "16",
                                  "--out", str(target)])
    assert f"no space left on the device writing {target}" in err
    assert target.read_bytes() == b"previous" and os.listdir(tmp_path) == ["cal.pt"]


def test_folders_given_for_files_and_garbage_files(ckpt, tmp_path, capsys):
    base = ["evaluate", "--checkpoint", str(ckpt), "--test-subset", "4"]
    assert "is a folder; give a channel JSON file" in one_line_error(capsys, base + ["--channels", str(tmp_path)])
    err = one_line_error(capsys, ["evaluate", "--checkpoint", str(tmp_path)])
    assert "is a folder; give the slimnet supernet checkpoint" in err
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(bytes(range(256)) * 2)
    err = one_line_error(capsys, ["evaluate", "--child", str(garbage)])
    assert "could not be read as a slimnet child file" in err
    err = one_line_error(capsys, ["evaluate", "--child", str(ckpt)])
    assert "is not a slimnet child file" in err and "supernet checkpoint" in err


def test_channel_json_below_the_trained_minimum_is_refused(ckpt, tmp_path, capsys):
    net = slimnet.build("resnet20", **{**ARCH, "min_width": 0.125})
    small = tmp_path / "small.json"
    net.space.uniform(0.125).save(small)
    for argv in (["export", "--checkpoint", str(ckpt), "--channels", str(small), "--out", str(tmp_path / "o")],
                 ["evaluate", "--checkpoint", str(ckpt), "--channels", str(small)],
                 ["calibrate", "--checkpoint", str(ckpt), "--channels", str(small)]):
        err = one_line_error(capsys, argv)
        assert "is narrower than this resnet20 supernet was trained (min_width=0.25)" in err
    err = one_line_error(capsys, ["evaluate", "--checkpoint", str(ckpt), "--width", "0.125"])
    assert "narrower than this resnet20 supernet allows (min_width=0.25)" in err


def test_data_roots_images_and_channels(ckpt, tmp_path, noise_data, capsys, monkeypatch):
    import numpy as np
    from PIL import Image

    import slimnet.data as data_mod
    missing = tmp_path / "nowhere"
    err = one_line_error(capsys, ["evaluate", "--checkpoint", str(ckpt), "--data-root", str(missing)])
    assert f"data root {missing} does not exist" in err
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("")
    err = one_line_error(capsys, ["train", "--config", str(yaml_file), *tiny_args(tmp_path / "r", missing)])
    assert "does not exist" in err and not (tmp_path / "r").exists()
    # no root: the system's copy, and config.yaml records the folder actually read
    monkeypatch.setattr(data_mod, "FASHION_MNIST_SYSTEM_DIR", noise_data)
    args = [a for a in tiny_args(tmp_path / "sys", noise_data) if not a.startswith("data.root")]
    assert main(["train", "--config", str(yaml_file), "--quiet", *args]) == 0
    assert load_config(str(tmp_path / "sys" / "config.yaml")).data.root == os.path.realpath(noise_data)

    # an ImageFolder with a corrupt image, and 3-channel data for a 1-channel supernet
    folder = tmp_path / "folder"
    for split in ("train", "val"):
        for c in ("a", "b"):
            (folder / split / c).mkdir(parents=True)
            Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(folder / split / c / "0.png")
    bad = folder / "val" / "b" / "broken.png"
    bad.write_bytes(b"not a png")
    rgb = tmp_path / "rgb.pt"
    save_checkpoint(rgb, slimnet.build("resnet20", **{**ARCH, "in_channels": 3}))
    err = one_line_error(capsys, ["evaluate", "--checkpoint", str(rgb), "--width", "0.5", "--data", "imagefolder",
                                  "--data-root", str(folder), "--calibrate-images", "4"])
    assert f"cannot read image {bad}" in err and "remove or replace the file" in err
    err = one_line_error(capsys, ["evaluate", "--checkpoint", str(ckpt), "--data", "imagefolder",
                                  "--data-root", str(folder), "--heldout-size", "0"])
    assert "imagefolder has 3-channel images but this model takes 1-channel input" in err


def test_dataloader_worker_errors_become_one_line():
    """A DataLoader worker's error reaches the main process wrapped (multi-line, with the
    worker's traceback) by torch's ExceptionWrapper; the CLI prints the original message."""
    from torch._utils import ExceptionWrapper

    from slimnet.cli import error_line
    message = "imagefolder: cannot read image /x/y.png (truncated); remove or replace the file"
    try:
        raise ValueError(message)
    except ValueError:
        wrapped = ExceptionWrapper(where="in DataLoader worker process 0")   # what a worker sends back
    with pytest.raises(ValueError) as e:
        wrapped.reraise()
    assert "Original Traceback" in str(e.value) and len(str(e.value).splitlines()) > 3
    assert error_line(e.value) == message


def test_latency_budget_that_rounds_to_zero(ckpt, capsys):
    err = one_line_error(capsys, ["autoslim", "--checkpoint", str(ckpt), "--latency", "0.0001", "--device", "cpu"])
    assert "latency budget 0.0001 ms rounds to 0 microseconds" in err and "at least 0.001 ms" in err
