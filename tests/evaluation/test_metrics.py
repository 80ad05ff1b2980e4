"""The metric registry, hand-computed pixel scores and the SSIM settings."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from pix2pix_ilm.errors import UsageError
from pix2pix_ilm.evaluation import metrics


def test_registry_lists_metrics_with_directions() -> None:
    assert {"rmse", "psnr", "mae", "ssim", "lpips"} <= set(metrics.list_metrics())
    assert [metrics.get_metric(n).higher_is_better for n in ("rmse", "psnr", "mae", "ssim", "lpips")] == [
        False,
        True,
        False,
        True,
        False,
    ]
    assert metrics.parse_metric_names(" RMSE, ssim,,rmse ") == ["rmse", "ssim"]


def test_unknown_metric_lists_valid_names() -> None:
    with pytest.raises(UsageError, match=r"unknown metric 'fid'.*rmse.*lpips"):
        metrics.parse_metric_names("rmse,fid")


def test_register_metric_adds_a_metric_in_one_place() -> None:
    @metrics.register_metric("test_max_abs", higher_is_better=False, description="largest |difference|")
    def _make(options: metrics.EvalOptions) -> metrics.Scorer:
        return lambda f, r: np.abs(f.astype(np.int16) - r).reshape(len(f), -1).max(axis=1).astype(float)

    try:
        real = np.zeros((4, 4, 3), np.uint8)
        fake = real.copy()
        fake[1, 2, 0] = 9
        scorer = metrics.get_metric("test_max_abs").make_scorer(metrics.EvalOptions())
        assert scorer(fake[None], real[None]).tolist() == [9.0]
        with pytest.raises(ValueError, match="already registered"):
            metrics.register_metric("test_max_abs", higher_is_better=False, description="again")(_make)
    finally:
        metrics._METRICS.pop("test_max_abs")


def test_pixel_metrics_match_hand_computation() -> None:
    rng = np.random.default_rng(0)
    real1 = rng.integers(10, 240, size=(8, 6, 3), dtype=np.uint8)
    fake1 = real1.astype(np.int16)
    fake1[..., 0] += 6  # channel offsets +6, -3, 0: squared errors 36, 9, 0 -> MSE 15, MAE 3
    fake1[..., 1] -= 3
    fake1 = fake1.astype(np.uint8)
    real2 = rng.integers(10, 240, size=(8, 6, 3), dtype=np.uint8)
    fake2 = (real2.astype(np.int16) + 4).astype(np.uint8)  # MSE 16, MAE 4

    fake, real = np.stack([fake1, fake2]), np.stack([real1, real2])
    assert metrics.rmse(fake, real) == pytest.approx([math.sqrt(15), 4.0], abs=1e-12)
    assert metrics.mae(fake, real) == pytest.approx([3.0, 4.0], abs=1e-12)
    assert metrics.psnr(fake, real)[0] == pytest.approx(10 * math.log10(255**2 / 15), abs=1e-12)


def test_pixel_metrics_do_not_wrap_around_uint8() -> None:
    real = np.zeros((2, 4, 4, 3), np.uint8)
    fake = np.full((2, 4, 4, 3), 255, np.uint8)
    assert metrics.rmse(fake, real).tolist() == [255.0, 255.0]
    assert metrics.rmse(real, fake).tolist() == [255.0, 255.0]
    assert metrics.mae(real, fake).tolist() == [255.0, 255.0]
    assert metrics.psnr(fake, real) == pytest.approx([0.0, 0.0])


def test_psnr_of_identical_images_is_infinite() -> None:
    image = np.full((1, 4, 4, 3), 7, np.uint8)
    assert metrics.psnr(image, image)[0] == math.inf


def test_ssim_uses_the_documented_settings() -> None:
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(1)
    real = rng.integers(0, 256, size=(48, 48, 3), dtype=np.uint8)
    noisy = np.clip(real.astype(int) + rng.integers(-40, 41, size=real.shape), 0, 255).astype(np.uint8)
    ours = metrics.ssim(noisy[None], real[None])[0]
    uniform7 = structural_similarity(noisy, real, channel_axis=-1, data_range=255)
    gaussian = structural_similarity(
        noisy,
        real,
        channel_axis=-1,
        data_range=255,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
    )
    assert ours == pytest.approx(uniform7, abs=1e-12)
    assert abs(ours - gaussian) > 1e-3
    assert metrics.ssim(real[None], real[None])[0] == pytest.approx(1.0, abs=1e-12)
    tiny = np.zeros((1, 6, 40, 3), np.uint8)
    with pytest.raises(UsageError, match="at least 7x7"):
        metrics.ssim(tiny, tiny)
    assert ours < 0.99


def test_rmse_rgb_is_the_euclidean_colour_distance_and_sqrt3_times_rmse(tmp_path, capsys) -> None:
    fake = np.zeros((1, 1, 2, 3), np.uint8)
    real = np.array([[[[3, 4, 0], [0, 0, 0]]]], np.uint8)  # one pixel 5 away in colour, one exact
    assert metrics.rmse_rgb(fake, real) == pytest.approx([math.sqrt(25 / 2)])
    rng = np.random.default_rng(7)
    fakes = rng.integers(0, 256, size=(5, 17, 23, 3), dtype=np.uint8)
    reals = rng.integers(0, 256, size=(5, 17, 23, 3), dtype=np.uint8)
    np.testing.assert_allclose(
        metrics.rmse_rgb(fakes, reals), math.sqrt(3) * metrics.rmse(fakes, reals), rtol=1e-12
    )
    assert metrics.get_metric("rmse_rgb").higher_is_better is False

    from PIL import Image

    from pix2pix_ilm.cli import main

    images = tmp_path / "images"
    images.mkdir()
    for i, (f, r) in enumerate(zip(fakes, reals, strict=True)):
        Image.fromarray(f).save(images / f"{i}_fake_B.png")
        Image.fromarray(r).save(images / f"{i}_real_B.png")
    assert main(["eval", "--results-dir", str(tmp_path), "--metrics", "rmse,rmse_rgb"]) == 0
    scores = json.loads((tmp_path / "metrics.json").read_text())
    for stem, per_image in scores["per_image"].items():
        assert per_image["rmse_rgb"] == pytest.approx(math.sqrt(3) * per_image["rmse"], rel=1e-12), stem
    assert "rmse_rgb" in capsys.readouterr().out
