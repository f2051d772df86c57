#!/usr/bin/env python
"""`python tools/trace.py ...` = `slimnet trace ...` (see `--help`)."""
import os
import sys

# Replace this folder on the path with the repo root: tools/profile.py must not shadow the
# standard library's `profile` module, and slimnet imports from a plain clone.
sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from slimnet.cli import tool_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(tool_main("trace"))
