"""Every subcommand's --help renders, --version answers, a bare call shows the commands; typed options."""

from __future__ import annotations

import dataclasses
import json

import pytest

from pix2pix_ilm import __version__
from pix2pix_ilm.cli import main
from pix2pix_ilm.training.checkpoint import load_checkpoint
from tests.faults import trained_run

COMMANDS = ("train", "test", "eval", "compare", "table6", "models", "visdom", "bench")


@pytest.mark.parametrize("command", COMMANDS)
def test_help_of_every_command(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: pix2pix-ilm {command}") and "--" in out


def test_train_help_explains_the_automatic_speed_settings(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--precision {auto,fp32,bf16}" in out and "--channels-last, --no-channels-last" in out
    assert "auto: bf16 on CUDA GPUs with native bf16 (compute capability 8.0+" in out
    assert "fp32 on older GPUs and on the CPU" in out and "config.json records the resolved value" in out


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


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize(
    "typed", [["--n-epochs-dec", "1"], ["--n-epochs-decay=1"], ["--n_epochs_decay", "1"]]
)
def test_continue_takes_options_typed_in_any_spelling(pairs, tmp_path, typed):
    """--continue keeps the saved options except those typed: abbreviated, with '=', or the junyanz spelling."""
    root, ckpt, run, _ = trained_run(pairs, tmp_path)  # 1 epoch, --n-epochs-decay 0
    args = ["train", "--dataroot", str(root), "--name", "run", "--checkpoints-dir", str(ckpt), "--continue"]
    assert main([*args, *typed, "--no-progress"]) == 0
    assert json.loads((run / "config.json").read_text())["config"]["n_epochs_decay"] == 1
    assert load_checkpoint(run / "latest.pt")["counters"] == {"epoch": 3, "batches_done": 0, "iteration": 4}


def test_a_file_the_system_refuses_is_one_line_naming_it(monkeypatch, capsys):
    from pix2pix_ilm import cli

    def refused(config, explicit):
        raise PermissionError(13, "Permission denied", "/data/out/model.onnx")

    monkeypatch.setitem(cli.COMMANDS, "models", dataclasses.replace(cli.COMMANDS["models"], run=refused))
    assert main(["models"]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err.startswith("pix2pix-ilm models: error: /data/out/model.onnx: Permission denied")
        and "\n" not in err
    )

    def bug(config, explicit):
        raise OSError("no file involved: a bug keeps its traceback")

    monkeypatch.setitem(cli.COMMANDS, "models", dataclasses.replace(cli.COMMANDS["models"], run=bug))
    with pytest.raises(OSError, match="a bug keeps its traceback"):
        main(["models"])
