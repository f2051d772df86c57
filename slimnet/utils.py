"""Small shared helpers: device choice, atomic file writes and safe loading."""
from __future__ import annotations

import contextlib
import errno
import io
import math
import os
import pickle
import re
import tempfile

import numpy as np
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
    for writers that look at it (ONNX). A full disk raises ``OSError(ENOSPC)`` naming ``path``
    (torch's own writers report it as ``RuntimeError: ... unexpected pos``)."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}{suffix}"
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise OSError(e.errno, os.strerror(e.errno), path) from None
        raise
    except RuntimeError as e:
        if "unexpected pos" in str(e) or "write failed" in str(e):
            raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} (or another write error: {str(e)[:80]})",
                          path) from None
        raise
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _atomic_write_bytes(path: str | os.PathLike, data) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write text atomically (fsynced before the rename)."""
    _atomic_write_bytes(path, text.encode("utf-8"))


def atomic_torch_save(obj, path: str | os.PathLike) -> None:
    """``torch.save`` atomically (fsynced before the rename). Serialized in memory first, so a
    full disk is an ordinary ``OSError(ENOSPC)``, not torch's writer error."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    _atomic_write_bytes(path, buf.getbuffer())


_TEMP = re.compile(r".+\.tmp(\d+)(\.[A-Za-z0-9]+)?")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_temps(folder: str | os.PathLike) -> list[str]:
    """Remove the temporary files ``atomic_path`` left in ``folder`` when its writer was killed
    (``last.pt.tmp<pid>``, ``autoslim_state.json.tmp<pid>``, ...): those whose process no longer
    runs. Returns the names removed."""
    removed = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            m = _TEMP.fullmatch(entry.name)
            if m and entry.is_file(follow_symlinks=False) and int(m.group(1)) != os.getpid() \
                    and not _pid_alive(int(m.group(1))):
                with contextlib.suppress(OSError):
                    os.remove(entry.path)
                    removed.append(entry.name)
    return removed


def check_output_dir(path: str | os.PathLike, what: str) -> None:
    """Raise ValueError (one line: what is wrong, what is accepted) unless ``path`` is a folder
    that exists or can be created, and can be written to. Creates nothing."""
    path = os.fspath(path)
    full = os.path.abspath(path)
    if os.path.exists(full) and not os.path.isdir(full):
        raise ValueError(f"{what} {path} is a file, not a folder; give a folder (it is created if missing)")
    parent = full
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ValueError(f"{what} {path} is under {parent}, which is a file, not a folder; give a folder path")
    try:  # a probe file: os.access does not know about read-only mounts, immutable folders or root
        fd, probe = tempfile.mkstemp(prefix=".slimnet-write-test", dir=parent)
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise ValueError(f"{what} {path} cannot be written: {parent} is not writable ({e.strerror}); choose "
                         "another folder") from None


def check_output_file(path: str | os.PathLike, what: str) -> None:
    """As :func:`check_output_dir` for a file to be written: not a folder, its folder writable."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ValueError(f"{what} {path} is a folder; give a file path")
    check_output_dir(os.path.dirname(os.path.abspath(path)), f"{what} {path}: its folder")


def describe_os_error(e: OSError) -> str:
    """One line for an OSError a user caused (a full disk, a read-only folder, a file in the way)."""
    name = e.filename if e.filename is not None else "a file"
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return (f"no space left on the device writing {name} ({e.strerror}); free some space and run again "
                "(files already there were left as they were: writes are atomic)")
    if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"cannot write {name}: {e.strerror} (read-only or not permitted); choose another folder"
    if e.errno == errno.ENOTDIR:
        return f"{name}: a part of this path is a file, not a folder"
    if e.errno == errno.EISDIR:
        return f"{name} is a folder; a file was expected"
    if e.errno == errno.ENOENT:
        return f"{name} does not exist"
    return f"{name}: {e.strerror or e}"


def json_safe(obj):
    """``obj`` with non-finite floats as None, so ``json.dumps(..., allow_nan=False)`` writes valid
    JSON (bare NaN / Infinity are not JSON)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


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
        if m is None:   # not a pickle stream at all: garbage, like the cases below
            raise ValueError(f"{path} could not be read as a {what} (corrupt, truncated or another kind of file)") \
                from None
        name = m.group(1)
        if name.startswith("numpy"):
            why = (f"it holds a pickled numpy object ({name}), as last.pt files of slimnet before checkpoints became "
                   "weights-only did; slimnet does not unpickle objects: start that run over with --fresh")
        else:
            why = f"it holds a pickled Python object ({name}) that a {what.split(' (')[0]} never contains"
        raise ValueError(f"{path} is not a {what}: {why}. It was not loaded (loading it could run code)") from None
    except Exception as e:  # corrupt, truncated or foreign files
        first = str(e).strip().splitlines()[0].split(". ")[0][:200] if str(e).strip() else type(e).__name__
        raise ValueError(f"{path} could not be read as a {what} (corrupt, truncated or another kind of file: "
                         f"{first})") from None


_PLAIN = (type(None), bool, int, float, str, bytes)


def plain(obj, where: str = "checkpoint"):
    """``obj`` with numpy scalars turned into Python numbers; TypeError (naming the entry) for
    anything ``torch.load(weights_only=True)`` would not read back."""
    if isinstance(obj, torch.Tensor) or type(obj) in _PLAIN:
        return obj
    if isinstance(obj, np.generic) and np.ndim(obj) == 0 and isinstance(obj.item(), _PLAIN):
        return obj.item()
    if isinstance(obj, dict):
        return {k: plain(v, f"{where}[{k!r}]") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return (list if isinstance(obj, list) else tuple)(plain(v, f"{where}[{i}]") for i, v in enumerate(obj))
    raise TypeError(f"{where}: {type(obj).__name__} cannot be stored in a slimnet checkpoint (tensors, numbers, "
                    "strings, lists, tuples and dicts only, so that it loads with weights_only=True)")
