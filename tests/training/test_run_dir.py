"""Options checked before any work, and --continue against another architecture or foreign checkpoints."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys

import pytest

from pix2pix_ilm.cli import main
from tests.faults import (
    CHILD_ENV,
    args_for_test,
    cli_error,
    copy_run,
    good_pairs,
    run_cli,
    sha256,
    start_paused_training,
    train_args,
    wait_for_file,
    write_folder,
)

pytestmark = pytest.mark.usefixtures("one_thread")


# -- options -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--crop-size", "64"], "--crop-size 64 is larger than --load-size 36"),
        (
            ["--netG", "unet_64"],
            "--netG unet_64 downsamples 6 times, so --crop-size must be a multiple of 64; got 32",
        ),
        (["--n-epochs", "-1"], "--n-epochs must be >= 0, got -1"),
        (["--n-epochs", "0"], "--n-epochs + --n-epochs-decay must be >= 1, got 0 + 0"),
        (["--batch-size", "0"], "--batch-size must be >= 1, got 0"),
        (["--lr", "0"], "--lr must be a positive number, got 0.0"),
        (["--lr", "1e39"], "--lr 1e+39 is too large"),
        (["--beta1", "1"], "--beta1 must be in [0, 1), got 1.0"),
        (["--continue", "--overwrite"], "--continue and --overwrite contradict each other"),
        (["--ilm-group-size", "3", "--netG-norm", "ilm_in"], "3"),
        (["--name", "../escape"], "--name must be a plain folder name"),
        (["--name", "a/b"], "--name must be a plain folder name"),
        (["--name", ".."], "--name must be a plain folder name"),
    ],
)
def test_impossible_options_are_one_line_errors_before_any_work(pairs, tmp_path, capsys, extra, words):
    root = write_folder(tmp_path / "data", "train", good_pairs(pairs, "train1"))
    ckpt = tmp_path / "nest" / "ckpt"
    msg = cli_error(capsys, *train_args(root, ckpt, "x", *extra))
    assert words in msg, msg
    assert not (tmp_path / "nest").exists() and not (tmp_path / "escape").exists()


def test_option_errors_in_a_real_process(pairs, tmp_path):
    root = write_folder(tmp_path / "data", "train", good_pairs(pairs, "train1"))
    done = run_cli(*train_args(root, tmp_path / "ckpt", "x", "--crop-size", "64"))
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        "pix2pix-ilm train: error: --crop-size 64 is larger than --load-size 36"
    ]
    # An unknown norm is refused by argparse itself, also in one line that lists the choices.
    done = run_cli(*train_args(root, tmp_path / "ckpt", "x", "--netG-norm", "weird"))
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert "invalid choice: 'weird'" in done.stderr and "ilm_in" in done.stderr
    assert not (tmp_path / "ckpt").exists()


def test_continue_with_another_architecture_and_foreign_checkpoints(trained, pairs, tmp_path, capsys):
    data, ckpt = copy_run(trained, tmp_path)
    before = sha256(ckpt / "base" / "latest.pt")
    msg = cli_error(
        capsys, *train_args(data, ckpt, "base", "--continue", "--ngf", "8", "--netG-norm", "ilm_in")
    )
    assert "--continue with a different architecture" in msg
    assert "ngf: 4 != 8" in msg and "netG_norm: 'instance' != 'ilm_in'" in msg
    # A latest.pt from a run of another architecture, dropped into this run.
    assert main(train_args(data, ckpt, "wide", "--ngf", "8")) == 0
    for suffix in ("", ".sha256"):
        shutil.copy(ckpt / "wide" / f"latest.pt{suffix}", ckpt / "base" / f"latest.pt{suffix}")
    msg = cli_error(capsys, *train_args(data, ckpt, "base", "--continue", "--n-epochs", "2"))
    assert "latest.pt does not match" in msg and "config.json" in msg and "ngf: 4 != 8" in msg
    msg = cli_error(capsys, *args_for_test(data, ckpt, tmp_path / "res"))
    assert "latest.pt does not match" in msg and "ngf: 4 != 8" in msg
    assert sha256(ckpt / "base" / "latest.pt") != before
    assert (
        main(args_for_test(data, ckpt, tmp_path / "res", "--epoch", "1")) == 0
    )  # epoch_1.pt is still usable


def test_ilm_variant_options_are_saved_resumed_and_used_by_test(trained, pairs, tmp_path):
    """--ilm-init / --ilm-variance land in config.json, --continue keeps them, test builds that layer;
    a config.json written before the options existed reads as today's defaults."""
    from pix2pix_ilm.models.norms import ILMNorm
    from pix2pix_ilm.training.inference import load_generator_for_inference

    data, ckpt = copy_run(trained, tmp_path)
    variant = ["--netG-norm", "ilm_in", "--ilm-init", "pytorch", "--ilm-variance", "unbiased"]
    assert main(train_args(data, ckpt, "authors", *variant)) == 0
    saved = json.loads((ckpt / "authors" / "config.json").read_text())["config"]
    assert (saved["ilm_init"], saved["ilm_variance"]) == ("pytorch", "unbiased")
    assert main(train_args(data, ckpt, "authors", "--continue", "--n-epochs", "2")) == 0
    saved = json.loads((ckpt / "authors" / "config.json").read_text())["config"]
    assert (saved["ilm_variance"], saved["n_epochs"]) == ("unbiased", 2)
    generator, config, _ = load_generator_for_inference(ckpt / "authors", device="cpu")
    layers = [m for m in generator.modules() if isinstance(m, ILMNorm)]
    assert layers and all(m.variance == "unbiased" for m in layers) and config.ilm_init == "pytorch"
    assert main(args_for_test(data, ckpt, tmp_path / "res", "--name", "authors")) == 0

    old = json.loads((ckpt / "base" / "config.json").read_text())
    for key in ("ilm_init", "ilm_variance"):
        old["config"].pop(key)
    (ckpt / "base" / "config.json").write_text(json.dumps(old))
    _, config, _ = load_generator_for_inference(ckpt / "base", device="cpu")
    assert (config.ilm_init, config.ilm_variance) == ("pix2pix", "biased")


def _speed_settings(run) -> tuple[str, bool, bool]:
    saved = json.loads((run / "config.json").read_text())["config"]
    return saved["precision"], saved["channels_last"], saved["compile"]


def test_resolved_speed_settings_are_saved_kept_by_continue_and_used_by_test(trained, tmp_path, monkeypatch):
    """config.json holds what --precision auto and an unset --channels-last became on the training device;
    --continue keeps those values (also on another device), typed flags win, and test reuses them."""
    from pix2pix_ilm.training import inference
    from pix2pix_ilm.training.checkpoint import load_checkpoint

    data, ckpt = copy_run(trained, tmp_path)
    run = ckpt / "base"
    assert _speed_settings(run) == ("fp32", False, False)  # trained on CPU with the automatic defaults

    payload = json.loads((run / "config.json").read_text())  # as a run trained on a GPU saves them
    payload["config"].update(precision="bf16", channels_last=True)
    (run / "config.json").write_text(json.dumps(payload))
    assert main(train_args(data, ckpt, "base", "--continue", "--n-epochs", "2")) == 0
    assert _speed_settings(run) == ("bf16", True, False)
    assert load_checkpoint(run / "latest.pt")["config"]["precision"] == "bf16"

    precisions = []
    real_translate = inference.translate

    def translate(generator, real_a, config, dropout):
        precisions.append(config.precision)
        return real_translate(generator, real_a, config, dropout)

    monkeypatch.setattr(inference, "translate", translate)
    assert main(args_for_test(data, ckpt, tmp_path / "res")) == 0
    assert main(args_for_test(data, ckpt, tmp_path / "res", "--precision", "fp32")) == 0
    assert precisions == ["bf16", "bf16", "fp32", "fp32"]  # two test images each

    typed = ["--continue", "--n-epochs", "3", "--precision", "fp32", "--no-channels-last"]
    assert main(train_args(data, ckpt, "base", *typed)) == 0
    assert _speed_settings(run) == ("fp32", False, False)
    typed = ["--continue", "--n-epochs", "4", "--channels-last", "--precision", "auto"]
    assert main(train_args(data, ckpt, "base", *typed)) == 0  # auto typed: resolved again, for the CPU
    assert _speed_settings(run) == ("fp32", True, False)


# -- one process per run folder ------------------------------------------------------------------------
def _start(*args: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "pix2pix_ilm", *args]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=CHILD_ENV)


def test_two_trainings_of_one_run_started_together_one_is_refused(pairs, tmp_path):
    root = write_folder(tmp_path / "data", "train", good_pairs(pairs, "train1", "train2"))
    ckpt = tmp_path / "ckpt"
    runs = [_start(*train_args(root, ckpt, "x")) for _ in range(2)]
    outcomes = sorted((run.wait(timeout=120), run.communicate()[1]) for run in runs)
    assert [code for code, _ in outcomes] == [0, 2], outcomes
    refusal = outcomes[1][1].strip().splitlines()
    assert len(refusal) == 1 and (
        "in use by another training process" in refusal[0] or "--continue" in refusal[0]
    )
    assert (ckpt / "x" / "latest.pt").is_file()


def test_a_running_training_holds_its_folder_and_a_killed_one_does_not(pairs, tmp_path):
    root = write_folder(tmp_path / "data", "train", good_pairs(pairs, "train1", "train2"))
    ckpt, lock = tmp_path / "ckpt", tmp_path / "ckpt" / ".x.lock"
    first = start_paused_training(train_args(root, ckpt, "x"), 1, tmp_path / "pause")  # holds still at step 1
    wait_for_file(tmp_path / "pause.paused", first)
    assert lock.is_file()
    second = run_cli(*train_args(root, ckpt, "x", "--overwrite"))
    assert second.returncode == 2
    assert second.stderr.strip().splitlines() == [
        f"pix2pix-ilm train: error: run folder {ckpt / 'x'} is in use by another training process "
        f"(pid {first.pid}); wait for it to end, or use another --name"
    ]
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    assert run_cli(*train_args(root, ckpt, "x", "--overwrite")).returncode == 0  # the kernel freed the lock


def test_continue_needs_only_the_name_and_says_where_it_resumes(trained, tmp_path, capsys):
    data, ckpt = copy_run(trained, tmp_path)
    base = ["train", "--name", "base", "--checkpoints-dir", str(ckpt), "--continue"]
    assert main([*base, "--n-epochs-decay", "1"]) == 0  # dataroot, network, ... from config.json
    out = capsys.readouterr().out
    assert f"resuming {ckpt / 'base' / 'latest.pt'} at epoch 2/2, batch 1 (iteration 2)" in out
    assert json.loads((ckpt / "base" / "config.json").read_text())["config"]["dataroot"] == str(data)

    assert main(base) == 0  # finished: nothing is trained, and the way to train longer is named
    out = capsys.readouterr().out
    assert "nothing left to train" in out and "finished all 2 epochs (iteration 4)" in out
    assert "--n-epochs" in out and "finished 4 iterations" not in out


def test_a_new_run_needs_a_dataroot(tmp_path, capsys):
    msg = cli_error(capsys, "train", "--name", "x", "--checkpoints-dir", str(tmp_path / "ckpt"))
    assert msg == "pix2pix-ilm train: error: --dataroot is required (a folder with <phase>/ subfolders)"


def test_the_run_folder_is_checked_before_any_work_and_never_holds_the_data(trained, tmp_path, capsys):
    data, ckpt = trained
    (tmp_path / "file").write_text("mine")
    for where, expected in (
        (tmp_path / "file", "is a file, not a folder"),
        (tmp_path / "file" / "ckpt", "which is a file"),
    ):
        msg = cli_error(capsys, *train_args(data, where, "new"))
        assert "--checkpoints-dir" in msg and expected in msg, msg
    assert (tmp_path / "file").read_text() == "mine"
    # A run folder that holds its own data: --overwrite would delete it, training would write into it.
    run = tmp_path / "ckpt" / "run"
    shutil.copytree(data, run / "data")
    before = {p.name: sha256(p) for p in (run / "data" / "train").iterdir()}
    for extra in ([], ["--overwrite"], ["--continue"]):
        msg = cli_error(capsys, *train_args(run / "data", tmp_path / "ckpt", "run", *extra))
        assert "holds the input" in msg or "--continue: no checkpoint" in msg, msg
    # A run folder that is the data's phase folder: nothing written into it.
    msg = cli_error(capsys, *train_args(run / "data", run / "data", "train"))
    assert "is the input" in msg and "train" in msg
    assert {p.name: sha256(p) for p in (run / "data" / "train").iterdir()} == before
    assert sorted(p.name for p in run.iterdir()) == ["data"]
