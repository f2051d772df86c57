"""Behaviour unchanged, bit for bit: the golden run (tests/golden/golden_run.py) reproduces every
recorded fingerprint: weights, optimizer and RNG states, losses, the search trajectory and its
outputs, the exported child and the evaluations."""
import json
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden"))
import golden_run  # noqa: E402


@pytest.mark.slow
def test_golden_run_reproduces_bit_for_bit(tmp_path):
    with open(golden_run.GOLDEN) as f:
        golden = json.load(f)
    if golden["torch"] != torch.__version__:
        pytest.skip(f"golden run recorded with torch {golden['torch']}, this is {torch.__version__}: kernels "
                    f"differ in the last bits across versions; re-record on a known-good commit with "
                    f"`python tests/golden/golden_run.py --record`")
    got = golden_run.run(str(tmp_path))
    assert got.keys() == golden["fingerprints"].keys()
    changed = [k for k in got if got[k] != golden["fingerprints"][k]]
    assert not changed, f"behaviour changed in: {', '.join(changed)}"
