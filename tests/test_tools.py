"""The export / evaluate / autoslim tools, through slimnet.cli.main and one real subprocess."""
import json
import os
import random
import subprocess
import sys

import pytest
import torch
from helpers import sandwich_train

import slimnet
from slimnet.checkpoint import load_supernet, save_checkpoint
from slimnet.cli import main
from slimnet.data import build_data
from slimnet.export import load_child

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARCH = dict(num_classes=10, in_channels=1, input_size=16)   # Fashion-MNIST resized to 16x16: fast
DATA_CFG = {"name": "fashion_mnist", "root": None, "heldout_size": 120, "heldout_seed": 0, "input_size": 16}



def _train(net, steps=30, seed=0):
    b = build_data("fashion_mnist", heldout_size=120, heldout_seed=0, exclude_heldout=True, augment="none",
                   subset=512, input_size=16)
    x = torch.stack([b.train[i][0] for i in range(len(b.train))])
    return sandwich_train(net, x, b.train.targets, steps=steps, batch=64, seed=seed)


@pytest.fixture(scope="module")
def supernet_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("exp")
    net = _train(slimnet.build("resnet20", **ARCH, max_width=0.5))
    save_checkpoint(d / "best.pt", net, config={"data": DATA_CFG, "experiment": {"name": "t", "output_dir": str(d)}},
                    epoch=1)
    return d / "best.pt"


@pytest.fixture(scope="module")
def switchable_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("snet")
    net = _train(slimnet.build("resnet20", **ARCH, max_width=0.5, bn="switchable", switchable=[0.5, 0.25]), steps=3)
    save_checkpoint(d / "best.pt", net, config={"data": DATA_CFG})
    return d / "best.pt"


def test_autoslim_cli_writes_everything_and_resumes(supernet_ckpt, tmp_path, capsys):
    net, _ = load_supernet(supernet_ckpt)
    full = slimnet.profile(net.space).macs
    t1, t2 = int(full * 0.8), int(full * 0.65)
    out = tmp_path / "search"
    common = ["autoslim", "--checkpoint", str(supernet_ckpt), "--flops", str(t1), "--flops", f"{t2 / 1e6:.4f}M",
              "--batch-size", "64", "--quiet"]
    args = common + ["--out", str(out)]
    assert main(args + ["--max-steps", "1"]) == 0
    assert "run again to resume" in capsys.readouterr().out
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "autoslim_" in text and "not reached" not in text
    files = sorted(os.listdir(out))
    jsons = [f for f in files if f.startswith("autoslim_") and f.endswith(".json") and "state" not in f]
    assert len(jsons) == 2
    for f in jsons:
        cfg = net.space.load(out / f)                          # loadable by everything that takes a config
        assert slimnet.profile(net.space, cfg).macs <= max(t1, t2)
    for f in ("autoslim_trajectory.jsonl", "autoslim_trajectory.csv", "autoslim_trajectory.png", "autoslim_state.json"):
        assert f in files
    state = json.load(open(out / "autoslim_state.json"))
    assert state["finished"]
    fresh = tmp_path / "fresh"
    assert main(common + ["--out", str(fresh)]) == 0
    strip = lambda p: [{k: v for k, v in json.loads(line).items() if k != "elapsed_s"}  # noqa: E731
                       for line in open(p)]
    assert strip(out / "autoslim_trajectory.jsonl") == strip(fresh / "autoslim_trajectory.jsonl")


def test_autoslim_subprocess_default_output_folder(supernet_ckpt):
    net, _ = load_supernet(supernet_ckpt)
    budget = int(slimnet.profile(net.space).macs * 0.9)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "autoslim.py"), "--experiment-dir",
                        str(supernet_ckpt.parent), "--flops", str(budget), "--quiet", "--no-plot", "--fresh"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    from slimnet.search import Budget
    assert (supernet_ckpt.parent / f"{Budget('macs', budget).label}.json").exists()


def test_autoslim_bad_input(supernet_ckpt, switchable_ckpt, tmp_path, capsys):
    net, _ = load_supernet(supernet_ckpt)
    lo = slimnet.profile(net.space, net.space.min()).macs
    assert main(["autoslim", "--checkpoint", str(supernet_ckpt), "--flops", str(lo // 2)]) == 2
    err = capsys.readouterr().err
    assert "below the smallest config" in err and f"{lo:,}" in err
    assert main(["autoslim", "--checkpoint", str(switchable_ckpt), "--flops", "1M"]) == 2
    assert "universally slimmable" in capsys.readouterr().err
    assert main(["autoslim", "--checkpoint", str(supernet_ckpt)]) == 2
    assert "at least one budget" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["autoslim", "--checkpoint", str(supernet_ckpt), "--flops", "1.5X"])
    assert e.value.code == 2 and "cannot parse" in capsys.readouterr().err
    os.makedirs(tmp_path / "c", exist_ok=True)
    assert main(["export", "--checkpoint", str(supernet_ckpt), "--width", "0.25", "--out", str(tmp_path / "c"),
                 "--calibrate-images", "60", "--no-latency"]) == 0
    capsys.readouterr()
    assert main(["autoslim", "--checkpoint", str(tmp_path / "c" / "child.pt"), "--flops", "1M"]) == 2
    assert "not a slimnet supernet checkpoint" in capsys.readouterr().err
    above = slimnet.profile(net.space).macs * 2
    assert main(["autoslim", "--checkpoint", str(supernet_ckpt), "--flops", str(above), "--out",
                 str(tmp_path / "above"), "--quiet", "--no-plot"]) == 0
    captured = capsys.readouterr()
    assert "above the max config" in captured.err
    assert net.space.load(next((tmp_path / "above").glob("autoslim_*M.json"))) == net.space.max()


@pytest.mark.filterwarnings("ignore:`torch.jit")
def test_export_child_torchscript_onnx(supernet_ckpt, tmp_path, capsys):
    out = tmp_path / "child"
    rc = main(["export", "--checkpoint", str(supernet_ckpt), "--width", "0.4", "--out", str(out), "--torchscript",
               "--onnx", "--calibrate-images", "100", "--device", "cpu"])
    text = capsys.readouterr().out
    if rc == 2 and "pip install slimnet[onnx]" in text:
        pytest.skip("onnx / onnxruntime not installed")
    assert rc == 0
    assert "MACs" in text and "latency" in text and "child" in text
    child = load_child(out / "child.pt")
    cfg_json = json.load(open(out / "child.json"))
    net, _ = load_supernet(supernet_ckpt)
    assert cfg_json["channels"] == dict(net.space.uniform(0.4).channels)
    # the same calibration as the tool (same seeded images) reproduces the child exactly
    assert main(["calibrate", "--checkpoint", str(supernet_ckpt), "--width", "0.4", "--images", "100",
                 "--out", str(tmp_path / "cal.pt")]) == 0
    cal, _ = load_supernet(tmp_path / "cal.pt")
    cal.eval().set_width(0.4)
    x = torch.randn(5, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(child(x), cal(x), rtol=1e-5, atol=1e-5)
        ts = torch.jit.load(str(out / "child.ts"))
        torch.testing.assert_close(ts(x), child(x), rtol=0, atol=1e-5)
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(str(out / "child.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"images": x.numpy()})[0]
    assert abs(got - child(x).detach().numpy()).max() <= 1e-4


def test_export_channels_file_and_errors(supernet_ckpt, switchable_ckpt, tmp_path, capsys):
    net, _ = load_supernet(supernet_ckpt)
    cfg = net.space.random(random.Random(1))
    cfg.save(tmp_path / "c.json")
    assert main(["export", "--checkpoint", str(supernet_ckpt), "--channels", str(tmp_path / "c.json"),
                 "--out", str(tmp_path / "o"), "--calibrate-images", "50", "--no-latency"]) == 0
    assert load_child(tmp_path / "o" / "child.pt").child_config == cfg
    capsys.readouterr()
    # switchable: a width outside its list
    assert main(["export", "--checkpoint", str(switchable_ckpt), "--width", "0.4", "--out", str(tmp_path / "s")]) == 2
    assert "switchable" in capsys.readouterr().err
    # a switchable width needs no calibration (no data)
    assert main(["export", "--checkpoint", str(switchable_ckpt), "--width", "0.25", "--out", str(tmp_path / "s"),
                 "--no-latency"]) == 0
    capsys.readouterr()
    # an uncalibrated universal config with no data known
    bare = tmp_path / "bare.pt"
    save_checkpoint(bare, net)
    assert main(["export", "--checkpoint", str(bare), "--width", "0.4", "--out", str(tmp_path / "b")]) == 2
    assert "--data NAME" in capsys.readouterr().err


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
    shared = _train(slimnet.build("resnet20", **ARCH, max_width=0.5, bn="shared"), steps=10)
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


def test_autoslim_latency_budget_cli(supernet_ckpt, tmp_path, capsys):
    """--latency is measured on this device: 1 microsecond is below any config (an error naming
    the min config's measured latency), 10 s is above the max (a warning; the max config)."""
    assert main(["autoslim", "--checkpoint", str(supernet_ckpt), "--latency", "0.001", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "latency budget 0.001 ms is below the smallest config" in err and "measured on this device" in err
    out = tmp_path / "lat"
    assert main(["autoslim", "--checkpoint", str(supernet_ckpt), "--latency", "10000", "--out", str(out),
                 "--quiet", "--no-plot", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert "above the max config" in captured.err and "latency" in captured.out
    net, _ = load_supernet(supernet_ckpt)
    assert net.space.load(out / "autoslim_latency_10000ms.json") == net.space.max()
    row = json.loads(open(out / "autoslim_trajectory.jsonl").readline())
    assert row["latency_ms"] > 0


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
