"""`slimnet profile`, in process and as `python tools/profile.py`."""
import json
import os
import subprocess
import sys

import pytest
import torch

import slimnet
from slimnet.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_script(*args, timeout=120):
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_profile_json_mobilenet_v2_half(capsys):
    assert main(["profile", "--model", "mobilenet_v2", "--width", "0.5", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["macs"] == 97131840 and out["params"] == 1968680
    assert out["model"] == "mobilenet_v2" and out["input_size"] == 224
    assert out["channels"]["last"] == 1280 and out["channels"]["stem"] == 16


def test_profile_text_output(capsys):
    assert main(["profile", "--model", "resnet50", "--width", "1.0"]) == 0
    out = capsys.readouterr().out
    assert "resnet50 at width 1.0, 224x224" in out and "4.1G MACs (4,089,184,256)" in out


def test_profile_channels_file_uses_its_architecture(tmp_path, capsys):
    with torch.device("meta"):
        net = slimnet.build("resnet20", num_classes=10, input_size=32)
    cfg = net.space.uniform(0.5).replace(stem=8)
    path = tmp_path / "cfg.json"
    cfg.save(path)
    assert main(["profile", "--model", "resnet20", "--channels", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["input_size"] == 32
    assert out["macs"] == slimnet.profile(net.space, cfg).macs
    assert out["channels"] == dict(cfg.channels)


def test_profile_latency_smoke(capsys):
    assert main(["profile", "--model", "resnet20", "--width", "0.25", "--input-size", "32",
                 "--num-classes", "10", "--latency", "--device", "cpu", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["latency_ms"] > 0 and out["device"] == "cpu"


def _error(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_profile_errors_are_one_line_exit_2(tmp_path, capsys):
    err = _error(capsys, ["profile", "--model", "mobilenet_v9", "--width", "0.5"])
    assert "unknown model 'mobilenet_v9'" in err and "mobilenet_v2" in err
    err = _error(capsys, ["profile", "--model", "mobilenet_v2", "--width", "-1"])
    assert "--width must be a positive number" in err
    err = _error(capsys, ["profile", "--model", "mobilenet_v2", "--width", "0.5", "--input-size", "0"])
    assert "input_size must be a positive integer" in err
    err = _error(capsys, ["profile", "--model", "mobilenet_v2", "--channels", str(tmp_path / "missing.json")])
    assert "missing.json" in err
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    err = _error(capsys, ["profile", "--model", "mobilenet_v2", "--channels", str(bad)])
    assert "bad.json: not valid JSON" in err
    bad.write_text("[1, 2]")
    err = _error(capsys, ["profile", "--model", "mobilenet_v2", "--channels", str(bad)])
    assert "'channels' mapping" in err
    with torch.device("meta"):
        v1 = slimnet.build("mobilenet_v1")
    other = tmp_path / "v1.json"
    v1.space.max().save(other)
    err = _error(capsys, ["profile", "--model", "mobilenet_v2", "--channels", str(other)])
    assert "made for model 'mobilenet_v1', not 'mobilenet_v2'" in err


def test_profile_argparse_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["profile", "--model", "mobilenet_v2"])       # neither --width nor --channels
    assert e.value.code == 2
    assert "--width" in capsys.readouterr().err




def test_tools_profile_subprocess():
    proc = run_script("tools/profile.py", "--model", "mobilenet_v2", "--width", "0.35", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert abs(out["macs"] - 59.3e6) <= 0.05e6
