"""``compare``: the README's command run as written on tiny paired grey data (its statistics by hand, rebuilt by
``--no-train``), the facades study's plan, and one-line refusals of rows, baselines, splits and metrics."""

from __future__ import annotations

import json
import math
import re
import shlex
import shutil
import statistics
from pathlib import Path

import pytest

from pix2pix_ilm.cli import build_parser, main
from pix2pix_ilm.config import TrainConfig
from pix2pix_ilm.errors import UsageError
from pix2pix_ilm.evaluation.compare_rows import parse_row, parse_split
from pix2pix_ilm.flags import dataclass_from_args
from tests.deploy.test_readme_examples import readme_blocks
from tests.faults import good_pairs, write_folder, write_paired

# Appended to the README's command: tiny networks, 1 + 1 epochs, two seeds, every epoch scored.
TINY = [f"--set={o}" for o in ("netG=unet_32", "ngf=16", "ndf=8", "load_size=36", "crop_size=32")]
TINY += [
    "--set=n_epochs=1",
    "--set=n_epochs_decay=1",
    "--seeds",
    "0",
    "1",
    "--score-epochs",
    "1",
    "--no-progress",
]
T_975_1DF = math.tan(0.475 * math.pi)  # Student-t quantile t(0.975, 1 dof): 1 dof is the Cauchy distribution


def _readme_command() -> list[str]:
    (block,) = readme_blocks("Compare norms on your data")["sh"]
    argv = shlex.split(block.replace("\\\n", " "))
    assert argv[:2] == ["pix2pix-ilm", "compare"]
    return argv[1:]


@pytest.mark.usefixtures("one_thread")
def test_the_readme_command_pairs_rows_per_seed_and_no_train_rebuilds_it(
    pairs, lpips_backbone, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PIX2PIX_ILM_LPIPS_BACKBONE", str(lpips_backbone))
    edges = tmp_path / "datasets" / "edges"
    write_paired(edges, "train", {k: pairs[k] for k in ("train1", "train2", "train3")}, grey=True)
    write_paired(edges, "test", {k: pairs[k] for k in ("test1", "test2")}, grey=True)
    assert main([*_readme_command(), *TINY]) == 0
    out = tmp_path / "results" / "edges_norms"
    summary = json.loads((out / "compare.json").read_text())
    assert summary["rows"] == {
        "in": {"netG_norm": "instance"},
        "ilm_gn16": {"netG_norm": "ilm_gn", "ilm_group_size": 16},
    }
    assert (summary["baseline"], summary["preset"], summary["eval_splits"]) == ("in", "quick", ["test"])
    assert not summary["missing"] and len(summary["runs"]) == 4
    for row, seed in (("in", 0), ("ilm_gn16", 1)):
        saved = json.loads((out / "checkpoints" / f"{row}_seed{seed}" / "config.json").read_text())["config"]
        assert (saved["seed"], saved["dataset_mode"], saved["input_nc"], saved["netG"]) == (
            seed,
            "paired",
            1,
            "unet_32",
        )
        assert (saved["netG_norm"], saved["ilm_group_size"]) == (
            ("instance", 1) if row == "in" else ("ilm_gn", 16)
        )
        assert (saved["netD_norm"], saved["n_epochs"], saved["n_epochs_decay"]) == ("instance", 1, 1)

    # Every number of the table from the runs' own metrics.json, by hand.
    def score(row: str, seed: int, metric: str) -> float:
        path = out / "results" / f"{row}_seed{seed}" / "test_latest" / "metrics.json"
        document = json.loads(path.read_text())
        assert document["n"] == 2 and document["settings"]["channels"] == 1
        return document["mean"][metric]

    base, ilm = summary["tables"]["test"]
    assert (base["config"], ilm["config"], base["seeds"], ilm["n_images"]) == ("in", "ilm_gn16", [0, 1], 2)
    assert list(base["metrics"]) == list(ilm["metrics"]) == ["rmse", "rmse_rgb", "lpips", "ssim"]
    assert not base["paired"]
    for metric in ("rmse", "rmse_rgb", "lpips", "ssim"):
        ours = [score("in", s, metric) for s in (0, 1)]
        assert base["metrics"][metric]["mean"] == pytest.approx(statistics.fmean(ours))
        assert base["metrics"][metric]["std"] == pytest.approx(abs(ours[0] - ours[1]) / math.sqrt(2))
        diffs = [score("ilm_gn16", s, metric) - score("in", s, metric) for s in (0, 1)]
        paired = ilm["paired"][metric]
        assert list(paired["per_seed"].values()) == pytest.approx(diffs)
        half = T_975_1DF * abs(diffs[0] - diffs[1]) / 2  # t * s / sqrt(2), s = |d0 - d1| / sqrt(2)
        assert paired["ci"] == pytest.approx([sum(diffs) / 2 - half, sum(diffs) / 2 + half], rel=1e-4)
        assert paired["n"] == 2 and (paired["verdict"] == "within seed noise") == (
            paired["ci"][0] <= 0 <= paired["ci"][1]
        )
    table = (out / "compare.md").read_text()
    assert table.startswith(
        "# Comparison on `datasets/edges` (preset `quick`, dataset_mode=paired, input_nc=1,"
    )
    assert (
        "| row | RMSE ↓ | RMSE_rgb ↓ | LPIPS ↓ | SSIM ↑ | seeds | images |" in table and "paper" not in table
    )
    assert "| vs in | Δ RMSE | Δ RMSE_rgb | Δ LPIPS | Δ SSIM |" in table
    assert "- ilm_gn16 vs in (n = 2 paired seeds, df = 1, 2 images each): " in table
    assert (
        "`ilm_gn16`: netG_norm=ilm_gn, ilm_group_size=16" in table and "`test`: test_A/ and test_B/." in table
    )
    assert "(1 training run at a time)" in table
    assert list(summary["epoch_tables"]["test"]) == ["1"] and "`\n\n### Along training, split `test`" in table
    figures = {p.name for p in out.glob("*.png")}
    assert figures == {
        "compare.png",
        "compare_epochs.png",
        "samples.png",
        "samples_in.png",
        "samples_ilm_gn16.png",
    }

    progress = [line for line in capsys.readouterr().err.splitlines() if line.startswith("[")]
    assert progress and all(line.startswith("[compare] ") for line in progress)  # its own progress lines

    # --no-train scores the trained runs, saying nothing of training.
    assert main([*_readme_command(), *TINY, "--no-train"]) == 0
    assert "training" not in capsys.readouterr().err

    # The run folders gone, --no-train rebuilds the same tables from compare.json alone.
    shutil.rmtree(out / "checkpoints")
    assert main([*_readme_command(), *TINY, "--no-train"]) == 0
    again = json.loads((out / "compare.json").read_text())
    assert (again["tables"], again["epoch_tables"], again["runs"]) == (
        summary["tables"],
        summary["epoch_tables"],
        summary["runs"],
    )

    def without_wall_time(text: str) -> str:
        return re.sub(r"Wall time: .* min", "", text)

    assert without_wall_time((out / "compare.md").read_text()) == without_wall_time(table)
    # A saved run without a metric asked for is named as such; the table's evidence is the seeds it holds.
    for run in again["runs"]:
        if run["name"] == "ilm_gn16_seed0":
            del run["splits"]["test"]["mean"]["lpips"]
    (out / "compare.json").write_text(json.dumps(again))
    assert main([*_readme_command(), *TINY, "--no-train"]) == 0
    lacking = json.loads((out / "compare.json").read_text())
    assert (lacking["missing"], lacking["lacking"]) == (["ilm_gn16_seed0"], {"ilm_gn16_seed0": ["lpips"]})
    table = (out / "compare.md").read_text()
    assert "**Little evidence: 1 seed(s) × 2 images.**" in table and "Not trained" not in table
    assert "their saved scores lack a metric asked for and no trained run is left to score it: " in table
    assert "ilm_gn16_seed0 (lpips); train them again, or leave the metric out of --metrics." in table
    # A row whose options changed under the same name is not taken from the saved scores.
    changed = [a.replace("ilm_group_size=16", "ilm_group_size=8") for a in _readme_command()]
    assert main([*changed, *TINY, "--no-train"]) == 0
    assert json.loads((out / "compare.json").read_text())["missing"] == ["ilm_gn16_seed0", "ilm_gn16_seed1"]
    assert (
        "Not trained, nor saved with these options and images, so not in the table: ilm_gn16_seed0, "
        in (out / "compare.md").read_text()
    )


STUDY = (
    "compare --dataroot {data} --out {out} --preset quick --seeds 0 1 2 --jobs 2 --set direction=BtoA "
    "--set subset=0:200 --eval-phase train:200:400 test --row in:netG_norm=instance --row bn:netG_norm=batch "
    "--row gn:netG_norm=group --row ln:netG_norm=layer --row ilm_in:netG_norm=ilm_in "
    "--row ilm_gn16:netG_norm=ilm_gn,ilm_group_size=16 --dry-run"
)


def test_the_facades_norm_study_plans_table6s_quick_setting(facades_dir, tmp_path, capsys):
    out = tmp_path / "norms"
    assert main(shlex.split(STUDY.format(data=facades_dir, out=out))) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "compare plan: preset quick, 18 runs, 2 at a time"
    assert lines[1].endswith("evaluation on train:200:400 and test, test dropout on")
    norms = {
        "in": "instance",
        "bn": "batch",
        "gn": "group",
        "ln": "layer",
        "ilm_in": "ilm_in",
        "ilm_gn16": "ilm_gn",
    }
    commands = [shlex.split(line) for line in lines if line.startswith("  ")]
    assert len(commands) == 18
    parser = build_parser()
    for argv, (row, seed) in zip(commands, [(r, s) for r in norms for s in (0, 1, 2)], strict=True):
        config = dataclass_from_args(TrainConfig, parser.parse_args(argv[3:]))
        assert (config.name, config.seed, config.netG_norm, config.netD_norm) == (
            f"{row}_seed{seed}",
            seed,
            norms[row],
            "instance",
        )
        assert config.ilm_group_size == (16 if row == "ilm_gn16" else 1)
        # table6's quick preset: 128², unet_128 at ngf = ndf = 32, 10 + 10 epochs, labels → photos on train/1-200
        assert (config.netG, config.ngf, config.ndf, config.crop_size, config.load_size) == (
            "unet_128",
            32,
            32,
            128,
            142,
        )
        assert (config.n_epochs, config.n_epochs_decay, config.direction, config.subset) == (
            10,
            10,
            "BtoA",
            "0:200",
        )
    assert not out.exists()


@pytest.fixture
def tiny_aligned(pairs, tmp_path) -> Path:
    root = tmp_path / "data"
    write_folder(root, "train", good_pairs(pairs, "train1", "train2"))
    write_folder(root, "test", good_pairs(pairs, "test1", "test2"))
    return root


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--row", "in"],
            "--row expects NAME:KEY=VALUE,... (e.g. --row gn:netG_norm=group,num_groups=8), got 'in'",
        ),
        (
            ["--row", "in:norm=instance"],
            "--row in expects KEY=VALUE with a training option as KEY, got 'norm=instance'",
        ),
        (["--row", "in:netg_norm=instance"], "got 'netg_norm=instance'; did you mean netG_norm?"),
        (["--row", "in:ngf"], "--row in expects KEY=VALUE with a training option as KEY, got 'ngf'"),
        (["--row", "in:ngf=wide"], "--row in ngf: invalid literal for int() with base 10: 'wide'"),
        (["--row", "in:netG_norm=fancy"], "--row in netG_norm: expected one of"),
        (
            ["--row", "in:seed=3"],
            "--row in 'seed=3': seed is the command's own option, the same for every run",
        ),
        (["--row", "a/b:ngf=8"], "--row 'a/b:ngf=8': the name must be letters, digits and _ . + -"),
        (["--row", "in:ngf=8,ngf=16"], "--row in: ngf given twice"),
        (["--row", "a:", "--set", "ngf=8", "--set", "ngf=16"], "--set: ngf given twice"),
        (["--row", "a:ngf=8", "--row", "a:ngf=16"], "--row a: two rows of the same name"),
        (
            ["--row", "a:ngf=8", "--row", "b:ngf=16", "--baseline", "c"],
            "--baseline c is not a row; the rows: a, b",
        ),
        (["--row", "a:netG_norm=instance", "--row", "b:"], "rows a and b train with the same options"),
        (["--row", "a:", "--eval-phase", "val"], "--eval-phase val: "),
        (["--row", "a:", "--eval-phase", "test:5:9"], "--eval-phase test:5:9: no images in "),
        (["--row", "a:", "--eval-phase", "test:x"], "--eval-phase 'test:x': a slice is PHASE:START:END"),
        (["--row", "a:", "--set", "phase=val"], "--row a: "),
        (["--row", "a:", "--metrics", "rmse,sharpness"], "unknown metric 'sharpness'"),
        (["--row", "a:", "--set", "device=cpu"], "--set 'device=cpu': device is the command's own option"),
    ],
)
def test_mistakes_end_in_one_line_before_any_work(tiny_aligned, tmp_path, capsys, args, message):
    out = tmp_path / "out"
    assert main(["compare", "--dataroot", str(tiny_aligned), "--out", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("pix2pix-ilm compare: error: ") and message in err, err
    assert not out.exists()


def test_missing_rows_and_data_folder_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["compare", "--dataroot", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "the following arguments are required: --row" in capsys.readouterr().err
    assert main(["compare", "--dataroot", str(tmp_path / "none"), "--row", "a:"]) == 2
    assert f"error: --dataroot {tmp_path / 'none'} is not a folder\n" in capsys.readouterr().err


def test_keys_and_values_are_stripped():
    assert parse_row("b: netG_norm = ilm_in , ngf= 8 ").options == {"netG_norm": "ilm_in", "ngf": 8}


NOT_HELD_OUT = "of split {} are training images, so the split is not held out: "


@pytest.mark.parametrize(
    ("args", "warning"),
    [
        (
            ["train:1:2"],
            "1 of the 1 images " + NOT_HELD_OUT.format("train:1:2") + "hold it out with --set subset=0:1",
        ),
        (
            ["train::1", "--set", "subset=0:2"],
            "1 of the 1 images " + NOT_HELD_OUT.format("train::1") + "hold it out with --set subset=1:",
        ),
        (
            ["train"],
            "2 of the 2 images "
            + NOT_HELD_OUT.format("train")
            + "score on a slice that --set subset=START:END leaves out, or on another folder",
        ),
        (["train:1:2", "--set", "subset=0:1"], None),
        (["test:1:2", "train", "--set", "phase=test", "--set", "subset=:1"], None),
    ],
)
def test_an_eval_phase_of_training_images_is_warned_of_in_the_plan_and_at_the_start(
    tiny_aligned, tmp_path, capsys, args, warning
):
    command = ["compare", "--dataroot", str(tiny_aligned), "--out", str(tmp_path / "out"), "--row", "a:"]
    command += ["--metrics", "rmse", "--eval-phase", *args]
    assert main([*command, "--dry-run"]) == 0
    plan = capsys.readouterr().out
    assert main([*command, "--no-train"]) == 2  # nothing trained: it ends after its start
    started = capsys.readouterr().err
    for said, prefix in ((plan, ""), (started, "[compare] ")):
        lines = [line for line in said.splitlines() if "warning" in line]
        assert lines == ([f"{prefix}warning: {warning}"] if warning else []), said


def test_an_eval_phase_is_a_folder_or_a_slice_of_one():
    assert parse_split("test") == ("test", None)
    assert parse_split("train:200:400") == ("train", "200:400")
    assert parse_split("val::5") == ("val", ":5")
    with pytest.raises(UsageError, match="--eval-phase expects a folder name"):
        parse_split("../test")
