#!/usr/bin/env bash
# Set up .venv (reused when present) and run the test suite. Extra arguments go to pytest.
set -euo pipefail
source "$(dirname "$0")/setup_env.sh"
ensure_fashion_mnist || echo "[test] Fashion-MNIST not installed: tests that need the real data are skipped"
"$PY" -m pytest -q "$@"
