"""A tiny Table 6 run end to end: two rows x two seeds, both splits, paired statistics, eval's format; resumed."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

from pix2pix_ilm.cli import main
from pix2pix_ilm.errors import UsageError
from pix2pix_ilm.evaluation.table6 import PAPER_TABLE6, parse_overrides

TINY = [
    "--set",
    "netG=unet_32",
    "--set",
    "ngf=4",
    "--set",
    "ndf=4",
    "--set",
    "load_size=36",
    "--set",
    "crop_size=32",
    "--set",
    "n_epochs=1",
    "--set",
    "n_epochs_decay=0",
    "--set",
    "subset=0:3",
]


def tiny_facades(facades_dir: Path, root: Path) -> Path:
    """train/1..202 and test/1..2 (links to four real pairs): enough for both evaluation splits."""
    for phase, count in (("train", 202), ("test", 2)):
        (root / phase).mkdir(parents=True)
        for n in range(1, count + 1):
            (root / phase / f"{n}.jpg").symlink_to(facades_dir / phase / f"{1 + (n - 1) % 4}.jpg")
    return root


def test_tiny_table6_seeds_both_splits_paired_statistics_and_resume(
    facades_dir: Path, lpips_backbone: Path, tmp_path: Path, capsys, monkeypatch
):
    from pix2pix_ilm.evaluation import evaluate

    devices = []
    real_resolve = evaluate.resolve_device
    monkeypatch.setattr(evaluate, "resolve_device", lambda d: devices.append(d) or real_resolve(d))
    data = tiny_facades(facades_dir, tmp_path / "facades")
    out = tmp_path / "table6"
    args = ["table6", "--dataroot", str(data), "--out", str(out), "--eval-split", "both", "--eval-limit", "2"]
    args += [
        "--configs",
        "in_in",
        "ilmin_in_authors",
        "--lpips-backbone",
        str(lpips_backbone),
        "--no-progress",
    ]
    assert main([*args, "--seeds", "0", "1", *TINY]) == 0
    summary = json.loads((out / "table6.json").read_text())
    assert (
        list(summary["tables"]) == ["paper", "test"] and len(summary["runs"]) == 4 and not summary["missing"]
    )
    saved = json.loads((out / "checkpoints" / "ilmin_in_authors_seed1" / "config.json").read_text())["config"]
    assert (saved["ilm_init"], saved["ilm_variance"], saved["netD_norm"]) == (
        "pytorch",
        "unbiased",
        "instance",
    )
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
            half = 12.7062 * abs(diffs[0] - diffs[1]) / 2  # t(0.975, 1 dof) * s / sqrt(2)
            assert paired["ci"] == pytest.approx([sum(diffs) / 2 - half, sum(diffs) / 2 + half], rel=1e-4)
            inside = paired["ci"][0] <= 0 <= paired["ci"][1]
            assert (paired["verdict"] == "within seed noise") == inside
        rmse_rgb = base["metrics"]["rmse_rgb"]["per_seed"]["0"]
        assert rmse_rgb == pytest.approx(math.sqrt(3) * base["metrics"]["rmse"]["per_seed"]["0"], rel=1e-9)
    table = (out / "table6.md").read_text()
    assert "### Split `paper`" in table and "### Split `test`" in table and "108.17" in table
    assert "ILM+IN / IN, authors' ILM code vs IN / IN (2 paired seeds)" in table
    assert {p.name for p in out.glob("samples*.png")} == {
        "samples.png",
        "samples_in_in.png",
        "samples_ilmin_in_authors.png",
    }

    assert (out / "table6.png").is_file() == (importlib.util.find_spec("matplotlib") is not None)

    # One format, one code path: table6's metrics.json is the one `eval` writes, LPIPS on --device.
    result_dir = out / "results" / "in_in_seed0" / "train_latest"
    mine = json.loads((result_dir / "metrics.json").read_text())
    assert "auto" in devices and mine["settings"]["lpips"]["device"] == str(real_resolve("auto"))
    metrics = ",".join(mine["metrics"])
    assert (
        main(
            [
                "eval",
                "--results-dir",
                str(result_dir),
                "--metrics",
                metrics,
                "--json",
                str(tmp_path / "e.json"),
            ]
            + ["--lpips-backbone", str(lpips_backbone)]
        )
        == 0
    )
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
    assert main([*args, "--seeds", "0", "1", "2", "--no-train", *TINY]) == 0
    again = json.loads((out / "table6.json").read_text())
    assert again["missing"] == ["in_in_seed2", "ilmin_in_authors_seed2"]
    assert again["tables"]["paper"][0]["metrics"] == summary["tables"]["paper"][0]["metrics"]
    assert not (out / "checkpoints" / "in_in_seed2").exists()


def test_report_without_matplotlib(monkeypatch, tmp_path, capsys):
    import builtins

    from pix2pix_ilm.evaluation.table6_report import t_interval, verdict, write_figure

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    assert write_figure({"tables": {}}, tmp_path / "f.png") is False
    assert "matplotlib is not installed" in capsys.readouterr().err and not (tmp_path / "f.png").exists()
    assert verdict(t_interval([1.0, 1.2, 0.9]), higher_is_better=True) == "gain"
    assert verdict(t_interval([1.0, 1.2, 0.9]), higher_is_better=False) == "loss"
    assert verdict(t_interval([1.0, -1.2, 0.9]), higher_is_better=False) == "within seed noise"
    assert t_interval([0.5])["ci"] is None


def test_overrides_are_typed_and_checked():
    assert parse_overrides(["n_epochs=3", "precision=bf16", "no_flip=true", "subset=none"]) == {
        "n_epochs": 3,
        "precision": "bf16",
        "no_flip": True,
        "subset": None,
    }
    assert parse_overrides(["channels_last=auto", "channels_last=false"]) == {"channels_last": False}
    assert parse_overrides(["channels_last=auto", "precision=auto"]) == {
        "channels_last": None,
        "precision": "auto",
    }
    with pytest.raises(UsageError, match="KEY=VALUE"):
        parse_overrides(["epochs=3"])
    with pytest.raises(UsageError, match="n_epochs"):
        parse_overrides(["n_epochs=many"])
