"""Subcommands of the ``slimnet`` CLI (see slimnet/cli.py)."""
