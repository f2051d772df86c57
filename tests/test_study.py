"""bench/study_fashion_mnist.py end to end on a tiny noise dataset: jobs with dependencies,
raw JSON, resume (finished jobs are skipped) and the report."""
import json
import os
import shutil
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
    assert len(shared["train"]["epoch_s"]) == 1 and 0 < shared["train"]["epoch_s"][0] <= shared["commands"][0]["wall_s"]
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


def _study(tmp_path, **kw):
    import argparse
    import importlib.util
    spec = importlib.util.spec_from_file_location("study", os.path.join(ROOT, "bench", "study_fashion_mnist.py"))
    study_mod = importlib.util.module_from_spec(spec)
    sys.modules["study"] = study_mod         # dataclasses look their module up there
    spec.loader.exec_module(study_mod)
    kw = {"headroom_width": 0.35, "headroom_configs": 6, **kw}
    args = argparse.Namespace(results=str(tmp_path / "results"), runs=str(tmp_path / "runs"), jobs=1, threads=1,
                              override=[], long_epochs=60, **kw)
    return study_mod, study_mod.Study(args)


def test_one_autoslim_search_whose_configs_every_seed_retrains(tmp_path):
    _, study = _study(tmp_path, search_images=2500, prescreen=500, leaders=2, calib_counts=[50], calib_draws=1)
    jobs = {j.name: j for j in study.jobs([0, 1]) if j.part == "autoslim"}
    retrains = [f"autoslim_retrain_{w}_s{s}" for s in (0, 1) for w in ("w100", "w075", "w050", "w035")]
    assert sorted(jobs) == sorted(["autoslim_supernet_s0", "autoslim_search_s0", *retrains])
    assert jobs["autoslim_search_s0"].deps == ["autoslim_supernet_s0"]
    for name in retrains:
        assert jobs[name].deps == ["autoslim_search_s0"]
        train_argv = jobs[name].steps[0][1]
        assert f"experiment.seed={name[-1]}" in train_argv
        channels = next(a for a in train_argv if a.startswith("model.channels="))
        assert channels.startswith(f"model.channels={os.path.join(str(tmp_path), 'results', 'autoslim_search_s0')}")
    assert list(jobs)[0] == "autoslim_supernet_s0"            # the longest chain is queued first


def test_interrupted_jobs_resume_before_new_ones(tmp_path, capsys):
    """A rerun finishes what an earlier session started before it starts anything new."""
    study_mod, study = _study(tmp_path)
    args = study.args
    noop = [sys.executable, "-c", "pass"]
    jobs = [study_mod.Job(name, "fixed", [("train", noop)], lambda walls: {"method": "x"}) for name in "abc"]
    os.makedirs(study.run_dir("c"))
    open(os.path.join(study.run_dir("c"), "study.log"), "w").close()    # "c" was interrupted
    assert study.run(jobs) == 0
    started = [line.split()[1].rstrip(":") for line in capsys.readouterr().out.splitlines() if "started" in line]
    assert started == ["c", "a", "b"]
    assert sorted(os.listdir(args.results)) == ["a.json", "b.json", "c.json"]


def test_report_compares_the_long_run_with_the_same_model_and_seed(tmp_path):
    """The convergence part's claim: the individual model trained twice as long, against the study's
    run of the same width and seed (not the mean, not another width)."""
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    import study_report

    def record(job, method, width, seed, top1, epochs):
        curve = [top1 - 1.0] * (epochs - 1) + [top1]
        return {"job": job, "method": method, "width": width, "seed": seed, "epochs": epochs,
                "eval": [{"name": job, "top1": top1, "macs": 1}],
                "train": {"epochs": epochs, "top1_per_epoch": {str(width): curve}}}
    results = tmp_path / "r"
    results.mkdir()
    for rec in (record("fixed_w100_s0", "fixed", 1.0, 0, 93.0, 30), record("fixed_w100_s1", "fixed", 1.0, 1, 92.0, 30),
                record("fixed_w050_s0", "fixed", 0.5, 0, 91.0, 30),
                record("fixed_w100_e60_s0", "fixed_long", 1.0, 0, 93.5, 60)):
        (results / f"{rec['job']}.json").write_text(json.dumps(rec))
    rows = {c: (m, v) for c, m, v in study_report.claims(study_report.collect(str(results)))}
    assert rows["individual 1x converged at 30 epochs: 60 epochs gain < 0.3 pt (seed 0)"] == \
        ("30 epochs: 93.00, 60: 93.50 (+0.50)", "no")
    # the long run stays out of the individual models' statistics and their convergence row
    assert rows["individual models converged (last 20% of epochs gain < 0.3 pt, mean of seeds)"][0] == "1.0: +1.00, 0.5: +1.00"


def test_search_keeps_its_configs_with_the_results(tmp_path):
    """The finished search copies its channel JSONs (and trajectory) next to the result records, which
    are committed, and the retrains read them there: they need nothing from the supernet's folder."""
    _, study = _study(tmp_path, search_images=64, prescreen=0, leaders=2, calib_counts=[50], calib_draws=1)
    jobs = {j.name: j for j in study.jobs([0]) if j.part == "autoslim"}
    search_dir = tmp_path / "runs" / "autoslim_supernet_s0" / "search"
    search_dir.mkdir(parents=True)
    labels = [os.path.basename(a) for a in jobs["autoslim_search_s0"].steps[1][1] if a.endswith(".json")
              and "eval" not in a]
    assert len(labels) == 4
    for label in labels:
        (search_dir / label).write_text(json.dumps({"label": label}))
    (search_dir / "autoslim_trajectory.jsonl").write_text(json.dumps({"iteration": 1, "candidates": 3, "elapsed_s": 2.0}) + "\n")
    (search_dir / "eval_in_supernet.json").write_text(json.dumps({"results": []}))
    record = jobs["autoslim_search_s0"].collect([])
    found = tmp_path / "results" / "autoslim_search_s0"
    assert sorted(os.listdir(found)) == sorted(labels + ["autoslim_trajectory.jsonl"])
    assert all(json.loads((found / label).read_text()) == {"label": label} for label in labels)
    assert sorted(os.path.basename(f) for f in record["files"].values()) == sorted(labels)
    shutil.rmtree(tmp_path / "runs")                           # the supernet's folder is gone
    for name, job in jobs.items():
        if name.startswith("autoslim_retrain_"):
            channels = next(a for a in job.steps[0][1] if a.startswith("model.channels="))
            assert os.path.exists(channels.split("=", 1)[1])


def test_report_times_a_resumed_job_by_its_epochs():
    """A job resumed across sessions ran its training command once per session; the record's command
    wall is the last session's. The report sums the epochs' times instead, and flags the records that
    predate them."""
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    import study_report

    resumed = {"job": "snet_s1", "train": {"epoch_s": [100.0, 120.0, 80.0]},
               "commands": [{"step": "train", "wall_s": 90.0}, {"step": "evaluate", "wall_s": 12.0}]}
    old = {"job": "snet_s0", "train": {"epochs": 3},
           "commands": [{"step": "train", "wall_s": 193.2}, {"step": "evaluate", "wall_s": 22.7}]}
    rows = study_report.job_walls({"snet": [old, resumed]})
    assert rows == [("snet_s0", "train", 193.2, True), ("snet_s0", "evaluate", 22.7, False),
                    ("snet_s1", "train", 300.0, False), ("snet_s1", "evaluate", 12.0, False)]


def test_report_autoslim_section(tmp_path):
    """The AutoSlim part of the report from records shaped as the study writes them: the supernet's
    uniform widths next to US-Net and the individual models, each searched config in the supernet and
    retrained (mean over seeds) against the uniform model of its budget, and the claim."""
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    import study_report

    macs = {1.5: 12.6e6, 1.0: 5.6e6, 0.75: 3.78e6, 0.5: 1.75e6, 0.35: 1.04e6, 0.2: 0.5e6}

    def rows(top1):
        return [{"name": f"width {w:g}", "top1": t, "macs": macs[w], "images": 100} for w, t in top1.items()]
    recs = [{"job": "autoslim_supernet_s0", "method": "autoslim_supernet", "seed": 0,
             "eval": rows({1.5: 92.0, 1.0: 91.5, 0.35: 90.0, 0.2: 88.0})},
            {"job": "usnet_s0", "method": "usnet", "seed": 0, "eval": rows({1.0: 93.0, 0.35: 92.0})},
            {"job": "autoslim_search_s0", "method": "autoslim_search", "seed": 0, "iterations": 30, "removals": 40,
             "candidates": 500, "search_s": 1800.0, "budgets": {"1.0": macs[1.0], "0.35": macs[0.35]},
             "files": {"1.0": "r/autoslim_search_s0/flops_5.6M.json", "0.35": "r/autoslim_search_s0/flops_1.04M.json"},
             "eval_in_supernet": [{"name": "flops_5.6M.json", "top1": 91.8, "macs": 5.5e6, "params": 2.1e6},
                                  {"name": "flops_1.04M.json", "top1": 90.4, "macs": 1.03e6, "params": 0.5e6}]}]
    results = tmp_path / "r"
    results.mkdir()
    for rec in recs:
        (results / f"{rec['job']}.json").write_text(json.dumps(rec))
    # the search done, nothing retrained yet: its configs in the supernet, with their own cost
    assert "| 1 (5.60M) | 5.50M | 2.10M | 91.80 | 91.50 | - | - | - |" in study_report.tables(study_report.collect(str(results)))
    for seed, (ind, found) in enumerate([((93.0, 91.8), (93.4, 92.0)), ((93.2, 91.6), (93.2, 91.9))]):
        for w, t in zip((1.0, 0.35), ind):
            recs.append({"job": f"fixed_w{w}_s{seed}", "method": "fixed", "width": w, "seed": seed,
                         "eval": [{"name": f"fixed {w}", "top1": t, "macs": macs[w], "images": 100}]})
        for w, t in zip((1.0, 0.35), found):
            recs.append({"job": f"autoslim_retrain_{w}_s{seed}", "method": "autoslim", "budget_width": w,
                         "budget_macs": macs[w], "seed": seed,
                         "eval": [{"name": "retrained", "top1": t, "macs": macs[w] * 0.98, "params": 2e6, "images": 100}]})
    for rec in recs:
        (results / f"{rec['job']}.json").write_text(json.dumps(rec))
    d = study_report.collect(str(results))
    report = study_report.tables(d)
    assert "| 1.5 | 12.60M | 92.00 | - | - |" in report             # the supernet's widths, widest first
    assert "| 0.35 | 1.04M | 90.00 | 92.00 | 91.70 ± 0.10 |" in report
    assert "| 1 (5.60M) | 5.49M | 2.00M | 91.80 | 91.50 | 93.30 ± 0.10 | 93.10 ± 0.10 | +0.20 |" in report
    assert "| 0.35 (1.04M) | 1.02M | 2.00M | 90.40 | 90.00 | 91.95 ± 0.05 | 91.70 ± 0.10 | +0.25 |" in report
    assert "Search (seed 0): 30 scoring rounds, 40 removals, 500 candidate evaluations, 30.0 min." in report
    claim = {c: (m, v) for c, m, v in study_report.claims(d)}[
        "AutoSlim retrained at or above the uniform model of the same MACs at every budget"]
    assert claim == ("1: +0.20, 0.35: +0.25", "yes (2 of 4 budgets so far)")


def test_random_configs_at_a_budget(tmp_path):
    """Configs drawn within 3% under the budget, every group in its range, the same for the same seed,
    and budgets outside the space refused or left empty."""
    import random

    from slimnet.models import build
    from slimnet.profile import profile
    study, _ = _study(tmp_path)
    space = build("mobilenet_v2", num_classes=10, in_channels=1, input_size=28, max_width=1.5, min_width=0.2,
                  downsample="imagenet").space
    budget = profile(space, space.uniform(0.35)).macs
    rng = random.Random(0)
    cfgs = [c for c in (study.random_config_at(space, budget, rng) for _ in range(8)) if c is not None]
    assert len(cfgs) >= 6 and len(set(cfgs)) == len(cfgs)
    for c in cfgs:
        assert 0.97 * budget <= profile(space, c).macs <= budget
        assert all(space[n].min <= k <= space[n].max for n, k in c.items())
    again = random.Random(0)
    assert [study.random_config_at(space, budget, again) for _ in range(8)][0] == cfgs[0]
    with pytest.raises(ValueError, match="below the space's smallest config"):
        study.random_config_at(space, profile(space, space.min()).macs - 1, random.Random(0))
    assert study.random_config_at(space, profile(space, space.max()).macs + 1, random.Random(0)) is None


def test_headroom_jobs_sample_once_and_retrain_each_config(tmp_path):
    _, study = _study(tmp_path, headroom_configs=3)
    jobs = study.headroom_jobs(0)
    assert [j.name for j in jobs] == ["headroom_w035_s0"] + [f"headroom_w035_r{i}_s0" for i in range(3)]
    assert jobs[0].deps == ["autoslim_supernet_s0"] and all(j.deps == ["headroom_w035_s0"] for j in jobs[1:])
    train = jobs[2].steps[0][1]
    assert f"model.channels={tmp_path / 'results' / 'headroom_w035_s0' / 'random1.json'}" in train


def test_spearman_matches_hand_computed_ranks():
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    import study_report
    assert study_report.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert study_report.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ranks x: 1 2 3 4, y: 2 1 4 3 -> 1 - 6 * (1 + 1 + 1 + 1) / (4 * 15) = 0.6
    assert study_report.spearman([1, 2, 3, 4], [2, 1, 4, 3]) == pytest.approx(0.6)
    # a tie shares the mean rank: y ranks 1.5 1.5 3 4, Pearson of the ranks
    assert study_report.spearman([1, 2, 3, 4], [5, 5, 6, 7]) == pytest.approx(0.9486832980505138)
    assert study_report.spearman([1, 2], [1, 2]) is None


def test_report_headroom_section(tmp_path):
    """Random configs at a budget beside the uniform model and the searched config: their cost, their
    accuracy in the supernet and retrained, the retrained spread and the rank correlation."""
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    import study_report
    m = 1.04e6
    recs = [{"job": "autoslim_supernet_s0", "method": "autoslim_supernet", "seed": 0,
             "eval": [{"name": "width 0.35", "top1": 90.0, "macs": m, "images": 100}]},
            {"job": "headroom_w035_s0", "method": "headroom_sample", "seed": 0, "budget_width": 0.35, "budget_macs": m,
             "files": [f"r/headroom_w035_s0/random{i}.json" for i in range(3)],
             "eval_in_supernet": [{"name": f"random{i}.json", "top1": t, "macs": 1.02e6, "params": p}
                                  for i, (t, p) in enumerate([(89.0, 0.3e6), (89.5, 0.4e6), (90.5, 0.5e6)])]}]
    recs += [{"job": f"headroom_w035_r{i}_s0", "method": "headroom", "budget_width": 0.35, "seed": 0,
              "channels": f"r/headroom_w035_s0/random{i}.json", "eval": [{"name": "x", "top1": t, "macs": 1.02e6}]}
             for i, t in ((0, 91.0), (2, 91.6))]
    recs += [{"job": f"fixed_w035_s{s}", "method": "fixed", "width": 0.35, "seed": s,
              "eval": [{"name": "fixed 0.35", "top1": t, "macs": m, "params": 0.41e6, "images": 100}]}
             for s, t in ((0, 91.8), (1, 91.9))]
    results = tmp_path / "r"
    results.mkdir()
    for rec in recs:
        (results / f"{rec['job']}.json").write_text(json.dumps(rec))
    d = study_report.collect(str(results))
    report = study_report.tables(d)
    assert "| uniform 0.35x | 1.04M | 0.41M | 90.00 | 91.85 ± 0.05 |" in report
    assert "| random0 | 1.02M | 0.30M | 89.00 | 91.00 |" in report
    assert "| random1 | 1.02M | 0.40M | 89.50 | - |" in report
    # retrained: random0 91.0, random2 91.6, uniform 91.85; in the supernet 89.0, 90.5, 90.0 -> ranks 1 3 2 vs 1 2 3
    assert "Random configs retrained: 91.00 to 91.60 (2 of 3, range 0.60 points)." in report
    assert "over these 3 configs: +0.50." in report
    assert study_report.plot(d, str(tmp_path / "p.png"))


def test_autoslim_verdict_names_budgets_under_by_less_than_the_noise(tmp_path):
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    import study_report
    results = tmp_path / "r"
    results.mkdir()
    recs = []
    for seed, (ind, found) in enumerate([((93.0, 91.8), (92.9, 92.2)), ((93.1, 91.9), (92.8, 92.0))]):
        for w, t, f in zip((1.0, 0.35), ind, found):
            recs.append({"job": f"fixed_{w}_s{seed}", "method": "fixed", "width": w, "seed": seed,
                         "eval": [{"name": "x", "top1": t, "macs": 1e6}]})
            recs.append({"job": f"autoslim_{w}_s{seed}", "method": "autoslim", "budget_width": w, "budget_macs": 1e6,
                         "seed": seed, "eval": [{"name": "x", "top1": f, "macs": 1e6, "params": 1e5}]})
    for rec in recs:
        (results / f"{rec['job']}.json").write_text(json.dumps(rec))
    claim = {c: (m, v) for c, m, v in study_report.claims(study_report.collect(str(results)))}[
        "AutoSlim retrained at or above the uniform model of the same MACs at every budget"]
    # 1.0: 92.85 - 93.05 = -0.20, inside the 0.30 floor; 0.35: 92.1 - 91.85 = +0.25
    assert claim == ("1: -0.20, 0.35: +0.25",
                     "no: under at 1 by less than the noise (0.30) (2 of 4 budgets so far)")
    rec = recs[1]                                        # the 1.0x retrain of seed 0, now far under
    rec["eval"][0]["top1"] = 91.0
    (results / f"{rec['job']}.json").write_text(json.dumps(rec))
    claim = {c: (m, v) for c, m, v in study_report.claims(study_report.collect(str(results)))}[
        "AutoSlim retrained at or above the uniform model of the same MACs at every budget"]
    assert claim[1] == "no (2 of 4 budgets so far)"      # -1.15: beyond even that budget's own 0.90 half range
