"""The `slimnet` command itself: subcommand dispatch and help."""
from slimnet.cli import main


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "profile" in capsys.readouterr().out
