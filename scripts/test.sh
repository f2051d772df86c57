#!/usr/bin/env bash
# Set up .venv (reused when present), lint (ruff: pyproject.toml's rules) and run the test suite.
# Extra arguments go to pytest.
set -euo pipefail
source "$(dirname "$0")/setup_env.sh"
ensure_fashion_mnist || echo "[test] Fashion-MNIST not installed: tests that need the real data are skipped"
# One thread per process: several tests start 2-process DDP runs or subprocesses on a 2-core machine.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
"$PY" -m ruff check slimnet tests bench tools
# The slowest tests are listed so the suite's 10-minute budget on 2 cores stays visible.
"$PY" -m pytest -q --durations=15 "$@"
