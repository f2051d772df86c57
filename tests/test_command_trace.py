"""`slimnet trace`: the report table, its JSON (stdout or a file), module:function sources, and
one-line errors for unknown, untraceable or badly requested models; `python tools/trace.py`."""
import json
import os
import subprocess
import sys

import pytest

from slimnet.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_table_of_a_torchvision_model(capsys):
    assert main(["trace", "--model", "torchvision:mobilenet_v2", "--input-size", "32", "--num-classes", "10"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("MobileNetV2 traced at 32x32: 25 slimmable channel groups, 2 fixed")
    assert "features.18.0" in out and "at 'output': the model's output" in out


def test_json_to_stdout(capsys):
    assert main(["trace", "--model", "torchvision:resnet18", "--input-size", "32", "--min-width", "0.5",
                 "--fixed", "layer1.0.conv1", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["source"] == "torchvision:resnet18" and data["model"] == "ResNet"
    assert data["input_size"] == [32, 32] and data["min_width"] == 0.5
    assert len(data["slimmable"]) == 11 and data["macs"]["min"] < data["macs"]["max"]
    pinned = next(g for g in data["fixed"] if g["name"] == "layer1.0.conv1")
    assert pinned["fixed"] == [{"node": "fixed=", "reason": "pinned by the user (fixed=['layer1.0.conv1'])"}]
    assert data["fixed"][-1]["channels"] == 1000          # the default head


def test_json_file_from_a_module_function(tmp_path, capsys):
    path = tmp_path / "report.json"
    assert main(["trace", "--model", "trace_models:tiny_cnn", "--input-size", "8", "--in-channels", "1",
                 "--num-classes", "4", "--json", str(path)]) == 0
    assert "wrote the trace report of trace_models:tiny_cnn" in capsys.readouterr().out
    data = json.loads(path.read_text())
    assert data["model"] == "TinyCNN" and [g["name"] for g in data["slimmable"]] == ["stem.0", "conv1"]
    assert [(g["name"], g["channels"]) for g in data["fixed"]] == [("input", 1), ("fc", 4)]
    assert data["fixed_layers"] == []


@pytest.mark.parametrize("args, message", [
    (["--model", "torchvision:resnet19"], "trace: error: torchvision has no classification model "
                                          "'resnet19'; did you mean resnet18"),
    (["--model", "resnet18"], "trace: error: 'resnet18' is not 'torchvision:NAME', 'timm:NAME' or "
                              "'package.module:function'"),
    (["--model", "trace_models:tiny_cn"], "trace: error: module 'trace_models' has no 'tiny_cn'; did you mean tiny_cnn?"),
    (["--model", "trace_models:tiny_cnn", "--min-width", "0"], "trace: error: --min-width must be in (0, 1], got 0.0"),
    (["--model", "trace_models:tiny_cnn", "--input-size", "0"], "trace: error: --input-size must be a positive"),
    (["--model", "trace_models:tiny_cnn", "--fixed", "conv3"], "trace: error: fixed: 'conv3' is neither a traced "
                                                              "layer nor a channel group (did you mean 'conv2', 'conv1'?)"),
])
def test_errors_are_one_line(args, message, capsys):
    assert main(["trace", "--input-size", "8", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1


def test_untraceable_model_says_what_to_try(capsys):
    assert main(["trace", "--model", "trace_models:gated_cnn", "--input-size", "8"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("trace: error: torch.fx cannot trace GatedCNN") and err.count("\n") == 1
    assert "leaf_modules=['gate']" in err
    assert main(["trace", "--model", "trace_models:gated_cnn", "--input-size", "8", "--leaf-modules", "gate"]) == 0
    assert "module Gate ('gate') is not known to the tracer" in capsys.readouterr().out


def test_tools_wrapper_runs_from_the_repo(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.path.join(ROOT, "tests")}
    proc = subprocess.run([sys.executable, "tools/trace.py", "--model", "trace_models:tiny_cnn", "--input-size", "8"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("TinyCNN traced at 8x8: 2 slimmable channel groups, 2 fixed")
