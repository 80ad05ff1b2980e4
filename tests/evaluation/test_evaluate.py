"""Evaluation of test output folders, and the ``eval`` command's metrics.json."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pix2pix_ilm.cli import main
from pix2pix_ilm.errors import UsageError
from pix2pix_ilm.evaluation import evaluate
from pix2pix_ilm.evaluation.options import EvalConfig


def _write_pair(images: Path, stem: str, fake: np.ndarray, real: np.ndarray) -> None:
    images.mkdir(parents=True, exist_ok=True)
    Image.fromarray(fake).save(images / f"{stem}_fake_B.png")
    Image.fromarray(real).save(images / f"{stem}_real_B.png")


def test_batching_and_mixed_sizes_give_per_image_scores(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    reals = [rng.integers(0, 256, size=shape, dtype=np.uint8) for shape in [(8, 8, 3)] * 3 + [(9, 12, 3)] * 2]
    fakes = [np.clip(r.astype(int) + 5 * (i + 1), 0, 255).astype(np.uint8) for i, r in enumerate(reals)]
    for i, (fake, real) in enumerate(zip(fakes, reals, strict=True)):
        _write_pair(tmp_path / "images", str(i), fake, real)
    one_by_one = evaluate.evaluate_results_dir(tmp_path, "rmse,ssim", batch_size=1)
    batched = evaluate.evaluate_results_dir(tmp_path, "rmse,ssim", batch_size=4)
    assert list(batched["per_image"]) == ["0", "1", "2", "3", "4"]
    for stem, scores in one_by_one["per_image"].items():
        assert batched["per_image"][stem] == pytest.approx(scores, abs=1e-12)
    for i in range(5):
        expected = math.sqrt(np.mean((fakes[i].astype(float) - reals[i]) ** 2))
        assert batched["per_image"][str(i)]["rmse"] == pytest.approx(expected, abs=1e-12)
    with pytest.raises(UsageError, match="batch-size"):
        evaluate.evaluate_results_dir(tmp_path, "rmse", batch_size=0)


def test_eval_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="results folder not found"):
        evaluate.evaluate_results_dir(tmp_path / "absent", "rmse")
    results = tmp_path / "run"
    results.mkdir()
    with pytest.raises(UsageError, match=r"no images/ folder"):
        evaluate.evaluate_results_dir(results, "rmse")
    images = results / "images"
    images.mkdir()
    with pytest.raises(UsageError, match=r"no \*_fake_B\.png images in .*images"):
        evaluate.evaluate_results_dir(results, "rmse")

    image = np.zeros((8, 8, 3), np.uint8)
    _write_pair(images, "1", image, image)
    Image.fromarray(image).save(images / "2_fake_B.png")
    with pytest.raises(UsageError, match=r"2_fake_B\.png has no ground truth: .*2_real_B\.png is missing"):
        evaluate.evaluate_results_dir(results, "rmse")

    Image.fromarray(np.zeros((8, 10, 3), np.uint8)).save(images / "2_real_B.png")
    with pytest.raises(UsageError, match=r"2_fake_B\.png is 8x8 but .*2_real_B\.png is 10x8"):
        evaluate.evaluate_results_dir(results, "rmse")

    (images / "2_real_B.png").write_bytes(b"broken")
    with pytest.raises(UsageError, match=r"cannot decode image .*2_real_B\.png"):
        evaluate.evaluate_results_dir(results, "rmse")


def test_run_eval_writes_json(
    tmp_path: Path, lpips_backbone: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = tmp_path / "results" / "run" / "test_latest"
    rng = np.random.default_rng(4)
    offsets = {"10": 2, "2": 6, "1": 0}  # natural order: 1, 2, 10
    for stem, offset in offsets.items():
        real = rng.integers(20, 230, size=(64, 64, 3), dtype=np.uint8)
        _write_pair(results / "images", stem, (real + offset).astype(np.uint8), real)

    returned = evaluate.run_eval(
        EvalConfig(str(results), "rmse,psnr,mae,ssim,lpips", str(lpips_backbone), None, "auto", 2)
    )
    document = json.loads((results / "metrics.json").read_text())
    assert document["n"] == 3
    assert document["metrics"] == ["rmse", "psnr", "mae", "ssim", "lpips"]
    assert list(document["per_image"]) == ["1", "2", "10"]
    assert document["per_image"]["2"]["rmse"] == pytest.approx(6.0)
    assert document["per_image"]["10"]["mae"] == pytest.approx(2.0)
    assert document["per_image"]["1"]["psnr"] is None  # identical images: inf, written as null
    assert document["per_image"]["1"]["ssim"] == pytest.approx(1.0)
    assert document["per_image"]["1"]["lpips"] == pytest.approx(0.0, abs=1e-6)
    assert document["per_image"]["10"]["lpips"] > 0
    assert document["mean"]["rmse"] == pytest.approx(8 / 3)
    assert document["std"]["rmse"] == pytest.approx(float(np.std([0, 6, 2])))
    assert document["mean"]["psnr"] is None
    assert document["higher_is_better"] == {
        "rmse": False,
        "psnr": True,
        "mae": False,
        "ssim": True,
        "lpips": False,
    }
    assert (
        document["settings"]["ssim"]["win_size"] == 7
        and document["settings"]["ssim"]["gaussian_weights"] is False
    )
    assert document["settings"]["lpips"]["backbone"] == str(lpips_backbone)
    assert returned["per_image"]["2"]["rmse"] == pytest.approx(6.0)

    table = capsys.readouterr().out
    assert "rmse" in table and "2.6667 ± 2.4944" in table and "lower" in table and "higher" in table

    custom = tmp_path / "elsewhere" / "scores.json"
    evaluate.run_eval(EvalConfig(str(results), "mae", None, str(custom), "cpu", 16))
    assert json.loads(custom.read_text())["mean"] == {"mae": pytest.approx(8 / 3)}

    with pytest.raises(UsageError, match="unknown metric 'fid'"):
        evaluate.run_eval(EvalConfig(str(results), "fid", None, None, "cpu", 16))


def test_grey_images_are_scored_on_their_channel_and_lpips_on_it_replicated(
    tmp_path: Path, lpips_backbone: Path
) -> None:
    """Grey PNGs score as their RGB copies do (every channel the same), except rmse_rgb: sqrt(3) x smaller."""
    rng = np.random.default_rng(5)
    for stem in ("1", "2"):
        real = rng.integers(20, 230, size=(64, 64), dtype=np.uint8)
        fake = np.clip(real.astype(int) + rng.integers(-30, 30, size=real.shape), 0, 255).astype(np.uint8)
        _write_pair(tmp_path / "grey" / "images", stem, fake, real)
        _write_pair(
            tmp_path / "rgb" / "images", stem, *(np.repeat(x[..., None], 3, axis=2) for x in (fake, real))
        )
    metrics = "rmse,rmse_rgb,mae,psnr,ssim,lpips"
    grey = evaluate.evaluate_results_dir(tmp_path / "grey", metrics, lpips_backbone)
    rgb = evaluate.evaluate_results_dir(tmp_path / "rgb", metrics, lpips_backbone)
    assert (grey["channels"], rgb["channels"]) == (1, 3)
    for stem in ("1", "2"):
        g, c = grey["per_image"][stem], rgb["per_image"][stem]
        for name in ("rmse", "mae", "psnr", "ssim"):
            assert g[name] == pytest.approx(c[name], rel=1e-12), name
        assert g["lpips"] == pytest.approx(c["lpips"], rel=1e-5)  # float32, another memory layout
        assert g["rmse_rgb"] == pytest.approx(g["rmse"]) and c["rmse_rgb"] == pytest.approx(
            math.sqrt(3) * c["rmse"]
        )
    mixed = tmp_path / "rgb" / "images" / "1_real_B.png"
    Image.open(tmp_path / "grey" / "images" / "1_real_B.png").save(mixed)  # one grey file among RGB ones
    assert evaluate.evaluate_results_dir(tmp_path / "rgb", "rmse")["channels"] == 3


def test_eval_outputs_and_damaged_test_records(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.faults import cli_error

    results = tmp_path / "results"
    image = np.full((8, 8, 3), 7, np.uint8)
    for stem in ("1", "2"):
        _write_pair(results / "images", stem, image, image)
    run = ["eval", "--results-dir", str(results), "--metrics", "rmse"]
    for _ in range(2):  # the folder's own metrics.json and plot: replaced by each eval
        assert main(run) == 0
    capsys.readouterr()
    assert sorted(p.name for p in results.iterdir()) == ["images", "metrics.json", "metrics.png"]
    scores = tmp_path / "scores.json"
    scores.write_text("mine")
    assert "scores.json exists; use --overwrite" in cli_error(capsys, *run, "--json", str(scores))
    (tmp_path / "fresh.png").write_text("mine too")  # the plot beside a new --json is an output too
    fresh = str(tmp_path / "other" / ".." / "fresh.json")
    assert "fresh.png exists; use --overwrite" in cli_error(capsys, *run, "--json", fresh)
    assert "give a .json name" in cli_error(capsys, *run, "--json", str(tmp_path / "s.png"), "--overwrite")
    assert (tmp_path / "fresh.png").read_text() == "mine too"
    assert main([*run, "--json", str(scores), "--overwrite"]) == 0
    assert json.loads(scores.read_text())["n"] == 2 and (tmp_path / "scores.png").is_file()
    capsys.readouterr()
    # Never an input (an image scored, or its plot's name), a folder, or a place below a file.
    fake = results / "images" / "1_fake_B.png"
    before = fake.read_bytes()
    for target, expected in (
        (fake, "is the input"),
        (results / "images" / "1_fake_B.json", "is the input"),
        (tmp_path, "is a folder"),
        (scores / "x.json", "which is a file"),
    ):
        assert expected in cli_error(capsys, *run, "--json", str(target), "--overwrite")
    assert fake.read_bytes() == before
    # A damaged test.json is named, with what to do.
    for content in ("{not json", '{"images": 3}', "[]", "\xff\xfe"):
        (results / "test.json").write_bytes(content.encode("latin-1"))
        msg = cli_error(capsys, *run)
        assert "test.json" in msg and "pix2pix-ilm test" in msg, msg
