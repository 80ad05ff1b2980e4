"""Table 6 end to end on tiny runs: two rows x two seeds trained two at a time, both splits, paired
statistics, eval's format, resumed; the paper's plan as a dry run; a failed run and Ctrl+C stop the others."""

from __future__ import annotations

import json
import math
import os
import shlex
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest

from pix2pix_ilm.cli import build_parser, main
from pix2pix_ilm.config import TrainConfig
from pix2pix_ilm.errors import UsageError
from pix2pix_ilm.evaluation import table6, table6_jobs
from pix2pix_ilm.evaluation.options import TABLE6_PRESETS, TABLE6_ROWS
from pix2pix_ilm.evaluation.table6 import CONFIGURATIONS, PAPER_TABLE6, PRESETS, parse_overrides
from pix2pix_ilm.evaluation.table6_report import t_interval, verdict
from pix2pix_ilm.flags import dataclass_from_args
from tests.faults import cli_error


def tiny(**changes: object) -> list[str]:
    """Tiny runs on train/1-3 as ``--set`` flags, each option once, with ``changes``."""
    options = dict(netG="unet_32", ngf=4, ndf=4, load_size=36, crop_size=32, n_epochs=1, n_epochs_decay=0)
    options |= {"subset": "0:3", **changes}
    return [*(f"--set={key}={value}" for key, value in options.items()), "--no-progress"]


TINY = tiny()
LONG = tiny(n_epochs=2000)  # runs that are still training when the test stops them


def tiny_facades(facades_dir: Path, root: Path) -> Path:
    """train/1..202 and test/1..2 (links to four real pairs): enough for both evaluation splits."""
    for phase, count in (("train", 202), ("test", 2)):
        (root / phase).mkdir(parents=True)
        for n in range(1, count + 1):
            (root / phase / f"{n}.jpg").symlink_to(facades_dir / phase / f"{1 + (n - 1) % 4}.jpg")
    return root


@pytest.fixture
def children(monkeypatch) -> list:
    """The training processes table6 starts, in order."""
    started, real_start = [], table6_jobs._start

    def start(*args):
        child = real_start(*args)
        started.append(child.process)
        return child

    monkeypatch.setattr(table6_jobs, "_start", start)
    return started


def test_tiny_table6_two_jobs_seeds_both_splits_paired_statistics_and_resume(
    facades_dir: Path, lpips_backbone: Path, tmp_path: Path, capsys, monkeypatch, children
):
    from pix2pix_ilm.evaluation import evaluate

    devices = []
    real_resolve = evaluate.resolve_device
    monkeypatch.setattr(evaluate, "resolve_device", lambda d: devices.append(d) or real_resolve(d))
    data = tiny_facades(facades_dir, tmp_path / "facades")
    out = tmp_path / "table6"
    args = ["table6", "--dataroot", str(data), "--out", str(out), "--eval-split", "both", "--eval-limit", "2"]
    args += ["--configs", "in_in", "ilmin_in_authors", "--lpips-backbone", str(lpips_backbone), "--jobs", "2"]
    assert main([*args, "--seeds", "0", "1", *TINY]) == 0
    err = capsys.readouterr().err
    assert len(children) == 4 and all(child.returncode == 0 for child in children)
    assert err.count(": training (log: ") == 4 and err.count(": trained in ") == 4
    assert all(child.args[1:4] == ["-m", "pix2pix_ilm", "train"] for child in children)
    assert "finished 3 iterations" in (out / "logs" / "ilmin_in_authors_seed1.log").read_text()
    summary = json.loads((out / "table6.json").read_text())
    assert (
        list(summary["tables"]) == ["paper", "test"] and len(summary["runs"]) == 4 and not summary["missing"]
    )
    assert summary["jobs"] == 2 and all(run["train_seconds"] > 0 for run in summary["runs"])
    saved = json.loads((out / "checkpoints" / "ilmin_in_authors_seed1" / "config.json").read_text())["config"]
    assert (saved["ilm_init"], saved["ilm_variance"], saved["netD_norm"]) == (
        "pytorch",
        "unbiased",
        "instance",
    )
    assert (saved["netG"], saved["seed"], saved["subset"]) == ("unet_32", 1, "0:3")
    for rows in summary["tables"].values():
        base, authors = rows
        assert (base["config"], authors["config"]) == ("in_in", "ilmin_in_authors")
        assert (
            authors["paper"] == PAPER_TABLE6["ilmin_in"] and base["n_images"] == 2 and base["seeds"] == [0, 1]
        )
        for metric in ("rmse", "rmse_rgb", "lpips", "ssim", "psnr", "mae"):
            values = list(base["metrics"][metric]["per_seed"].values())
            assert base["metrics"][metric]["mean"] == pytest.approx(sum(values) / 2)
            assert base["metrics"][metric]["std"] == pytest.approx(abs(values[0] - values[1]) / math.sqrt(2))
        for metric in ("rmse", "lpips"):
            paired = authors["paired"][metric]
            diffs = [
                authors["metrics"][metric]["per_seed"][s] - base["metrics"][metric]["per_seed"][s]
                for s in "01"
            ]
            assert list(paired["per_seed"].values()) == pytest.approx(diffs)
            half = math.tan(0.475 * math.pi) * abs(diffs[0] - diffs[1]) / 2  # t(0.975, 1 dof) * s / sqrt(2)
            assert paired["ci"] == pytest.approx([sum(diffs) / 2 - half, sum(diffs) / 2 + half], rel=1e-4)
            inside = paired["ci"][0] <= 0 <= paired["ci"][1]
            assert (paired["verdict"] == "within seed noise") == inside
        rmse_rgb = base["metrics"]["rmse_rgb"]["per_seed"]["0"]
        assert rmse_rgb == pytest.approx(math.sqrt(3) * base["metrics"]["rmse"]["per_seed"]["0"], rel=1e-9)
    table = (out / "table6.md").read_text()
    assert "### Split `paper`" in table and "### Split `test`" in table and "108.17" in table
    assert "ILM+IN / IN, authors' ILM code vs IN / IN (n = 2 paired seeds, df = 1, 2 images each)" in table
    assert "preset `quick`, netG=unet_32, ngf=4, ndf=4," in table.splitlines()[0]  # every override named
    assert "**Little evidence: 2 seed(s) × 2 images.**" in table
    assert "(2 training runs at a time)" in table
    samples = {p.name for p in out.glob("samples*.png")}
    assert samples == {"samples.png", "samples_in_in.png", "samples_ilmin_in_authors.png"}
    assert (out / "table6.png").is_file()

    # One format, one code path: table6's metrics.json is the one `eval` writes, LPIPS on --device.
    result_dir = out / "results_train_200-400" / "in_in_seed0" / "train_latest"
    mine = json.loads((result_dir / "metrics.json").read_text())
    assert "auto" in devices and mine["settings"]["lpips"]["device"] == str(real_resolve("auto"))
    scores = ["eval", "--results-dir", str(result_dir), "--metrics", ",".join(mine["metrics"])]
    assert main([*scores, "--json", str(tmp_path / "e.json"), "--lpips-backbone", str(lpips_backbone)]) == 0
    assert json.loads((tmp_path / "e.json").read_text()) == mine
    capsys.readouterr()

    # Resumable, and scoring without training: a run that lost its final checkpoint and scores continues
    # from latest.pt; with --no-train a seed never trained is listed as missing.
    for name in ("epoch_1.pt", "table6_timing.json"):  # as if stopped before the end of its last epoch
        (out / "checkpoints" / "ilmin_in_authors_seed1" / name).unlink()
    (out / "results" / "ilmin_in_authors_seed1" / "test_latest" / "metrics.json").unlink()
    assert main([*args, "--seeds", "0", "1", *TINY]) == 0
    err = capsys.readouterr().err
    assert err.count("trained already, skipping training") == 3 and "ilmin_in_authors_seed1: resuming" in err
    assert "--continue" in children[-1].args and len(children) == 5
    assert main([*args, "--seeds", "0", "1", "2", "--no-train", *TINY]) == 0
    again = json.loads((out / "table6.json").read_text())
    assert again["missing"] == ["in_in_seed2", "ilmin_in_authors_seed2"]
    assert again["tables"]["paper"][0]["metrics"] == summary["tables"]["paper"][0]["metrics"]
    assert not (out / "checkpoints" / "in_in_seed2").exists() and len(children) == 5

    # A finished run is reused only under the options it was trained with.
    wider = [*args, "--seeds", "0", *tiny(ngf=8)]
    assert main(wider) == 2
    assert "ngf: requested 8, trained 4; use --retrain" in capsys.readouterr().err and len(children) == 5
    assert main([*wider, "--retrain"]) == 0
    assert (
        len(children) == 7
        and capsys.readouterr().err.count("trained with other options, training again") == 2
    )
    saved = json.loads((out / "checkpoints" / "in_in_seed0" / "config.json").read_text())["config"]
    assert saved["ngf"] == 8


def test_dry_run_prints_the_paper_plan_and_writes_nothing(tmp_path: Path, capsys):
    out, data = tmp_path / "table6_paper", tmp_path / "facades"
    command = ["table6", "--preset", "paper", "--device", "cuda", "--jobs", "9", "--seeds", "0", "1", "2"]
    command += ["--eval-split", "both", "--out", str(out), "--dataroot", str(data), "--dry-run"]
    msg = cli_error(capsys, *command)  # a --dataroot that is not there: said now, not when the table runs
    assert f"--dataroot {data} not found" in msg
    (data / "train").mkdir(parents=True)
    assert main(command) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "table6 plan: preset paper, 9 runs, 9 at a time"
    assert lines[1].startswith("device cuda, ") and lines[1].endswith("on paper and test, test dropout on")
    options = json.loads(lines[2].split("options of every run: ")[1])
    assert options == {**PRESETS["paper"], **table6.COMMON} and options["netG"] == "unet_256"
    runs = [line for line in lines if line.startswith("- ")]
    assert [line.split(":")[0] for line in runs] == [
        f"- {row}_seed{seed}" for row in ("in_in", "ilmin_in", "ilmin_ilmin") for seed in (0, 1, 2)
    ]
    assert all(line.endswith(": to train") for line in runs)
    commands = [shlex.split(line) for line in lines if line.startswith("  ")]
    parser = build_parser()
    rows = [row for row in ("in_in", "ilmin_in", "ilmin_ilmin") for _ in range(3)]
    for argv, row, seed in zip(commands, rows, [0, 1, 2] * 3, strict=True):
        assert argv[1:4] == ["-m", "pix2pix_ilm", "train"]
        config = dataclass_from_args(TrainConfig, parser.parse_args(argv[3:]))
        assert (config.name, config.seed, config.device) == (f"{row}_seed{seed}", seed, "cuda")
        assert (config.dataroot, config.checkpoints_dir) == (str(data), str(out / "checkpoints"))
        assert {key: getattr(config, key) for key in options} == options
        assert config.netG_norm == ("instance" if row == "in_in" else "ilm_in")
        assert not config.continue_train and not config.overwrite
    assert not out.exists() and [p.name for p in data.rglob("*")] == ["train"]


def test_a_failed_run_ends_the_command_and_stops_the_others(
    facades_dir: Path, lpips_backbone: Path, tmp_path: Path, capsys, children
):
    data = tiny_facades(facades_dir, tmp_path / "facades")
    out = tmp_path / "table6"
    broken = out / "checkpoints" / "ilmin_in_seed0"
    broken.mkdir(parents=True)
    (broken / "latest.pt").write_bytes(b"not a checkpoint")  # resumed, and its config.json is missing
    args = ["table6", "--dataroot", str(data), "--out", str(out), "--configs", "in_in", "ilmin_in"]
    assert main([*args, "--lpips-backbone", str(lpips_backbone), "--jobs", "2", *LONG]) == 2
    err = capsys.readouterr().err
    assert "pix2pix-ilm table6: error: ilmin_in_seed0: training failed with exit code 2" in err
    assert "pix2pix-ilm train: error: no trained run at" in err  # the end of the run's log
    assert len(children) == 2 and all(child.poll() is not None for child in children)
    assert children[0].returncode in (-signal.SIGTERM, 128 + signal.SIGTERM)  # stopped, not finished
    assert not (out / "table6.json").exists()


def test_ctrl_c_stops_every_run_which_saves_its_checkpoint(
    facades_dir: Path, lpips_backbone: Path, tmp_path: Path, capsys, children
):
    data = tiny_facades(facades_dir, tmp_path / "facades")
    out = tmp_path / "table6"
    logs = [out / "checkpoints" / f"{row}_seed0" / "loss_log.jsonl" for row in ("in_in", "ilmin_in")]

    returned = threading.Event()

    def interrupt_once_both_train() -> None:
        deadline = time.monotonic() + 600  # only stops a hung test
        while time.monotonic() < deadline and not returned.is_set():
            if all(log.is_file() and log.read_text() for log in logs):
                os.kill(os.getpid(), signal.SIGINT)  # as Ctrl+C in a terminal: this process only
                return
            time.sleep(0.1)

    threading.Thread(target=interrupt_once_both_train, daemon=True).start()
    args = ["table6", "--dataroot", str(data), "--out", str(out), "--configs", "in_in", "ilmin_in"]
    code = main([*args, "--lpips-backbone", str(lpips_backbone), "--jobs", "2", *LONG])
    returned.set()
    assert code == 130
    assert "pix2pix-ilm table6: interrupted" in capsys.readouterr().err
    assert [child.returncode for child in children] == [128 + signal.SIGTERM] * 2
    for log in logs:
        assert (log.parent / "latest.pt").is_file()
        assert "SIGTERM: stopped after iteration" in (out / "logs" / f"{log.parent.name}.log").read_text()


def test_verdicts():
    assert verdict(t_interval([1.0, 1.2, 0.9]), higher_is_better=True) == "gain"
    assert verdict(t_interval([1.0, 1.2, 0.9]), higher_is_better=False) == "loss"
    assert verdict(t_interval([1.0, -1.2, 0.9]), higher_is_better=False) == "within seed noise"
    assert verdict(t_interval([0.5]), higher_is_better=True) == "one seed, no interval"


def test_rows_and_presets_are_the_options_choices():
    assert tuple(row.slug for row in CONFIGURATIONS) == TABLE6_ROWS and set(PRESETS) == set(TABLE6_PRESETS)


def test_overrides_are_typed_and_checked():
    assert parse_overrides(("n_epochs=3", "precision=bf16", "no_flip=true", "subset=none")) == {
        "n_epochs": 3,
        "precision": "bf16",
        "no_flip": True,
        "subset": None,
    }
    assert parse_overrides(("channels_last=false",)) == {"channels_last": False}
    assert parse_overrides(("channels_last=auto", "precision=auto")) == {
        "channels_last": None,
        "precision": "auto",
    }
    with pytest.raises(UsageError, match="KEY=VALUE .*; did you mean n_epochs"):
        parse_overrides(("epochs=3",))
    with pytest.raises(UsageError, match="--set: channels_last given twice"):
        parse_overrides(("channels_last=auto", "channels_last=false"))
    with pytest.raises(UsageError, match="--set n_epochs"):
        parse_overrides(("n_epochs=many",))
    with pytest.raises(UsageError, match="--set precision: expected one of auto, fp32, bf16"):
        parse_overrides(("precision=fp16",))


def test_the_rows_norms_are_not_set_for_every_row(tmp_path, capsys):
    args = ["table6", "--dry-run", "--dataroot", str(tmp_path), "--out", str(tmp_path / "out")]
    assert main([*args, "--set", "netD_norm=batch"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "pix2pix-ilm table6: error: --set netD_norm: table6's rows set the norms (--configs); compare takes rows "
        "of your own"
    )


def test_scores_along_training_and_rebuilt_from_saved_scores_alone(
    facades_dir: Path, lpips_backbone: Path, tmp_path: Path, capsys
):
    data = tiny_facades(facades_dir, tmp_path / "facades")
    out = tmp_path / "table6"
    args = ["table6", "--dataroot", str(data), "--out", str(out), "--eval-limit", "2", "--jobs", "2"]
    args += ["--configs", "in_in", "in_ilmin", "--seeds", "0", "1", "--lpips-backbone", str(lpips_backbone)]
    args += [*tiny(n_epochs=2, n_epochs_decay=1), "--score-epochs", "1", "2", "3"]
    assert main(args) == 0
    run = out / "checkpoints" / "in_ilmin_seed1"
    assert {p.name for p in run.glob("epoch_*.pt")} == {"epoch_1.pt", "epoch_2.pt", "epoch_3.pt"}
    results = out / "results_train_200-400" / "in_ilmin_seed1"
    assert {p.name for p in results.iterdir() if p.suffix != ".lock"} == {
        "train_1",
        "train_2",
        "train_latest",
    }  # epoch 3: the last
    summary = json.loads((out / "table6.json").read_text())
    by_epoch = summary["epoch_tables"]["paper"]
    assert list(by_epoch) == ["1", "2", "3"] and summary["score_epochs"] == [1, 2, 3]
    assert by_epoch["3"] == summary["tables"]["paper"]
    for base, ilm in by_epoch.values():
        assert (base["config"], ilm["config"], ilm["label"]) == ("in_in", "in_ilmin", "IN / ILM+IN")
        diffs = [
            ilm["metrics"]["lpips"]["per_seed"][s] - base["metrics"]["lpips"]["per_seed"][s]
            for s in ("0", "1")
        ]
        assert list(ilm["paired"]["lpips"]["per_seed"].values()) == pytest.approx(diffs)
        half = math.tan(0.475 * math.pi) * abs(diffs[0] - diffs[1]) / 2  # t(0.975, 1)
        assert ilm["paired"]["lpips"]["ci"] == pytest.approx(
            [sum(diffs) / 2 - half, sum(diffs) / 2 + half], rel=1e-4
        )
    epoch2 = out / "results_train_200-400" / "in_ilmin_seed0" / "train_2" / "metrics.json"
    epoch2 = json.loads(epoch2.read_text())
    assert by_epoch["2"][1]["metrics"]["lpips"]["per_seed"]["0"] == epoch2["mean"]["lpips"]
    table = (out / "table6.md").read_text()
    assert "### Along training, split `paper`" in table and "| 2 | " in table
    assert "IN / ILM+IN: Δ LPIPS / Δ RMSE_rgb" in table and "–" in table  # no paper value for IN / ILM+IN
    assert (out / "table6_epochs.png").stat().st_size > 1000

    # The checkpoints gone, --no-train rebuilds every table and figure from the saved scores alone.
    for path in (out / "checkpoints").rglob("*.pt"):
        path.unlink()
    (out / "table6_epochs.png").unlink()
    capsys.readouterr()
    assert main([*args, "--no-train"]) == 0
    again = json.loads((out / "table6.json").read_text())
    assert again["epoch_tables"] == summary["epoch_tables"] and again["tables"] == summary["tables"]
    assert (out / "table6_epochs.png").is_file()

    # Only table6.json kept, as a results page commits it: the same tables, rebuilt in another folder.
    kept = tmp_path / "kept"
    kept.mkdir()
    shutil.copy(out / "table6.json", kept)
    rebuild = [str(kept) if a == str(out) else a for a in args] + ["--no-train"]
    assert main(rebuild) == 0
    rebuilt = json.loads((kept / "table6.json").read_text())
    assert rebuilt["epoch_tables"] == summary["epoch_tables"] and rebuilt["tables"] == summary["tables"]
    assert rebuilt["missing"] == [] and (kept / "table6_epochs.png").is_file()
    assert not list(kept.glob("samples*.png"))  # images are drawn only from this --out's run folders
    # Saved scores of other training options, test dropout or image counts are not taken for these.
    longer = [a.replace("--set=n_epochs=2", "--set=n_epochs=3") for a in rebuild]
    for other in (longer, [*rebuild, "--test-dropout", "off"], [*rebuild, "--eval-limit", "1"]):
        capsys.readouterr()
        assert main(other) == 2, other
        assert "error: no trained run to score" in capsys.readouterr().err
