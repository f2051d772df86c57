"""Behaviour unchanged, bit for bit: the golden run (tests/golden/golden_run.py) reproduces every
recorded fingerprint: weights, optimizer and RNG states, losses, the search trajectory and its
outputs, the exported child and the evaluations. It runs in its own process, whose torch and oneDNN
are pinned to their AVX2 kernels, so AVX2 and AVX-512 machines compute the same bits."""
import json
import os
import subprocess
import sys

import pytest
import torch

GOLDEN_RUN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden", "golden_run.py")


@pytest.mark.slow
def test_golden_run_reproduces_bit_for_bit(tmp_path):
    with open(os.path.join(os.path.dirname(GOLDEN_RUN), "golden_run.json")) as f:
        golden = json.load(f)
    if golden["torch"] != torch.__version__:
        pytest.skip(f"golden run recorded with torch {golden['torch']}, this is {torch.__version__}: kernels "
                    f"differ in the last bits across versions; re-record on a known-good commit with "
                    f"`python tests/golden/golden_run.py --record`")
    if torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        pytest.skip(f"the golden run pins torch's AVX2 kernels; this CPU runs {torch.backends.cpu.get_cpu_capability()}")
    out = tmp_path / "fingerprints.json"
    proc = subprocess.run([sys.executable, GOLDEN_RUN, "--out", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(out.read_text())["fingerprints"]
    assert got.keys() == golden["fingerprints"].keys()
    changed = [k for k in got if got[k] != golden["fingerprints"][k]]
    assert not changed, f"behaviour changed in: {', '.join(changed)}"
