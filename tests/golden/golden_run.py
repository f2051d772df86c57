"""The golden run: a tiny fixed-seed pass through every part of slimnet, fingerprinted.

Trains each mode (switchable, universal, autoslim, fixed) for a few steps on random
Fashion-MNIST-format images, runs the greedy search on the AutoSlim supernet, exports and
evaluates a searched child, and records, per step, fingerprints (SHA-256 of the exact bytes) of
the weights, BN statistics, losses, the search trajectory and every output. A restructuring that
keeps behaviour reproduces every fingerprint bit for bit with the same torch version
(tests/test_golden.py). Record anew only when a change of behaviour is intended:

    python tests/golden/golden_run.py --record      # writes tests/golden/golden_run.json

Kernels are chosen by the CPU: an AVX-512 machine runs other ATen and oneDNN kernels than an
AVX2 one, and their results differ in the last bits (measured: every fingerprint changed between
the two). The run therefore pins both libraries to their AVX2 kernels (``PINNED_KERNELS``, set in
the environment before torch loads: the script re-executes itself with them). Pinned, an
AVX-512 machine reproduced all 19 fingerprints recorded on an AVX2 one. (MKL, behind the linear
layers, picks its own paths by CPU vendor; a machine where it differs needs a re-record.)
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
GOLDEN = os.path.join(HERE, "golden_run.json")
# read by torch and oneDNN when they load, so they must be in the environment before ``import torch``
PINNED_KERNELS = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def pinned() -> bool:
    return all(os.environ.get(k) == v for k, v in PINNED_KERNELS.items())


if __name__ == "__main__" and not pinned():
    os.execve(sys.executable, [sys.executable, os.path.abspath(__file__), *sys.argv[1:]],
              {**os.environ, **PINNED_KERNELS})

import torch  # noqa: E402

sys.path[0:0] = [ROOT, os.path.dirname(HERE)]   # slimnet, tests/helpers.py

from helpers import write_noise_fashion  # noqa: E402

from slimnet.cli import main as slimnet  # noqa: E402

COMMON = ["experiment.device=cpu", "experiment.seed=3", "model.name=resnet20", "model.max_width=0.5",
          "model.min_width=0.25", "data.name=fashion_mnist", "data.input_size=16", "data.batch_size=16",
          "data.eval_batch_size=16", "data.workers=0", "train.epochs=2", "optim.lr=0.05", "optim.warmup_epochs=0.5",
          "eval.calib_images=16", "train.checkpoint_every=0"]
MODES = {
    "switchable": ["train.mode=switchable", "train.widths=[0.5,0.375,0.25]", "train.distill=soft_ce"],
    "universal": ["train.mode=universal", "train.num_random=1", "train.channels_last=true",
                  "train.distill_warmup_epochs=1"],
    "autoslim": ["train.mode=autoslim", "train.num_random=2", "data.heldout_size=24",
                 "data.exclude_heldout=true", "train.label_smoothing=0.1", "eval.widths=[0.5,0.25]"],
    "fixed": ["train.mode=fixed", "train.widths=[0.375]", "data.in_memory=false", "data.augment=default"],
}


def digest(obj, work: str = "") -> str:
    """SHA-256 of a value's exact bytes: tensors by dtype, shape and raw data; containers in order;
    the run's temporary folder ``work`` in strings reads as ``<work>``."""
    h = hashlib.sha256()

    def feed(o):
        if isinstance(o, torch.Tensor):
            t = o.detach().cpu().contiguous().reshape(-1)
            h.update(f"T{o.dtype}{tuple(o.shape)}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(o, dict):
            h.update(b"{")
            for k in sorted(o, key=str):
                h.update(repr(k).encode())
                feed(o[k])
            h.update(b"}")
        elif isinstance(o, (list, tuple)):
            h.update(b"[")
            for v in o:
                feed(v)
            h.update(b"]")
        elif isinstance(o, float):
            h.update(o.hex().encode())
        elif isinstance(o, str):
            h.update(repr(o.replace(work, "<work>") if work else o).encode())
        else:
            h.update(repr(o).encode())
    feed(obj)
    return h.hexdigest()[:16]


def _cli(*argv) -> None:
    with contextlib.redirect_stdout(io.StringIO()):
        rc = slimnet([str(a) for a in argv])
    if rc:
        raise RuntimeError(f"slimnet {' '.join(map(str, argv))} exited with {rc}")


def _read_jsonl(path) -> list:
    with open(path) as f:
        return [json.loads(line) for line in f]


def _without_times(obj):
    """Drop wall-clock figures (names ending in _s or per_s), keeping everything computed."""
    if isinstance(obj, dict):
        return {k: _without_times(v) for k, v in obj.items()
                if not (k.endswith("_s") or k.endswith("per_s") or k in ("time", "elapsed", "wall"))}
    if isinstance(obj, list):
        return [_without_times(v) for v in obj]
    return obj


def _load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def run(work: str) -> dict:
    """Every fingerprint of the golden run, computed in the folder ``work`` (in a process started
    with ``PINNED_KERNELS``)."""
    if torch.backends.cpu.get_cpu_capability() != "AVX2":
        raise RuntimeError(f"the golden run needs torch's AVX2 kernels (environment {PINNED_KERNELS} before torch "
                           f"loads); this process runs {torch.backends.cpu.get_cpu_capability()}")
    torch.set_num_threads(1)
    data = write_noise_fashion(os.path.join(work, "fm"), n_train=64, n_test=32, seed=7)
    out = {}
    for mode, overrides in MODES.items():
        run_dir = os.path.join(work, mode)
        config = os.path.join(work, f"{mode}.yaml")      # every setting is in the overrides
        with open(config, "w") as f:
            f.write(f"experiment: {{name: golden_{mode}}}\n")
        _cli("train", "--config", config, "--quiet",
             f"experiment.output_dir={run_dir}", f"data.root={data}", *COMMON, *overrides)
        last = _load(os.path.join(run_dir, "last.pt"))
        out[f"train/{mode}/weights"] = digest(last["model_state"])
        # optimizer, schedule, torch RNG, sampler and config too; Python's and numpy's global RNG
        # states are the process's own (training draws from neither), saved only for user code
        last["rng"] = {k: v for k, v in last["rng"].items() if k not in ("python", "numpy")}
        out[f"train/{mode}/checkpoint"] = digest(last, work)
        out[f"train/{mode}/metrics"] = digest(_without_times(_read_jsonl(os.path.join(run_dir, "metrics.jsonl"))))

    sup = os.path.join(work, "autoslim", "last.pt")
    search = os.path.join(work, "search")
    _cli("autoslim", "--checkpoint", sup, "--flops", "1.9M", "--params", "40K", "--out", search,
         "--no-plot", "--quiet", "--data-root", data, "--prescreen", "4", "--leaders", "2", "--calib-images", "16")
    for name in sorted(os.listdir(search)):
        path = os.path.join(search, name)
        if name.endswith(".json"):
            with open(path) as f:
                out[f"search/{name}"] = digest(_without_times(json.load(f)))
        elif name.endswith(".jsonl"):
            out[f"search/{name}"] = digest(_without_times(_read_jsonl(path)))

    channels = os.path.join(search, "autoslim_1.9M.json")
    child_dir = os.path.join(work, "child")
    _cli("export", "--checkpoint", sup, "--channels", channels, "--out", child_dir, "--calibrate-images", "16",
         "--no-latency", "--data-root", data)
    child = _load(os.path.join(child_dir, "child.pt"))
    out["export/child"] = digest(child)
    evaluation = os.path.join(work, "evaluate.json")
    _cli("evaluate", "--checkpoint", sup, "--width", "0.5", "--width", "0.3", "--channels", channels,
         "--calibrate-images", "16", "--json", evaluation, "--data-root", data)
    with open(evaluation) as f:
        out["evaluate/supernet"] = digest(_without_times(json.load(f)))
    evaluation = os.path.join(work, "evaluate_child.json")
    _cli("evaluate", "--child", os.path.join(child_dir, "child.pt"), "--json", evaluation,
         "--data", "fashion_mnist", "--data-root", data)
    with open(evaluation) as f:
        out["evaluate/child"] = digest(_without_times(json.load(f)))
    return out


def record() -> dict:
    with tempfile.TemporaryDirectory() as work:
        fingerprints = run(work)
    golden = {"torch": torch.__version__, "kernels": PINNED_KERNELS, "fingerprints": fingerprints}
    with open(GOLDEN, "w") as f:
        json.dump(golden, f, indent=1)
        f.write("\n")
    return golden


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--record", action="store_true", help=f"write {os.path.relpath(GOLDEN, ROOT)}")
    p.add_argument("--out", help="write this run's fingerprints (JSON) here instead of printing them")
    args = p.parse_args()
    if args.record:
        print(json.dumps(record(), indent=1))
    else:
        with tempfile.TemporaryDirectory() as work:
            text = json.dumps({"torch": torch.__version__, "fingerprints": run(work)}, indent=1)
        if args.out:
            with open(args.out, "w") as f:
                f.write(text + "\n")
        else:
            print(text)
