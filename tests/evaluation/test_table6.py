"""A tiny Table 6 run end to end: three configurations trained, tested, evaluated, tabulated; then resumed."""

from __future__ import annotations

import json
import shutil
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


def test_tiny_table6_end_to_end_and_resume(facades_dir: Path, lpips_backbone: Path, tmp_path: Path, capsys):
    data = tmp_path / "facades"
    for phase in ("train", "test"):
        (data / phase).mkdir(parents=True)
        for n in ("1", "2", "3"):
            shutil.copy(facades_dir / phase / f"{n}.jpg", data / phase / f"{n}.jpg")
    out = tmp_path / "table6"
    args = [
        "table6",
        "--dataroot",
        str(data),
        "--out",
        str(out),
        "--eval-split",
        "test",
        "--seeds",
        "0",
        "1",
        "--lpips-backbone",
        str(lpips_backbone),
        "--no-progress",
        *TINY,
    ]
    assert main(args) == 0
    summary = json.loads((out / "table6.json").read_text())
    assert [row["config"] for row in summary["rows"]] == ["in_in", "ilmin_in", "ilmin_ilmin"]
    for row in summary["rows"]:
        assert row["paper"] == PAPER_TABLE6[row["config"]] and row["n_images"] == 3
        for metric in ("rmse", "lpips", "ssim", "psnr", "mae"):
            values = row["metrics"][metric]["per_seed"]
            assert len(values) == 2 and row["metrics"][metric]["mean"] == pytest.approx(sum(values) / 2)
    assert summary["preset_options"]["netG"] == "unet_32" and len(summary["runs"]) == 6
    table = (out / "table6.md").read_text()
    assert "| ILM+IN / ILM+IN |" in table and "105.46" in table and " ± " in table
    assert {p.name for p in out.glob("samples*.png")} == {
        "samples.png",
        "samples_in_in.png",
        "samples_ilmin_in.png",
        "samples_ilmin_ilmin.png",
    }
    capsys.readouterr()

    # Resumable: finished runs are skipped; a run that lost its final checkpoint and scores is redone
    # from latest.pt without training again from scratch.
    run = out / "checkpoints" / "ilmin_ilmin_seed1"
    (run / "epoch_1.pt").unlink()
    (out / "results" / "ilmin_ilmin_seed1" / "test_latest" / "metrics.json").unlink()
    assert main(args) == 0
    err = capsys.readouterr().err
    assert err.count("trained already, skipping training") == 5
    assert "ilmin_ilmin_seed1: resuming" in err
    again = json.loads((out / "table6.json").read_text())
    assert again["rows"] == summary["rows"]


def test_overrides_are_typed_and_checked():
    assert parse_overrides(["n_epochs=3", "precision=bf16", "no_flip=true", "subset=none"]) == {
        "n_epochs": 3,
        "precision": "bf16",
        "no_flip": True,
        "subset": None,
    }
    with pytest.raises(UsageError, match="KEY=VALUE"):
        parse_overrides(["epochs=3"])
    with pytest.raises(UsageError, match="n_epochs"):
        parse_overrides(["n_epochs=many"])
