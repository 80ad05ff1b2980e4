"""Paired-folder and grey runs end to end: train, test with only the run's config.json, eval."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from pix2pix_ilm.cli import main
from pix2pix_ilm.config import TrainConfig
from pix2pix_ilm.data.images import load_rgb
from pix2pix_ilm.errors import UsageError
from pix2pix_ilm.flags import parse_field_value
from tests.faults import args_for_test, iterations, train_args, write_paired

pytestmark = pytest.mark.usefixtures("one_thread")
LABELS = ("real_A", "fake_B", "real_B")


def _paired_data(pairs, root, grey: bool):
    """Three training pairs and two test pairs, split into train_A/ train_B/ test_A/ test_B/."""
    write_paired(root, "train", {n: pairs[f"train{n}"] for n in ("1", "2", "3")}, grey=grey)
    return write_paired(root, "test", {n: pairs[f"test{n}"] for n in ("1", "2")}, grey=grey)


def test_a_grey_paired_folder_dataset_trains_tests_and_scores_end_to_end(
    pairs, tmp_path, lpips_backbone, capsys
):
    data = _paired_data(pairs, tmp_path / "data", grey=True)
    ckpt, results = tmp_path / "ckpt", tmp_path / "results"
    grey_run = ("--dataset-mode", "paired", "--input-nc", "1", "--output-nc", "1", "--n-epochs", "2")
    assert main(train_args(data, ckpt, "base", *grey_run)) == 0
    saved = json.loads((ckpt / "base" / "config.json").read_text())["config"]
    assert (saved["dataset_mode"], saved["input_nc"], saved["output_nc"]) == ("paired", 1, 1)
    assert iterations(ckpt / "base") == [1, 2, 3, 4, 5, 6]
    with Image.open(ckpt / "base" / "web" / "images" / "epoch002_fake_B.png") as preview:
        assert preview.size == (32, 32)

    assert main(args_for_test(data, ckpt, results, "--phase", "test")) == 0  # no mode or channel flags
    out = results / "base" / "test_latest"
    for stem in ("1", "2"):
        for label in LABELS:
            with Image.open(out / "images" / f"{stem}_{label}.png") as image:
                assert image.mode == "L" and image.size == (32, 32), (stem, label)
    # --direction BtoA: the input is the B file, resized to the crop size as in training (without jitter).
    expected = load_rgb(data / "test_B" / "2.jpg").resize((32, 32), Image.BICUBIC).convert("L")
    assert np.array_equal(np.asarray(Image.open(out / "images" / "2_real_A.png")), np.asarray(expected))
    assert str(data / "test") in json.loads((out / "test.json").read_text())["description"]

    metrics = "rmse,rmse_rgb,mae,psnr,ssim,lpips"
    args = ["eval", "--results-dir", str(out), "--metrics", metrics, "--lpips-backbone", str(lpips_backbone)]
    assert main(args) == 0
    capsys.readouterr()
    document = json.loads((out / "metrics.json").read_text())
    assert document["n"] == 2 and list(document["per_image"]) == ["1", "2"]
    assert all(math.isfinite(document["mean"][name]) for name in metrics.split(","))
    assert document["mean"]["rmse_rgb"] == pytest.approx(document["mean"]["rmse"])  # one channel
    settings = document["settings"]
    assert settings["channels"] == 1 and "replicated to RGB" in settings["grey"]
    assert settings["ssim"]["color"] == "grey" and "replicated to RGB" in settings["lpips"]["input"]


def test_an_rgb_paired_dataset_trains_and_tests(pairs, tmp_path, capsys):
    data = _paired_data(pairs, tmp_path / "data", grey=False)
    ckpt, results = tmp_path / "ckpt", tmp_path / "results"
    assert main(train_args(data, ckpt, "base", "--dataset-mode", "paired", "--subset", "1:")) == 0
    assert iterations(ckpt / "base") == [1, 2]  # --subset 1: of the three pairs
    assert main(args_for_test(data, ckpt, results, "--phase", "test")) == 0
    out = results / "base" / "test_latest"
    assert json.loads((out / "test.json").read_text())["images"] == ["1", "2"]
    for label in LABELS:
        with Image.open(out / "images" / f"1_{label}.png") as image:
            assert image.mode == "RGB" and image.size == (32, 32)
    assert main(["eval", "--results-dir", str(out), "--metrics", "rmse,rmse_rgb"]) == 0
    capsys.readouterr()
    document = json.loads((out / "metrics.json").read_text())
    assert document["settings"]["channels"] == 3 and "grey" not in document["settings"]
    assert document["mean"]["rmse_rgb"] == pytest.approx(math.sqrt(3) * document["mean"]["rmse"])

    # test --single still reads a plain folder of inputs, here the run's own input side.
    assert main(args_for_test(data, ckpt, results, "--phase", "test_B", "--single")) == 0
    assert sorted(p.name for p in (results / "base" / "test_B_latest_single" / "images").iterdir()) == [
        "1_fake_B.png",
        "2_fake_B.png",
    ]


def test_channel_counts_other_than_one_and_three_are_refused(pairs, tmp_path, capsys):
    data = _paired_data(pairs, tmp_path / "data", grey=True)
    for flag in ("--input-nc", "--output-nc"):
        with pytest.raises(SystemExit) as exit_info:
            main(train_args(data, tmp_path / "ckpt", "x", "--dataset-mode", "paired", flag, "2"))
        err = capsys.readouterr().err.strip()
        assert exit_info.value.code == 2 and len(err.splitlines()) == 1
        assert "invalid choice: 2 (choose from 1, 3)" in err
    with pytest.raises(UsageError, match="input_nc: expected one of 1, 3, got '4'"):
        parse_field_value(TrainConfig, "input_nc", "4")  # table6 --set input_nc=4
    assert not (tmp_path / "ckpt").exists()
