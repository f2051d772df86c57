"""The quickstart script itself, in its reduced mode, so it cannot silently rot."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.fashion_mnist]

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_quickstart_smoke(tmp_path):
    out = tmp_path / "qs"
    env = {**os.environ, "QUICKSTART_SMOKE": "1", "QUICKSTART_OUT": str(out), "SLIMNET_SKIP_INSTALL": "1",
           "SLIMNET_PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", "scripts/quickstart.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for name in ("best.pt", "last.pt", "config.yaml", "metrics.jsonl", "autoslim_9.5M.json", "autoslim_9M.json",
                 "autoslim_trajectory.csv", "evaluation.json", "child/child.pt", "child/child.json",
                 "child/child.ts", "child/child.onnx"):
        assert (out / name).exists(), name
    for budget, limit in (("9.5M", 9.5e6), ("9M", 9e6)):
        assert json.loads((out / f"autoslim_{budget}.json").read_text())["macs"] <= limit
    assert "Done. Files:" in proc.stdout
