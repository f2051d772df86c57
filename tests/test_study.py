"""bench/study_fashion_mnist.py end to end on a tiny noise dataset: jobs with dependencies,
raw JSON, resume (finished jobs are skipped) and the report."""
import json
import os
import subprocess
import sys

import pytest
from helpers import write_noise_fashion

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_study_parts_dependencies_resume_and_report(tmp_path):
    data = write_noise_fashion(str(tmp_path / "data"), n_train=200, n_test=60)
    results, md, png = tmp_path / "results", tmp_path / "study.md", tmp_path / "study.png"
    cmd = [sys.executable, os.path.join(ROOT, "bench", "study_fashion_mnist.py"), "--part", "shared_bn", "calibration",
           "--jobs", "2", "--results", str(results), "--runs", str(tmp_path / "runs"), "--report-md", str(md),
           "--report-png", str(png), "--calib-counts", "50", "100", "--calib-draws", "2",
           "--override", f"data.root={data}", "--override", "data.subset=96", "--override", "train.epochs=1",
           "--override", "data.batch_size=32"]
    env = dict(os.environ, PYTHONPATH=ROOT)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    # calibration pulled in the US-Net it calibrates; nothing else ran
    assert sorted(os.listdir(results)) == ["calibration_s0.json", "snet_shared_bn_s0.json", "usnet_s0.json"]
    shared = json.load(open(results / "snet_shared_bn_s0.json"))
    names = ["width 1", "width 0.75", "width 0.5", "width 0.35"]
    assert [row["name"] for row in shared["eval"]] == names == [row["name"] for row in shared["eval_calibrated"]]
    assert all(row["images"] == 60 for row in shared["eval"])
    assert shared["train"]["epochs"] == 1 and shared["commands"][0]["command"].startswith("python -m slimnet.cli train")
    us = json.load(open(results / "usnet_s0.json"))
    assert len(us["eval"]) == 14                                   # 0.35 ... 1.0 in steps of 0.05
    cal = json.load(open(results / "calibration_s0.json"))
    assert [(row["images"], row["draw"]) for row in cal["rows"]] == [(50, 0), (50, 1), (100, 0), (100, 1)]
    report = md.read_text()
    assert "shared BN + calibration" in report and "| calibration images |" in report and "US-Net curve" in report
    assert png.stat().st_size > 1000
    # a rerun finds every job done and trains nothing
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("done earlier") == 3 and "started" not in r.stdout


def test_interrupted_jobs_resume_before_new_ones(tmp_path, capsys):
    """A rerun finishes what an earlier session started before it starts anything new."""
    import argparse
    import importlib.util
    spec = importlib.util.spec_from_file_location("study", os.path.join(ROOT, "bench", "study_fashion_mnist.py"))
    study_mod = importlib.util.module_from_spec(spec)
    sys.modules["study"] = study_mod         # dataclasses look their module up there
    spec.loader.exec_module(study_mod)
    args = argparse.Namespace(results=str(tmp_path / "results"), runs=str(tmp_path / "runs"), jobs=1, threads=1,
                              override=[])
    study = study_mod.Study(args)
    noop = [sys.executable, "-c", "pass"]
    jobs = [study_mod.Job(name, "fixed", [("train", noop)], lambda walls: {"method": "x"}) for name in "abc"]
    os.makedirs(study.run_dir("c"))
    open(os.path.join(study.run_dir("c"), "study.log"), "w").close()    # "c" was interrupted
    assert study.run(jobs) == 0
    started = [line.split()[1].rstrip(":") for line in capsys.readouterr().out.splitlines() if "started" in line]
    assert started == ["c", "a", "b"]
    assert sorted(os.listdir(args.results)) == ["a.json", "b.json", "c.json"]
