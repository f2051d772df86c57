"""`slimnet evaluate`: widths, channel configs, children and fixed-child checkpoints; BN calibration
through the one calibration-image policy; the plot series."""
import json
import os
import random

import pytest
import torch
from helpers import ARCH, DATA_CFG, train_on_fashion_mnist

import slimnet
from slimnet.checkpoint import load_supernet, save_checkpoint
from slimnet.cli import main
from slimnet.data import build_data

pytestmark = pytest.mark.fashion_mnist


def test_evaluate_widths_channels_child(supernet_ckpt, tmp_path, capsys):
    net, _ = load_supernet(supernet_ckpt)
    cfg = net.space.random(random.Random(2))
    cfg.save(tmp_path / "c.json")
    j, png = tmp_path / "r.json", tmp_path / "r.png"
    assert main(["evaluate", "--checkpoint", str(supernet_ckpt), "--widths", "0.25:0.5:0.125", "--width", "0.4",
                 "--channels", str(tmp_path / "c.json"), "--test-subset", "150", "--calibrate-images", "100",
                 "--json", str(j), "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "top-1" in out and "150 test images" in out
    rows = json.load(open(j))["results"]
    assert [r["name"] for r in rows] == ["width 0.4", "width 0.25", "width 0.375", "width 0.5", "c.json"]
    assert all(r["images"] == 150 and 0 <= r["top1"] <= r["top5"] <= 100 for r in rows)
    assert rows[3]["top1"] > 30                                  # trained: far above 10% chance
    assert os.path.getsize(png) > 1000
    assert main(["export", "--checkpoint", str(supernet_ckpt), "--width", "0.5", "--out", str(tmp_path / "e"),
                 "--calibrate-images", "100", "--no-latency"]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--child", str(tmp_path / "e" / "child.pt"), "--data", "fashion_mnist",
                 "--test-subset", "150", "--json", str(j)]) == 0
    child_row = json.load(open(j))["results"][0]
    assert child_row["macs"] == rows[3]["macs"]
    assert main(["evaluate", "--checkpoint", str(supernet_ckpt), "--widths", "1:0.5:0.1"]) == 2
    assert "STOP >= START" in capsys.readouterr().err


def test_checkpoint_from_config_or_experiment_dir(supernet_ckpt, tmp_path, capsys):
    yaml_path = tmp_path / "x.yaml"
    yaml_path.write_text(f"experiment:\n  name: t\n  output_dir: {supernet_ckpt.parent}\n")
    out = tmp_path / "cal.pt"
    assert main(["calibrate", "--config", str(yaml_path), "--width", "0.5", "--images", "50", "--out", str(out)]) == 0
    assert out.exists()
    assert main(["calibrate", "--experiment-dir", str(tmp_path / "nowhere"), "--width", "0.5"]) == 2
    assert "nowhere/best.pt does not exist" in capsys.readouterr().err
    assert main(["calibrate", "--width", "0.5"]) == 2
    assert "--checkpoint PATH" in capsys.readouterr().err


def test_evaluate_recalibrate_shared_bn_and_fixed_child(switchable_ckpt, tmp_path, capsys):
    """--recalibrate repairs a shared-BN supernet (its statistics then equal calibrate_bn's on the
    same images); a fixed-child checkpoint is evaluated as it is."""
    torch.manual_seed(0)
    shared = train_on_fashion_mnist(slimnet.build("resnet20", **ARCH, max_width=0.5, bn="shared"), steps=10)
    save_checkpoint(tmp_path / "shared.pt", shared, config={"data": DATA_CFG})
    plain, cal = tmp_path / "plain.json", tmp_path / "cal.json"
    common = ["evaluate", "--checkpoint", str(tmp_path / "shared.pt"), "--width", "0.25", "--test-subset", "100"]
    assert main(common + ["--json", str(plain)]) == 0
    assert main(common + ["--json", str(cal), "--recalibrate", "--calibrate-images", "64", "--calibrate-seed", "3"]) == 0
    capsys.readouterr()
    (row_plain,), (row_cal,) = json.load(open(plain))["results"], json.load(open(cal))["results"]
    assert row_plain["loss"] != row_cal["loss"]
    # the same statistics by hand: calibrate_bn on the same 64 calibration images (the one
    # calibration policy, seed 3), as one batch
    from slimnet.calibrate import calibrate_bn
    from slimnet.commands.common import preload
    from slimnet.loaders import calibration_batches
    from slimnet.metrics import evaluate
    net, _ = load_supernet(tmp_path / "shared.pt")
    b = build_data("fashion_mnist", heldout_size=120, heldout_seed=0, input_size=16, test_subset=100)
    images = torch.cat([x for x, _ in calibration_batches(b, 64, 3, 7, "cpu", in_memory=True)])
    assert images.shape[0] == 64
    calibrate_bn(net, net.space.uniform(0.25), [images], num_images=64)
    x, y = preload(b.test)
    assert evaluate(net, [(x, y)])["loss"] == pytest.approx(row_cal["loss"], rel=1e-5)
    assert main(["evaluate", "--checkpoint", str(switchable_ckpt), "--width", "0.25", "--recalibrate"]) == 2
    assert "switchable-BN supernet keeps private running statistics" in capsys.readouterr().err

    child = slimnet.build("resnet20", **ARCH, max_width=0.5, channels=net.space.uniform(0.25))
    save_checkpoint(tmp_path / "fixed" / "last.pt", child, config={"data": DATA_CFG})
    assert main(["evaluate", "--checkpoint", str(tmp_path / "fixed" / "last.pt"), "--test-subset", "100",
                 "--json", str(plain)]) == 0
    (row,) = json.load(open(plain))["results"]
    assert row["name"] == "fixed" and row["macs"] == row_cal["macs"] and row["images"] == 100
    assert main(["evaluate", "--checkpoint", str(tmp_path / "fixed" / "last.pt"), "--width", "0.25"]) == 2
    assert "holds a fixed child" in capsys.readouterr().err


def test_evaluate_plot_keeps_uniform_widths_and_configs_apart():
    from slimnet.commands.evaluate import accuracy_series
    rows = [{"name": "width 1", "macs": 30, "top1": 90.0}, {"name": "autoslim_15M.json", "macs": 15, "top1": 88.0},
            {"name": "width 0.35", "macs": 5, "top1": 80.0}, {"name": "autoslim_25M.json", "macs": 25, "top1": 89.5}]
    uniform, configs = accuracy_series(rows)
    assert uniform["style"] == "line" and uniform["macs"] == [5, 30] and uniform["annotations"] == ["0.35", "1"]
    assert configs["style"] == "points" and configs["acc"] == [88.0, 89.5] and configs["annotations"] == ["15M", "25M"]
    assert [s["label"] for s in accuracy_series(rows[:1])] == ["uniform widths"]


def test_evaluate_calibrates_on_the_images_training_calibrated_on(tmp_path, capsys):
    """One calibration-image policy: `slimnet evaluate --recalibrate` of a trained universal
    supernet reproduces, exactly, the top-1 and loss its training logged for each width (the same
    calibration images with the same augmentation draws, the same test images)."""
    from helpers import write_noise_fashion

    from slimnet.config import load_config
    from slimnet.train import train

    root = write_noise_fashion(str(tmp_path / "fm"), n_train=64, n_test=40, seed=5)
    exp = load_config(None, [f"experiment.output_dir={tmp_path / 'run'}", "experiment.seed=11", "model.name=resnet20",
                             "model.max_width=0.5", "model.min_width=0.25", f"data.root={root}", "data.input_size=16",
                             "data.heldout_size=24", "data.batch_size=16", "data.eval_batch_size=10",
                             "train.mode=universal", "train.epochs=1", "eval.widths=[0.5,0.25]",
                             "eval.calib_images=20"])
    train(exp, quiet=True)
    with open(tmp_path / "run" / "metrics.jsonl") as f:
        logged = json.loads(f.readlines()[-1])["eval"]
    out = tmp_path / "eval.json"
    assert main(["evaluate", "--checkpoint", str(tmp_path / "run" / "last.pt"), "--width", "0.5", "--width", "0.25",
                 "--recalibrate", "--calibrate-images", "20", "--batch-size", "10", "--json", str(out)]) == 0
    capsys.readouterr()
    rows = {r["name"]: r for r in json.load(open(out))["results"]}
    for w in ("0.5", "0.25"):
        assert rows[f"width {float(w):g}"]["top1"] == logged[w]["top1"]
        assert rows[f"width {float(w):g}"]["loss"] == pytest.approx(logged[w]["loss"], rel=1e-6)
    # another seed draws other calibration images: other statistics
    assert main(["evaluate", "--checkpoint", str(tmp_path / "run" / "last.pt"), "--width", "0.25", "--recalibrate",
                 "--calibrate-images", "20", "--calibrate-seed", "12", "--batch-size", "10", "--json", str(out)]) == 0
    assert json.load(open(out))["results"][0]["loss"] != pytest.approx(logged["0.25"]["loss"], rel=1e-6)


def test_evaluate_and_search_run_in_the_training_memory_format(supernet_ckpt, tmp_path, monkeypatch, capsys):
    """A supernet trained with train.channels_last is evaluated and searched in channels_last (its
    weights and activations), with the same results as in contiguous format."""
    import slimnet.commands.evaluate as evaluate_command
    from slimnet.search import GreedySearch

    net, _ = load_supernet(supernet_ckpt)
    cl = tmp_path / "cl" / "best.pt"
    save_checkpoint(cl, net, config={"data": DATA_CFG, "train": {"channels_last": True}})

    seen = []

    def conv_weights_channels_last(model):
        convs = [m.weight for m in model.modules() if getattr(m, "weight", None) is not None and m.weight.dim() == 4
                 and m.weight.shape[-1] > 1 and m.weight.shape[1] > 1]
        return all(w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous() for w in convs)

    real_evaluate = evaluate_command.evaluate
    monkeypatch.setattr(evaluate_command, "evaluate",
                        lambda model, *a, **k: seen.append(conv_weights_channels_last(model)) or real_evaluate(model, *a, **k))
    rows = {}
    for name, path in (("contiguous", supernet_ckpt), ("channels_last", cl)):
        j = tmp_path / f"{name}.json"
        assert main(["evaluate", "--checkpoint", str(path), "--width", "0.5", "--width", "0.25", "--test-subset", "100",
                     "--calibrate-images", "100", "--json", str(j)]) == 0
        rows[name] = json.load(open(j))["results"]
    assert seen == [False, False, True, True]
    for a, b in zip(rows["contiguous"], rows["channels_last"]):
        assert a["top1"] == b["top1"] and a["loss"] == pytest.approx(b["loss"], rel=1e-4)   # summation order only

    searched = []
    real_init = GreedySearch.__init__

    def spy(self, net, *a, **k):
        searched.append(conv_weights_channels_last(net))
        real_init(self, net, *a, **k)
    monkeypatch.setattr(GreedySearch, "__init__", spy)
    assert main(["autoslim", "--checkpoint", str(cl), "--macs", "2.3M", "--out", str(tmp_path / "s"), "--no-plot",
                 "--quiet", "--search-images", "64", "--prescreen", "0"]) == 0
    assert searched == [True]
