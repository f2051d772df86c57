"""Resuming and replacing runs: RNG state, which checkpoint a run resumes from and whether it
fits, and the output folder a fresh run (``--fresh``) replaces only once it has a checkpoint."""
from __future__ import annotations

import contextlib
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from ..checkpoint import load_checkpoint, model_spec
from ..config import ConfigError, flatten
from ..utils import clean_stale_temps

__all__ = ["RESUME_SAFE_KEYS", "RESUME_SAFE_PREFIXES", "REPLACED", "rng_state", "set_rng_state",
           "check_resume_compatible", "resume_path", "load_resume_checkpoint", "stage_previous_run",
           "finish_replacing", "restore_previous_run", "recover_output_dir"]

# Keys that may change between a checkpoint and the run resuming it (everything else must match).
RESUME_SAFE_KEYS = {
    "experiment.name", "experiment.output_dir", "experiment.device", "data.root", "data.workers",
    "data.eval_batch_size", "data.download", "train.epochs", "train.checkpoint_every",
    "train.debug_nan_at_step", "train.debug_step_delay", "train.compile",
}
RESUME_SAFE_PREFIXES = ("eval.",)
TRAINING_STATE = ("optimizer", "scheduler", "scaler", "rng", "epoch", "batch", "step")


# --------------------------------------------------------------------------------------------
# RNG state
# --------------------------------------------------------------------------------------------
def rng_state() -> dict:
    """Every RNG's state as tensors, numbers and lists (checkpoints load with weights_only=True)."""
    version, mt, gauss = random.getstate()
    kind, key, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(),
             "python": {"version": version, "state": list(mt), "gauss": gauss},
             "numpy": {"kind": str(kind), "key": torch.from_numpy(key.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` saved."""
    torch.set_rng_state(state["torch"])
    py, n = state["python"], state["numpy"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    np.random.set_state((n["kind"], n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    if "cuda" in state and torch.cuda.is_available():
        with contextlib.suppress(Exception):
            torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------------------------
# Which checkpoint, and does it fit
# --------------------------------------------------------------------------------------------
def resume_path(resume, fresh: bool, last_path: Path) -> str | None:
    """The checkpoint a run resumes from: ``resume`` None resumes from ``last_path`` when it
    exists (unless ``fresh``), True requires it, a path names the checkpoint."""
    if isinstance(resume, str):
        if not os.path.isfile(resume):
            raise FileNotFoundError(f"--resume: checkpoint {resume} does not exist")
        return resume
    if resume:
        if not last_path.is_file():
            raise FileNotFoundError(f"--resume: {last_path} does not exist (nothing to resume); drop --resume "
                                    "to start a new run")
        return str(last_path)
    if not fresh and last_path.is_file():
        return str(last_path)
    return None


def check_resume_compatible(ckpt: dict, net, exp, path: str) -> None:
    """Raise naming every key where the checkpoint's model or config differs from this run's."""
    problems = []
    spec = model_spec(net)
    old = ckpt.get("model", {})
    if old.get("name") != spec["name"]:
        problems.append(f"model: checkpoint {old.get('name')!r}, now {spec['name']!r}")
    else:
        ok, nk = old.get("kwargs", {}), spec["kwargs"]
        for k in sorted(set(ok) | set(nk)):
            if ok.get(k) != nk.get(k):
                problems.append(f"model.{k}: checkpoint {ok.get(k)!r}, now {nk.get(k)!r}")
    old_cfg = flatten(ckpt.get("config") or {})
    new_cfg = flatten(exp.to_dict())
    for k in sorted(set(old_cfg) | set(new_cfg)):
        if k in RESUME_SAFE_KEYS or k.startswith(RESUME_SAFE_PREFIXES):
            continue
        if old_cfg.get(k) != new_cfg.get(k):
            problems.append(f"{k}: checkpoint {old_cfg.get(k)!r}, now {new_cfg.get(k)!r}")
    if problems:
        shown = "; ".join(problems[:12]) + (f"; ... ({len(problems)} in all)" if len(problems) > 12 else "")
        raise ConfigError(f"cannot resume from {path}: it was made by another model or config. Mismatched keys: "
                          f"{shown}. Use --fresh to start over, or another experiment.name / output_dir.")


def load_resume_checkpoint(path: str, net, exp, world: int) -> dict:
    """The training checkpoint at ``path``, checked to fit this run (model, config, and the number
    of processes when it stopped mid-epoch)."""
    ckpt = load_checkpoint(path, map_location="cpu")
    missing = [k for k in TRAINING_STATE if k not in ckpt]
    if missing:
        raise ConfigError(f"cannot resume from {path}: it is not a training checkpoint (no {missing}); "
                          "resume from last.pt (best.pt and exported files hold the model only)")
    check_resume_compatible(ckpt, net, exp, path)
    if ckpt.get("batch", 0) and ckpt.get("world_size", 1) != world:
        raise ConfigError(f"cannot resume mid-epoch from {path}: it ran on {ckpt.get('world_size')} "
                          f"processes, this run has {world} (the data order differs); resume from an "
                          "epoch-end checkpoint or use the same number of processes")
    return ckpt


# --------------------------------------------------------------------------------------------
# The output folder: a fresh run replaces the previous one only once it has a checkpoint
# --------------------------------------------------------------------------------------------
REPLACED = ".replaced"   # the previous run's outputs while a fresh run in the folder has no checkpoint yet


def _run_outputs(out_dir: Path) -> list[Path]:
    """A run's outputs and what was derived from its checkpoints (search results)."""
    found = [out_dir / n for n in ("last.pt", "best.pt", "metrics.jsonl", "config.yaml", "tb")
             if (out_dir / n).exists()]
    return found + sorted(p for p in out_dir.glob("autoslim_*") if p.is_file())


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    elif p.exists() or p.is_symlink():
        p.unlink()


def stage_previous_run(out_dir: Path, log) -> bool:
    """Move the previous run's outputs aside (``<out>/.replaced/``) before a fresh run starts;
    True when there was one. Nothing is deleted before the fresh run has a checkpoint."""
    outputs = _run_outputs(out_dir)
    if not outputs:
        return False
    aside = out_dir / REPLACED
    aside.mkdir()
    for p in outputs:
        os.replace(p, aside / p.name)
    log(f"moved the previous run's outputs aside to {aside}/ ({', '.join(p.name for p in outputs)}): they come back "
        "if this run stops before its first checkpoint, and are removed once it has one")
    return True


def finish_replacing(out_dir: Path, log) -> None:
    """The fresh run has its first good checkpoint: the previous run's outputs go (saying which)."""
    aside = out_dir / REPLACED
    if not aside.is_dir():
        return
    names = sorted(p.name for p in aside.iterdir())
    shutil.rmtree(aside)
    searched = [n for n in names if n.startswith("autoslim_")]
    log(f"replaced the previous run in {out_dir}/: removed its " + ", ".join(n for n in names if n not in searched) +
        (f" and the search results of its supernet ({', '.join(searched)})" if searched else ""))
    children = sorted(str(p.relative_to(out_dir)) for pattern in ("*.pt", "*/*.pt") for p in out_dir.glob(pattern)
                      if p.name not in ("last.pt", "best.pt") and p.with_suffix(".json").is_file())
    if children:
        log(f"note: {', '.join(children)}: children exported from the previous supernet are kept (standalone models) "
            "but do not come from this run's checkpoints")


def restore_previous_run(out_dir: Path, log) -> None:
    """A fresh run stopped (or was killed) before its first checkpoint: its partial outputs go,
    the previous run's come back."""
    aside = out_dir / REPLACED
    if not aside.is_dir() or (out_dir / "last.pt").is_file():
        return
    for p in _run_outputs(out_dir):
        _remove(p)
    names = []
    for p in sorted(aside.iterdir()):
        os.replace(p, out_dir / p.name)
        names.append(p.name)
    aside.rmdir()
    log(f"restored the previous run's outputs in {out_dir}/ ({', '.join(names)}): the run that replaces them "
        "stopped before writing its first checkpoint")


def recover_output_dir(out_dir: Path, log) -> None:
    """What a killed run left: stale temporary files go; previous outputs a fresh run had moved
    aside come back (it had no checkpoint) or go (it had one, killed before removing them)."""
    if not out_dir.is_dir():
        return
    removed = clean_stale_temps(out_dir)
    if removed:
        log(f"removed temporary files left by a killed write in {out_dir}/: {', '.join(removed)}")
    if (out_dir / REPLACED).is_dir():
        if (out_dir / "last.pt").is_file():
            finish_replacing(out_dir, log)
        else:
            restore_previous_run(out_dir, log)
