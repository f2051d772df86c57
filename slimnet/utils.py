"""Small shared helpers: device choice, atomic file writes and safe loading."""
from __future__ import annotations

import contextlib
import os
import pickle
import re

import torch


def pick_device(name: str | None = None) -> torch.device:
    """``name`` ('cpu', 'cuda', 'cuda:1', ...) or, when None/'auto', CUDA if available else CPU."""
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ValueError(f"unknown device {name!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N' ({e})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available here; use 'cpu' or 'auto'")
    return device


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ""):
    """Yield a temporary path beside ``path``; when the block succeeds it is renamed over
    ``path`` (readers see the old file or the new one, never half of one), when it raises the
    temporary file is removed and ``path`` is left as it was. ``suffix`` keeps a file extension
    for writers that look at it (ONNX)."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}{suffix}"
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write text atomically (fsynced before the rename)."""
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def atomic_torch_save(obj, path: str | os.PathLike) -> None:
    """``torch.save`` atomically (fsynced before the rename)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())


def safe_torch_load(path: str | os.PathLike, what: str, map_location="cpu", hint: str = ""):
    """``torch.load(path, weights_only=True)`` with one-line errors: a folder, a missing file,
    garbage or a truncated file, and a pickle payload (refused before anything in it runs: only
    tensors, numbers, strings and containers are unpickled) all raise ValueError /
    FileNotFoundError naming ``path`` and ``what`` was expected."""
    if os.path.isdir(path):
        raise ValueError(f"{path} is a folder; give the {what}" + (f" ({hint})" if hint else ""))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist (expected a {what})")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        m = re.search(r"GLOBAL ([\w.]+)", str(e))
        name = m.group(1) if m else None
        if name and name.startswith("numpy"):
            why = (f"it holds a pickled numpy object ({name}), as last.pt files of slimnet before checkpoints became "
                   "weights-only did; slimnet does not unpickle objects: start that run over with --fresh")
        elif name:
            why = f"it holds a pickled Python object ({name}) that a {what.split(' (')[0]} never contains"
        else:
            why = f"it holds pickled data that a {what.split(' (')[0]} never contains"
        raise ValueError(f"{path} is not a {what}: {why}. It was not loaded (loading it could run code)") from None
    except Exception as e:  # corrupt, truncated or foreign files
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise ValueError(f"{path} could not be read as a {what} (corrupt, truncated or another kind of file: "
                         f"{first})") from None
