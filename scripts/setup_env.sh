# Sourced by scripts/test.sh and scripts/quickstart.sh: a ready virtualenv in .venv and the data.
#
# .venv is a link to a venv kept outside the clone (SLIMNET_VENV, default
# ~/.cache/slimnet/venv-pyX.Y) so fresh clones on the same machine reuse the multi-GB torch
# install; a fresh machine creates it. Set SLIMNET_VENV=.venv-local style paths to opt out.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if [ "${SLIMNET_SKIP_INSTALL:-0}" = 1 ]; then
    # Used by the test suite to run the scripts with the interpreter it already runs under.
    PY="${SLIMNET_PYTHON:-python3}"
else
    PYTHON_BIN="${PYTHON:-python3}"
    PYVER="$("$PYTHON_BIN" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
    VENV_DIR="${SLIMNET_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/slimnet/venv-py$PYVER}"

    if [ ! -x "$VENV_DIR/bin/python" ]; then
        echo "[setup] creating virtualenv $VENV_DIR"
        mkdir -p "$(dirname "$VENV_DIR")"
        "$PYTHON_BIN" -m venv "$VENV_DIR"
    fi
    if [ "$(readlink -f .venv 2>/dev/null)" != "$(readlink -f "$VENV_DIR")" ]; then
        if [ -e .venv ] && [ ! -L .venv ]; then
            echo "[setup] .venv exists and is not a link to $VENV_DIR; using $VENV_DIR directly"
        else
            ln -sfn "$VENV_DIR" .venv
        fi
    fi
    PY="$VENV_DIR/bin/python"
    # Quiet when everything is already installed; the first install of torch takes a few minutes.
    echo "[setup] installing slimnet and its dependencies into $VENV_DIR"
    "$PY" -m pip install --disable-pip-version-check -q -e ".[dev,onnx,plot]"
fi

FMNIST_SYSTEM=/usr/share/datasets/fashion-mnist
ensure_fashion_mnist() {
    if [ -f "$FMNIST_SYSTEM/train-images-idx3-ubyte.gz" ]; then
        return 0
    fi
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        echo "[setup] installing Fashion-MNIST (Debian package dataset-fashion-mnist)"
        (apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
            || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1; }) \
            || echo "[setup] apt-get could not install dataset-fashion-mnist"
    fi
    [ -f "$FMNIST_SYSTEM/train-images-idx3-ubyte.gz" ]
}
