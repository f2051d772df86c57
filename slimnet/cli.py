"""The ``slimnet`` command: one subcommand per tool (``slimnet <command> --help``).

Each subcommand lives in ``slimnet/commands/<name>.py`` with ``add_arguments(parser)`` and
``run(args) -> int``; ``tools/<name>.py`` are thin wrappers so ``python tools/<name>.py`` works.
"""
from __future__ import annotations

import argparse
import importlib
import re
import sys

COMMANDS = {
    "train": "train a supernet (or a fixed child) from a YAML experiment config",
    "calibrate": "compute BN statistics of widths / configs for a universal supernet",
    "autoslim": "AutoSlim greedy channel search for MACs / params budgets",
    "export": "export one width / config as a standalone model (state dict, TorchScript, ONNX)",
    "evaluate": "evaluate supernet widths / configs or an exported child on the test split",
    "profile": "MACs, params and latency of a model at a width or channel config",
    "trace": "trace any CNN (torchvision:NAME, timm:NAME, module:function): its slimmable and fixed channels",
}


def _module(name: str):
    return importlib.import_module(f"slimnet.commands.{name}")


def main(argv=None, prog: str = "slimnet") -> int:
    parser = argparse.ArgumentParser(prog=prog, description="Slimmable networks toolkit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        module = _module(name)
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    return run_tool(args._run, args)


def error_line(e: BaseException) -> str:
    """The one line a user error prints: an OSError from the system (full disk, read-only folder,
    a file in the way) described with its path; an error re-raised from a DataLoader worker by
    its original message; a KeyError without quotes."""
    from .utils import describe_os_error

    if isinstance(e, OSError) and e.errno is not None:
        return describe_os_error(e)
    msg = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
    if "Original Traceback" in msg:      # torch.utils.data's worker wrapper: keep the original message
        last = msg.strip().splitlines()[-1]
        msg = re.sub(r"^[\w.]*(Error|Exception): ", "", last)
    return " ".join(msg.split()) if "\n" in msg else msg


def run_tool(run, args) -> int:
    """Run a subcommand; expected user errors print one clear line instead of a traceback."""
    try:
        return int(run(args) or 0)
    except (ValueError, KeyError, RuntimeError, OSError) as e:
        if getattr(args, "debug", False):
            raise
        print(f"{args.command}: error: {error_line(e)}", file=sys.stderr)
        return 2


def tool_main(name: str) -> int:
    """Entry point of ``tools/<name>.py``: ``python tools/autoslim.py ARGS`` = ``slimnet autoslim ARGS``."""
    return main([name, *sys.argv[1:]], prog=f"tools/{name}.py")


if __name__ == "__main__":
    sys.exit(main())
