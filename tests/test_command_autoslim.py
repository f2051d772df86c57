"""`slimnet autoslim`: the search command through slimnet.cli.main and one real subprocess."""
import json
import os
import subprocess
import sys

import pytest
from helpers import ROOT

import slimnet
from slimnet.checkpoint import load_supernet
from slimnet.cli import main

pytestmark = pytest.mark.fashion_mnist


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
