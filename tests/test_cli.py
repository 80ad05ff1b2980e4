"""Every subcommand's --help renders, --version answers, and a bare call shows the commands."""

from __future__ import annotations

import pytest

from pix2pix_ilm import __version__
from pix2pix_ilm.cli import main

COMMANDS = ("train", "test", "eval", "table6", "models", "visdom", "bench")


@pytest.mark.parametrize("command", COMMANDS)
def test_help_of_every_command(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: pix2pix-ilm {command}") and "--" in out


def test_version_and_overview(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and __version__ in capsys.readouterr().out
    assert main([]) == 2
    out = capsys.readouterr().out
    assert all(command in out for command in COMMANDS)


def test_models_table(capsys):
    assert main(["models", "--netG", "unet_64", "--ngf", "8", "--ndf", "8"]) == 0
    out = capsys.readouterr().out
    assert "| ilm_in |" in out and "| instance |" in out and "ILM increment" in out
