"""Smoke runs of the benchmark scripts (bench/): they run, print their tables and write their JSON."""
import json
import os
import subprocess
import sys

import pytest
from helpers import ROOT, write_noise_fashion

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def noise_data(tmp_path_factory):
    return write_noise_fashion(str(tmp_path_factory.mktemp("fm")), n_train=48, n_test=16, seed=0)


def run_script(*args, timeout=120):
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_bench_ops_quick_smoke(tmp_path):
    out = tmp_path / "bench_ops.json"
    proc = run_script("bench/bench_ops.py", "--quick", "--batch-size", "2", "--widths", "0.35",
                      "--threads", "1", "--out", str(out), timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "| width | MACs | supernet ms | child ms | ratio |" in proc.stdout
    data = json.loads(out.read_text())
    assert [r["width"] for r in data["results"]] == [0.35]
    for r in data["results"]:
        assert r["supernet_ms"] > 0 and r["child_ms"] > 0 and r["ratio"] > 0


def test_bench_train_quick(tmp_path, noise_data):
    out = tmp_path / "bench.json"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "bench_train.py"), "--quick",
                           "--override", f"data.root={noise_data}", "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["overhead"]["ratio"] > 0 and "| " in proc.stdout
    assert set(result["pipeline"]) == {"fixed", "switchable", "universal", "autoslim"}
    assert all(r["ratio"] > 0 for r in result["pipeline"].values()) and result["speedup"]["ratio"] > 0


def test_trace_coverage_table_smoke(tmp_path):
    out = tmp_path / "table.md"
    models = ["torchvision:resnet18", "torchvision:shufflenet_v2_x1_0"]
    proc = run_script("bench/trace_coverage.py", "--input-size", "32", "--models", *models, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    lines = out.read_text().splitlines()
    assert lines[0].startswith("| model | traced | slimmable groups | fixed groups |") and len(lines) == 4
    assert lines[2].startswith("| torchvision:resnet18 | yes | 12 | 2 | 0 of 21 |") and "yes (0e+00)" in lines[2]
    assert "channel reshape (shuffle / radix)" in lines[3]
