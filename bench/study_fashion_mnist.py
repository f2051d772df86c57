"""The Fashion-MNIST accuracy study: do the papers' claims reproduce?

Every method trains the same MobileNet v2 (configs/bench/fmnist_*.yaml: torchvision's strides,
28x28 grey input, the full 60,000 training images, 30 epochs, one schedule) and is evaluated on the
official 10,000 test images:

  fixed        individually trained models at widths 0.35 / 0.5 / 0.75 / 1.0 (the baseline)
  snet         S-Net: the 4 widths in one network, switchable BN
  shared_bn    the same with one shared BN: without calibration, then with calibrated BN
  usnet        US-Net (sandwich rule, inplace distillation) and the same without distillation,
               evaluated from 0.35 to 1.0 in steps of 0.05, BN calibrated on 2,000 training images
  autoslim     a 1.5x AutoSlim supernet (trained without a 5,000-image held-out split), greedy
               search at the MACs of the 4 uniform widths (both with the first seed), the found
               configs retrained alone with every seed
  headroom     random per-layer configs at the MACs of one budget (--headroom-width), scored in the
               AutoSlim supernet and retrained alone (the first seed): how far apart do configs of
               equal MACs land on this task, and does the supernet rank them as training alone does?
  convergence  the individual 1.0x model trained for twice the study's epochs (--long-epochs): does
               more training change the baseline? (With a cosine schedule the last 20% of epochs are
               its anneal, which gains on any length, so that bar alone cannot say.)
  calibration  US-Net accuracy at widths 0.35 and 1.0 against the number of calibration images
               (the last seed's US-Net)
  costs        exported-child latency against torchvision's plain MobileNet v2 with the same channels
               and against the supernet at that width (runs alone, nothing else in parallel)

Every step is a `slimnet` command (recorded with its wall time in the result JSON). Each job
writes bench/results/study_fashion_mnist/<job>.json when it is complete; a rerun skips finished
jobs and resumes interrupted ones (training resumes from last.pt, the search from its state).
Checkpoints go to checkpoints/study_fmnist/. `--part report` (also run after the jobs) writes
the tables (bench/results/study_fashion_mnist.md) and the plot (docs/img/study_fashion_mnist.png).

    python bench/study_fashion_mnist.py --part all --seeds 0 1 --jobs 2 --threads 1   # ~20 h of 2 cores
    python bench/study_fashion_mnist.py --part snet usnet --only snet_s0 usnet_s0
    python bench/study_fashion_mnist.py --part usnet calibration --seeds 0 1
    python bench/study_fashion_mnist.py --part report
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[0:1] = [ROOT, os.path.dirname(os.path.abspath(__file__))]   # slimnet and bench/study_report
from study_report import WIDTHS, write_report  # noqa: E402  (bench/study_report.py)

from slimnet.utils import atomic_write_text  # noqa: E402

PARTS = ("fixed", "snet", "shared_bn", "usnet", "autoslim", "headroom", "calibration", "convergence", "costs")
LONG_WIDTHS = (1.0,)       # the convergence part's widths: the widest model gains most late in training
US_WIDTHS = "0.35:1.0:0.05"
CALIB_COUNTS = (250, 500, 1000, 2000, 4000, 8000)
CALIB_DRAWS = 3             # random draws of calibration images (counts <= 2000; one draw above)


def tag(w: float) -> str:
    return f"w{int(round(w * 100)):03d}"


@dataclass
class Job:
    name: str
    part: str
    steps: list                       # [(label, argv)] run in order; argv may be a callable -> argv
    collect: Callable[[dict], dict]   # step wall times -> the result record
    deps: list = field(default_factory=list)
    exclusive: bool = False           # run with no other job in parallel (timings)


class Study:
    def __init__(self, args):
        self.args = args
        self.results = os.path.abspath(args.results)
        self.runs = os.path.abspath(args.runs)
        self.py = sys.executable

    # -- commands -------------------------------------------------------------------------------
    def slimnet(self, *argv) -> list[str]:
        return [self.py, "-m", "slimnet.cli", *map(str, argv)]

    def train(self, config: str, run: str, seed: int, *extra) -> list[str]:
        over = [f"experiment.output_dir={run}", f"experiment.seed={seed}", *self.args.override, *extra]
        return self.slimnet("train", "--config", os.path.join("configs", "bench", config), "--quiet", *over)

    def evaluate(self, ckpt: str, out: str, *flags) -> list[str]:
        return self.slimnet("evaluate", "--checkpoint", ckpt, "--json", out, *flags)

    def run_dir(self, name: str) -> str:
        return os.path.join(self.runs, name)

    # -- the jobs ------------------------------------------------------------------------------
    def jobs(self, seeds) -> list[Job]:
        jobs = self.autoslim_jobs(seeds)        # the longest chain first
        jobs += self.headroom_jobs(seeds[0])
        # then whether the schedule is long enough, which decides whether the rest is worth running at it
        jobs += [self.train_eval_job(f"fixed_{tag(w)}_e{self.args.long_epochs}_s{seeds[0]}", "convergence",
                                     f"fmnist_fixed_{tag(w)}.yaml", seeds[0], [],
                                     {"method": "fixed_long", "width": w, "epochs": self.args.long_epochs},
                                     extra=[f"train.epochs={self.args.long_epochs}"]) for w in LONG_WIDTHS]
        for s in seeds:
            jobs += [self.train_eval_job(f"fixed_{tag(w)}_s{s}", "fixed", f"fmnist_fixed_{tag(w)}.yaml", s, [],
                                         {"method": "fixed", "width": w}) for w in WIDTHS]
            jobs.append(self.train_eval_job(f"snet_s{s}", "snet", "fmnist_snet.yaml", s, self.width_flags(WIDTHS),
                                            {"method": "snet"}))
            jobs.append(self.shared_bn_job(s))
            for method in ("usnet", "usnet_no_distill"):
                jobs.append(self.train_eval_job(f"{method}_s{s}", "usnet", f"fmnist_{method}.yaml", s,
                                                ["--widths", US_WIDTHS, "--calibrate-images", "2000"],
                                                {"method": method}))
        jobs.append(self.calibration_job(seeds[-1]))   # the last seed's US-Net
        jobs.append(Job("costs", "costs", [("costs", [self.py, os.path.abspath(__file__), "--measure-costs",
                                                      os.path.join(self.results, "costs.partial.json")])],
                        lambda walls: {**_read_json(os.path.join(self.results, "costs.partial.json")),
                                       "commands": walls}, exclusive=True))
        return jobs

    @staticmethod
    def width_flags(widths) -> list[str]:
        return [a for w in widths for a in ("--width", str(w))]

    def train_eval_job(self, name, part, config, seed, eval_flags, meta, extra=(), deps=()) -> Job:
        run = self.run_dir(name)
        ev = os.path.join(run, "eval.json")
        steps = [("train", self.train(config, run, seed, *extra)),
                 ("evaluate", self.evaluate(os.path.join(run, "last.pt"), ev, *eval_flags))]
        return Job(name, part, steps, lambda walls: {**meta, "seed": seed, "config": config,
                                                      "eval": _read_json(ev)["results"],
                                                      "train": _train_stats(run), "commands": walls},
                   deps=list(deps))

    def shared_bn_job(self, seed) -> Job:
        job = self.train_eval_job(f"snet_shared_bn_s{seed}", "shared_bn", "fmnist_snet_shared_bn.yaml", seed,
                                  self.width_flags(WIDTHS), {"method": "snet_shared_bn"})
        run = self.run_dir(job.name)
        cal = os.path.join(run, "eval_calibrated.json")
        job.steps.append(("evaluate calibrated", self.evaluate(os.path.join(run, "last.pt"), cal, *self.width_flags(WIDTHS),
                                                             "--recalibrate", "--calibrate-images", "2000")))
        base = job.collect
        job.collect = lambda walls: {**base(walls), "eval_calibrated": _read_json(cal)["results"]}
        return job

    @functools.cached_property
    def budgets(self) -> dict:
        """MACs of the uniform fixed models: the search's budgets (and the headroom part's)."""
        import torch

        from slimnet.models import build
        from slimnet.profile import profile
        from slimnet.search import make_budgets
        with torch.device("meta"):
            net = build("mobilenet_v2", num_classes=10, in_channels=1, input_size=28, max_width=1.0,
                        min_width=0.35, downsample="imagenet")
        macs = {w: profile(net.space, net.space.uniform(w)).macs for w in WIDTHS}
        return {w: make_budgets(flops=[m])[0] for w, m in macs.items()}

    def autoslim_jobs(self, seeds) -> list[Job]:
        """One supernet and search (the first seed); every seed retrains the configs it found, so the
        retrains' spread is that of training, as for the individual models they are compared with."""
        seed = seeds[0]
        sup = f"autoslim_supernet_s{seed}"
        run = self.run_dir(sup)
        ckpt = os.path.join(run, "last.pt")
        jobs = [self.train_eval_job(sup, "autoslim", "fmnist_autoslim_supernet.yaml", seed,
                                    self.width_flags((1.5,) + WIDTHS + (0.2,)), {"method": "autoslim_supernet"})]
        budgets = self.budgets
        search_dir = os.path.join(run, "search")
        search = f"autoslim_search_s{seed}"
        ev = os.path.join(search_dir, "eval_in_supernet.json")
        flops = [a for b in budgets.values() for a in ("--flops", str(b.value))]
        a = self.args
        steps = [("search", self.slimnet("autoslim", "--checkpoint", ckpt, *flops, "--out", search_dir, "--quiet",
                                         "--search-images", a.search_images, "--prescreen", a.prescreen,
                                         "--leaders", a.leaders)),
                 ("evaluate in supernet", self.evaluate(ckpt, ev, *[x for b in budgets.values() for x in
                                                                  ("--channels", os.path.join(search_dir, f"{b.label}.json"))]))]

        found = os.path.join(self.results, search)     # the found configs, kept with the results

        def collect_search(walls):
            traj = [json.loads(line) for line in open(os.path.join(search_dir, "autoslim_trajectory.jsonl"))]
            os.makedirs(found, exist_ok=True)
            for name in [f"{b.label}.json" for b in budgets.values()] + ["autoslim_trajectory.jsonl"]:
                shutil.copyfile(os.path.join(search_dir, name), os.path.join(found, name))
            return {"method": "autoslim_search", "seed": seed, "budgets": {str(w): b.value for w, b in budgets.items()},
                    "files": {str(w): os.path.relpath(os.path.join(found, f"{b.label}.json"), ROOT)
                              for w, b in budgets.items()},
                    "removals": len(traj), "iterations": len({r["iteration"] for r in traj}),
                    "candidates": sum(r["candidates"] or 0 for r in traj),
                    "search_s": traj[-1]["elapsed_s"] if traj else None, "eval_in_supernet": _read_json(ev)["results"],
                    "commands": walls}
        jobs.append(Job(search, "autoslim", steps, collect_search, deps=[sup]))
        for s in seeds:
            for w, b in budgets.items():
                channels = os.path.join(found, f"{b.label}.json")   # committed: retrains need no supernet
                jobs.append(self.train_eval_job(f"autoslim_retrain_{tag(w)}_s{s}", "autoslim",
                                                "fmnist_autoslim_retrain.yaml", s, [],
                                                {"method": "autoslim", "budget_width": w, "budget_macs": b.value,
                                                 "searched_by": search},
                                                extra=[f"model.channels={channels}"], deps=[search]))
        return jobs

    def headroom_jobs(self, seed) -> list[Job]:
        """Random configs at one budget's MACs (drawn as the supernet's training draws them, then
        scaled to the budget), each scored in the AutoSlim supernet and retrained alone: the spread of
        the retrained accuracies is the room any search has on this task, and their order against the
        supernet's says whether its ranking carries over to training alone."""
        a = self.args
        w = a.headroom_width
        sup = f"autoslim_supernet_s{seed}"
        name = f"headroom_{tag(w)}_s{seed}"
        work = self.run_dir(name)
        kept = os.path.join(self.results, name)          # committed: the retrains read their configs there
        names = [f"random{i}.json" for i in range(a.headroom_configs)]
        ev = os.path.join(work, "eval_in_supernet.json")
        budget = self.budgets[w].value
        steps = [("sample", [self.py, os.path.abspath(__file__), "--sample-configs", work, "--sample-budget",
                             str(budget), "--sample-count", str(a.headroom_configs), "--sample-seed", str(seed)]),
                 ("evaluate in supernet", self.evaluate(os.path.join(self.run_dir(sup), "last.pt"), ev,
                                                        *[x for n in names for x in ("--channels", os.path.join(work, n))]))]

        def collect(walls):
            os.makedirs(kept, exist_ok=True)
            for n in names:
                shutil.copyfile(os.path.join(work, n), os.path.join(kept, n))
            return {"method": "headroom_sample", "seed": seed, "budget_width": w, "budget_macs": budget,
                    "files": [os.path.relpath(os.path.join(kept, n), ROOT) for n in names],
                    "eval_in_supernet": _read_json(ev)["results"], "commands": walls}
        jobs = [Job(name, "headroom", steps, collect, deps=[sup])]
        for i, n in enumerate(names):
            jobs.append(self.train_eval_job(f"headroom_{tag(w)}_r{i}_s{seed}", "headroom", "fmnist_autoslim_retrain.yaml",
                                            seed, [], {"method": "headroom", "budget_width": w, "budget_macs": budget,
                                                       "channels": os.path.relpath(os.path.join(kept, n), ROOT)},
                                            extra=[f"model.channels={os.path.join(kept, n)}"], deps=[name]))
        return jobs

    def calibration_job(self, seed) -> Job:
        us = f"usnet_s{seed}"
        ckpt = os.path.join(self.run_dir(us), "last.pt")
        out = os.path.join(self.run_dir(us), "calibration")
        steps, files = [], []
        for n in self.args.calib_counts:
            for draw in range(self.args.calib_draws if n <= 2000 else 1):
                f = os.path.join(out, f"n{n}_draw{draw}.json")
                files.append((n, draw, f))
                steps.append((f"calibrate {n} draw {draw}",
                              self.evaluate(ckpt, f, "--width", "0.35", "--width", "1.0", "--recalibrate",
                                            "--calibrate-images", n, "--calibrate-seed", draw)))

        def collect(walls):
            rows = [{"images": n, "draw": d, "results": _read_json(f)["results"]} for n, d, f in files]
            return {"method": "calibration", "seed": seed, "model": us, "rows": rows, "commands": walls}
        return Job(f"calibration_s{seed}", "calibration", steps, collect, deps=[us])

    # -- running -------------------------------------------------------------------------------
    def result_path(self, name: str) -> str:
        return os.path.join(self.results, f"{name}.json")

    def done(self, name: str) -> bool:
        return os.path.exists(self.result_path(name))

    def started(self, name: str) -> bool:
        return os.path.exists(os.path.join(self.run_dir(name), "study.log"))

    def run_job(self, job: Job) -> None:
        os.makedirs(self.run_dir(job.name), exist_ok=True)
        log_path = os.path.join(self.run_dir(job.name), "study.log")
        env = dict(os.environ, OMP_NUM_THREADS=str(self.args.threads), MKL_NUM_THREADS=str(self.args.threads),
                   PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        walls = []
        with open(log_path, "a") as log:
            for label, argv in job.steps:
                # recorded relative to the repository, as one would type it there
                cmd = " ".join(shlex.quote(a.replace(ROOT + os.sep, "")) for a in ["python"] + argv[1:])
                log.write(f"$ {cmd}\n")
                log.flush()
                t0 = time.perf_counter()
                rc = subprocess.call(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
                wall = time.perf_counter() - t0
                if rc != 0:
                    raise RuntimeError(f"{job.name}: step '{label}' failed (exit {rc}); see {log_path}")
                walls.append({"step": label, "command": cmd, "wall_s": round(wall, 1)})
        record = job.collect(walls)
        record["job"] = job.name
        record["threads"] = self.args.threads
        atomic_write_text(self.result_path(job.name), json.dumps(record, indent=1) + "\n")

    def run(self, jobs: list[Job]) -> int:
        os.makedirs(self.results, exist_ok=True)
        by_name = {j.name: j for j in jobs}
        # interrupted jobs first (a resumed session finishes what it started), then in the given order
        pending = sorted((j for j in jobs if not self.done(j.name)), key=lambda j: not self.started(j.name))
        for j in jobs:
            if self.done(j.name):
                print(f"[study] {j.name}: done earlier ({os.path.relpath(self.result_path(j.name), ROOT)})")
        running: dict[str, threading.Thread] = {}
        failed: dict[str, str] = {}
        lock = threading.Lock()

        def worker(job):
            t0 = time.perf_counter()
            try:
                self.run_job(job)
                print(f"[study] {job.name}: finished in {time.perf_counter() - t0:.0f}s", flush=True)
            except Exception as e:  # noqa: BLE001 - reported, the other jobs go on
                with lock:
                    failed[job.name] = str(e)
                print(f"[study] {job.name}: FAILED: {e}", flush=True)

        while pending or running:
            for name in [n for n, t in running.items() if not t.is_alive()]:
                running.pop(name)
            blocked = [j for j in pending if any(d in failed for d in j.deps)]
            for j in blocked:
                failed[j.name] = f"dependency failed: {[d for d in j.deps if d in failed]}"
                pending.remove(j)
                print(f"[study] {j.name}: skipped, {failed[j.name]}", flush=True)
            ready = [j for j in pending
                     if all(self.done(d) or d not in by_name for d in j.deps)
                     and not any(d in running for d in j.deps)]
            for j in ready:
                excl_running = any(by_name[n].exclusive for n in running)
                if excl_running or len(running) >= self.args.jobs or (j.exclusive and running):
                    break
                pending.remove(j)
                print(f"[study] {j.name}: started", flush=True)
                t = threading.Thread(target=worker, args=(j,), daemon=True)
                running[j.name] = t
                t.start()
            time.sleep(0.5)
        if failed:
            print(f"[study] {len(failed)} job(s) failed or skipped: {', '.join(failed)}")
        return 1 if failed else 0


def _read_json(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def _train_stats(run: str) -> dict:
    rows = [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl"))]
    top1: dict[str, list] = {}
    for r in rows:                       # test top-1 of every evaluated width after each epoch
        for label, res in (r.get("eval") or {}).items():
            top1.setdefault(label, []).append(res["top1"])
    # epoch_s: each epoch's wall time, training and evaluation (a resumed epoch counts from the resume):
    # their sum is the job's training time over all the sessions it ran in
    return {"epochs": len(rows), "images_per_s": [round(r["images_per_s"], 1) for r in rows],
            "epoch_s": [round(r["time"], 1) for r in rows],
            "final_train_loss": rows[-1]["train_loss"], "top1_per_epoch": top1}


# ---------------------------------------------------------------------------------------------
# headroom: random configs at a budget
# ---------------------------------------------------------------------------------------------
SUPERNET_CONFIG = os.path.join(ROOT, "configs", "bench", "fmnist_autoslim_supernet.yaml")


def random_config_at(space, budget: int, rng: random.Random, tolerance: float = 0.03):
    """A per-layer random config of ``space`` with MACs in [(1 - tolerance) * budget, budget], or
    None where rounding to channel divisors skips that band. Each group's width ratio is drawn
    uniformly from the space's range, as the supernet's training draws them; then one factor,
    found by bisection, scales every ratio to the budget (each group clamped to its range)."""
    from slimnet.profile import profile
    from slimnet.space import make_divisible

    ratios = {g.name: rng.uniform(space.min_width, space.max_width) for g in space}

    def at(scale):
        return space.config({g.name: min(g.max, max(g.min, make_divisible(g.base * ratios[g.name] * scale, g.divisor)))
                             for g in space})

    def macs(scale):
        return profile(space, at(scale)).macs
    smallest = macs(0.0)
    if smallest > budget:
        raise ValueError(f"budget {budget:,} MACs is below the space's smallest config ({smallest:,} MACs)")
    lo, lo_macs = 0.0, smallest
    hi = max(g.max / (g.base * ratios[g.name]) for g in space)    # every group at its max
    if macs(hi) <= budget:
        return None                                   # the budget is above the whole space: no room to draw
    for _ in range(40):
        mid = (lo + hi) / 2
        m = macs(mid)
        if m <= budget:
            lo, lo_macs = mid, m
        else:
            hi = mid
    return at(lo) if lo_macs >= (1 - tolerance) * budget else None


def sample_configs(out_dir: str, budget: int, count: int, seed: int, config: str = SUPERNET_CONFIG) -> None:
    """``count`` random configs at ``budget`` MACs in the channel space of the supernet ``config``,
    written as channel JSONs random0.json ... (what `slimnet train model.channels=` reads)."""
    from slimnet.config import load_config
    from slimnet.train.plan import model_arch, prototype

    exp = load_config(config)
    space = prototype(exp.model.name, model_arch(exp, num_classes=10, in_channels=1, input_size=28)).space
    rng = random.Random(seed)
    found = []
    for _ in range(100 * count):
        cfg = random_config_at(space, budget, rng)
        if cfg is not None and cfg not in found:
            found.append(cfg)
            if len(found) == count:
                break
    else:
        raise RuntimeError(f"drew only {len(found)} of {count} configs within 3% under {budget:,} MACs")
    os.makedirs(out_dir, exist_ok=True)
    for i, cfg in enumerate(found):
        cfg.save(os.path.join(out_dir, f"random{i}.json"))


# ---------------------------------------------------------------------------------------------
# costs: exported child vs plain torchvision model vs supernet
# ---------------------------------------------------------------------------------------------
def measure_costs(out: str, rounds: int = 15, repeats: int = 30) -> None:
    import torch
    import torchvision

    from slimnet.calibrate import calibrate_bn
    from slimnet.export import export
    from slimnet.models import build
    from slimnet.profile import measure_latency, profile

    torch.manual_seed(0)
    net = build("mobilenet_v2", num_classes=10, in_channels=1, input_size=28, max_width=1.0, min_width=0.35,
                downsample="imagenet").eval()
    rows = []
    for w in WIDTHS:
        cfg = net.space.uniform(w)
        calibrate_bn(net, cfg, torch.randn(64, 1, 28, 28))
        child = export(net, cfg).eval()
        plain = torchvision.models.mobilenet_v2(width_mult=w, num_classes=10)
        stem = plain.features[0][0]
        plain.features[0][0] = torch.nn.Conv2d(1, stem.out_channels, 3, 2, 1, bias=False)
        plain.eval()
        n_child = sum(p.numel() for p in child.parameters())
        n_plain = sum(p.numel() for p in plain.parameters())
        if n_child != n_plain:
            raise RuntimeError(f"width {w}: exported child has {n_child} parameters, torchvision's {n_plain}")
        net.set_channels(cfg)
        row = {"width": w, "macs": profile(net.space, cfg).macs, "params": n_child}
        for batch in (1, 64):
            times = {"child": [], "plain": [], "supernet": []}
            for _ in range(rounds):   # interleaved rounds: the machine's noise hits all three alike
                for key, model in (("child", child), ("plain", plain), ("supernet", net)):
                    times[key].append(measure_latency(model, (batch, 1, 28, 28), warmup=3, repeats=repeats))
            med = {k: statistics.median(v) for k, v in times.items()}
            row[f"batch{batch}"] = {"ms": {k: round(v, 3) for k, v in med.items()},
                                    "child_over_plain": round(med["child"] / med["plain"], 3),
                                    "supernet_over_child": round(med["supernet"] / med["child"], 3)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    atomic_write_text(out, json.dumps({"threads": torch.get_num_threads(), "rounds": rounds, "repeats": repeats,
                                       "rows": rows},
                                      indent=1) + "\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", nargs="+", default=["all"], choices=PARTS + ("all", "report"),
                   help="parts to run (their dependencies run too); report: tables and plot only")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--only", nargs="+", metavar="JOB", default=[],
                   help="run only these jobs of the chosen parts and seeds (and their dependencies), "
                        "e.g. snet_s0 usnet_s1")
    p.add_argument("--jobs", type=int, default=2, help="jobs in parallel")
    p.add_argument("--threads", type=int, default=1, help="torch threads per job")
    # every candidate scored on all 5,000 held-out images (standard error ~0.35 pt): in channels_last
    # a scoring round of the 1.5x supernet takes ~55 s here, so the exact search costs ~40 min
    p.add_argument("--search-images", type=int, default=5000, help="held-out images the search scores on")
    p.add_argument("--prescreen", type=int, default=0, help="0: every candidate scored on all --search-images")
    p.add_argument("--leaders", type=int, default=2)
    p.add_argument("--calib-counts", type=int, nargs="+", default=list(CALIB_COUNTS),
                   help="calibration part: numbers of calibration images")
    p.add_argument("--calib-draws", type=int, default=CALIB_DRAWS,
                   help="calibration part: random draws per count up to 2000 images")
    p.add_argument("--long-epochs", type=int, default=60, help="convergence part: epochs of the long run")
    p.add_argument("--headroom-width", type=float, default=0.35, choices=WIDTHS,
                   help="headroom part: the budget, the MACs of this uniform width")
    p.add_argument("--headroom-configs", type=int, default=6, help="headroom part: random configs retrained")
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="extra config override for every training run (e.g. data.root=DIR), repeatable")
    p.add_argument("--results", default=os.path.join(ROOT, "bench", "results", "study_fashion_mnist"))
    p.add_argument("--runs", default=os.path.join(ROOT, "checkpoints", "study_fmnist"))
    p.add_argument("--report-md", default=os.path.join(ROOT, "bench", "results", "study_fashion_mnist.md"))
    p.add_argument("--report-png", default=os.path.join(ROOT, "docs", "img", "study_fashion_mnist.png"))
    p.add_argument("--measure-costs", metavar="OUT", help=argparse.SUPPRESS)
    p.add_argument("--sample-configs", metavar="DIR", help=argparse.SUPPRESS)     # the headroom job's step
    p.add_argument("--sample-budget", type=int, help=argparse.SUPPRESS)
    p.add_argument("--sample-count", type=int, help=argparse.SUPPRESS)
    p.add_argument("--sample-seed", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.measure_costs:
        measure_costs(args.measure_costs)
        return 0
    if args.sample_configs:
        sample_configs(args.sample_configs, args.sample_budget, args.sample_count, args.sample_seed)
        return 0
    if args.jobs < 1 or args.threads < 1 or args.headroom_configs < 1:
        p.error("--jobs, --threads and --headroom-configs must be >= 1")
    study = Study(args)
    rc = 0
    if args.part != ["report"]:
        parts = set(PARTS) if "all" in args.part else set(args.part) - {"report"}
        jobs = study.jobs(args.seeds)
        by_name = {j.name: j for j in jobs}
        wanted = [j for j in jobs if j.part in parts]
        unknown = sorted(set(args.only) - {j.name for j in wanted})
        if unknown:
            p.error(f"--only: no job named {', '.join(unknown)} in the chosen parts and seeds; "
                    f"those are: {', '.join(j.name for j in wanted)}")
        if args.only:
            wanted = [j for j in wanted if j.name in args.only]
        closure, todo = {}, list(wanted)
        while todo:                      # dependencies of the wanted jobs run too
            j = todo.pop()
            if j.name not in closure:
                closure[j.name] = j
                todo += [by_name[d] for d in j.deps]
        rc = study.run([j for j in jobs if j.name in closure])
    write_report(args.results, args.report_md, args.report_png)
    return rc


if __name__ == "__main__":
    sys.exit(main())
