"""Metrics: hand-computed pixel scores, SSIM settings, LPIPS (shared backbone), backbone loading, eval I/O."""

from __future__ import annotations

import json
import math
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pix2pix_ilm import metrics
from pix2pix_ilm.errors import UsageError

# LPIPS(alex, v0.1) between the photo halves of facades train/1.jpg and train/2.jpg with the shared
# backbone; computed once with this code and cross-checked against lpips.im2tensor + LPIPS.forward.
LPIPS_FACADES_1_2 = 0.579930


def _closed_port_url(name: str) -> str:
    """A URL on 127.0.0.1 where nothing listens: connections are refused at once, on any machine."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/{name}"


def _photo(facades_dir: Path, name: str) -> np.ndarray:
    return np.asarray(Image.open(facades_dir / "train" / name).convert("RGB"))[:, :256]


@pytest.fixture(scope="module")
def lpips_model(lpips_backbone: Path) -> torch.nn.Module:
    return metrics.build_lpips(lpips_backbone, "cpu")


# ----------------------------------------------------------------------------------------- registry


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
        result = metrics.evaluate_images([fake], [real], "test_max_abs")
        assert result["mean"]["test_max_abs"] == 9.0
        with pytest.raises(ValueError, match="already registered"):
            metrics.register_metric("test_max_abs", higher_is_better=False, description="again")(_make)
    finally:
        metrics._METRICS.pop("test_max_abs")


# ----------------------------------------------------------------------------------- pixel metrics


def test_pixel_metrics_match_hand_computation() -> None:
    rng = np.random.default_rng(0)
    real1 = rng.integers(10, 240, size=(8, 6, 3), dtype=np.uint8)
    fake1 = real1.astype(np.int16)
    fake1[..., 0] += 6  # channel offsets +6, -3, 0: squared errors 36, 9, 0 -> MSE 15, MAE 3
    fake1[..., 1] -= 3
    fake1 = fake1.astype(np.uint8)
    real2 = rng.integers(10, 240, size=(8, 6, 3), dtype=np.uint8)
    fake2 = (real2.astype(np.int16) + 4).astype(np.uint8)  # MSE 16, MAE 4

    result = metrics.evaluate_images([fake1, fake2], [real1, real2], "rmse,psnr,mae", names=["a", "b"])
    assert result["n"] == 2
    assert result["per_image"]["a"]["rmse"] == pytest.approx(math.sqrt(15), abs=1e-12)
    assert result["per_image"]["a"]["mae"] == pytest.approx(3.0, abs=1e-12)
    assert result["per_image"]["a"]["psnr"] == pytest.approx(10 * math.log10(255**2 / 15), abs=1e-12)
    assert result["per_image"]["b"]["rmse"] == pytest.approx(4.0, abs=1e-12)
    assert result["mean"]["rmse"] == pytest.approx((math.sqrt(15) + 4) / 2, abs=1e-12)
    assert result["std"]["rmse"] == pytest.approx(abs(math.sqrt(15) - 4) / 2, abs=1e-12)  # population std
    assert result["mean"]["mae"] == pytest.approx(3.5, abs=1e-12)
    assert result["std"]["mae"] == pytest.approx(0.5, abs=1e-12)


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
    result = metrics.evaluate_images(image, image, "psnr,rmse")
    assert result["mean"]["psnr"] == math.inf
    safe = json.loads(json.dumps(metrics.json_safe(result), allow_nan=False))
    assert safe["mean"] == {"psnr": None, "rmse": 0.0} and safe["per_image"]["0"]["psnr"] is None


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
    assert ours < 0.99


def test_evaluate_images_checks_inputs() -> None:
    a = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(UsageError, match="pair 0"):
        metrics.evaluate_images([a], [np.zeros((8, 9, 3), np.uint8)], "rmse")
    with pytest.raises(UsageError, match="8-bit RGB"):
        metrics.evaluate_images([a.astype(np.float32)], [a], "rmse")
    with pytest.raises(UsageError, match="no images"):
        metrics.evaluate_images([], [], "rmse")
    with pytest.raises(UsageError, match="batch-size"):
        metrics.evaluate_images([a], [a], "rmse", batch_size=0)
    tiny = np.zeros((6, 40, 3), np.uint8)
    with pytest.raises(UsageError, match="at least 7x7"):
        metrics.evaluate_images([tiny], [tiny], "ssim")


def test_batching_and_mixed_sizes_give_per_image_scores() -> None:
    rng = np.random.default_rng(2)
    reals = [rng.integers(0, 256, size=shape, dtype=np.uint8) for shape in [(8, 8, 3)] * 3 + [(9, 12, 3)] * 2]
    fakes = [np.clip(r.astype(int) + 5 * (i + 1), 0, 255).astype(np.uint8) for i, r in enumerate(reals)]
    one_by_one = metrics.evaluate_images(fakes, reals, "rmse,ssim", batch_size=1)
    batched = metrics.evaluate_images(fakes, reals, "rmse,ssim", batch_size=4)
    assert list(batched["per_image"]) == ["0", "1", "2", "3", "4"]
    for stem, scores in one_by_one["per_image"].items():
        assert batched["per_image"][stem] == pytest.approx(scores, abs=1e-12)
    for i in range(5):
        expected = math.sqrt(np.mean((fakes[i].astype(float) - reals[i]) ** 2))
        assert batched["per_image"][str(i)]["rmse"] == pytest.approx(expected, abs=1e-12)


# ------------------------------------------------------------------------------------------- LPIPS


def test_lpips_zero_for_identical_symmetric_and_monotonic(
    lpips_model: torch.nn.Module, facades_dir: Path
) -> None:
    score = metrics.lpips_scorer(lpips_model)
    photo = _photo(facades_dir, "3.jpg")
    rng = np.random.default_rng(3)
    noise = rng.normal(size=photo.shape)
    small = np.clip(photo + 8 * noise, 0, 255).astype(np.uint8)
    large = np.clip(photo + 40 * noise, 0, 255).astype(np.uint8)
    values = score(np.stack([photo, small, large]), np.stack([photo, photo, photo]))
    assert values[0] == pytest.approx(0.0, abs=1e-7)
    assert 0.0 < values[1] < values[2]
    swapped = score(np.stack([photo, photo]), np.stack([small, large]))
    assert swapped == pytest.approx(values[1:], abs=1e-6)


def test_lpips_regression_anchor_on_two_facades(lpips_backbone: Path, facades_dir: Path) -> None:
    one, two = _photo(facades_dir, "1.jpg"), _photo(facades_dir, "2.jpg")
    result = metrics.evaluate_images([one], [two], "lpips", lpips_backbone=lpips_backbone, device="cpu")
    assert result["mean"]["lpips"] == pytest.approx(LPIPS_FACADES_1_2, abs=1e-4)


def test_lpips_batched_equals_single(lpips_model: torch.nn.Module, facades_dir: Path) -> None:
    score = metrics.lpips_scorer(lpips_model)
    photos = np.stack([_photo(facades_dir, f"{i}.jpg") for i in (1, 2, 3, 4)])
    batched = score(photos, photos[::-1].copy())
    single = np.array([score(photos[i : i + 1], photos[3 - i : 4 - i])[0] for i in range(4)])
    assert batched == pytest.approx(single, abs=1e-5)
    assert batched[1] == pytest.approx(batched[2], abs=1e-5)  # pairs (2,3) and (3,2): symmetric


def test_full_torchvision_format_backbone_loads(
    tmp_path: Path, lpips_backbone: Path, facades_dir: Path
) -> None:
    features = torch.load(lpips_backbone, map_location="cpu", weights_only=True)
    generator = torch.Generator().manual_seed(0)
    full = dict(features)
    for key, shape in {"classifier.1": (16, 9), "classifier.4": (16, 16), "classifier.6": (10, 16)}.items():
        full[f"{key}.weight"] = torch.randn(shape, generator=generator)
        full[f"{key}.bias"] = torch.randn(shape[:1], generator=generator)
    full_path = tmp_path / "alexnet-owt-7be5be79.pth"
    torch.save(full, full_path)

    loaded = metrics.load_alexnet_features(full_path)
    assert set(loaded) == set(features)
    model = metrics.build_lpips(full_path, "cpu")
    one, two = _photo(facades_dir, "1.jpg"), _photo(facades_dir, "2.jpg")
    assert metrics.lpips_scorer(model)(one[None], two[None])[0] == pytest.approx(LPIPS_FACADES_1_2, abs=1e-4)


def test_backbone_sources_in_order(
    tmp_path: Path, lpips_backbone: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv(metrics.LPIPS_BACKBONE_ENV, "")
    assert metrics.resolve_lpips_backbone(None) is None
    cached = tmp_path / "torch" / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"")
    assert metrics.resolve_lpips_backbone(None) == cached
    monkeypatch.setenv(metrics.LPIPS_BACKBONE_ENV, str(lpips_backbone))
    assert metrics.resolve_lpips_backbone(None) == lpips_backbone
    monkeypatch.setenv(metrics.LPIPS_BACKBONE_ENV, str(tmp_path / "missing.pth"))
    assert metrics.resolve_lpips_backbone(lpips_backbone) == lpips_backbone  # the argument wins
    with pytest.raises(UsageError, match="missing.pth"):
        metrics.resolve_lpips_backbone(None)


def test_bad_backbone_files_are_usage_errors(tmp_path: Path, lpips_backbone: Path) -> None:
    import torchvision

    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(UsageError, match="notes.pth"):
        metrics.build_lpips(text)

    features = torch.load(lpips_backbone, map_location="cpu", weights_only=True)
    only_conv1 = tmp_path / "partial.pth"
    torch.save({k: v for k, v in features.items() if k.startswith("features.0.")}, only_conv1)
    with pytest.raises(UsageError, match=r"partial\.pth.*missing features\.3\.weight"):
        metrics.load_alexnet_features(only_conv1)

    wrong_shape = dict(features)
    wrong_shape["features.6.weight"] = features["features.6.weight"][:100]
    wrong_path = tmp_path / "wrong_shape.pth"
    torch.save(wrong_shape, wrong_path)
    with pytest.raises(UsageError, match=r"wrong_shape\.pth: features\.6\.weight has shape"):
        metrics.load_alexnet_features(wrong_path)

    torch.manual_seed(0)
    random_state = {f"features.{k}": v for k, v in torchvision.models.alexnet().features.state_dict().items()}
    random_path = tmp_path / "random_alexnet.pth"
    torch.save(random_state, random_path)
    with pytest.raises(UsageError, match=r"random_alexnet\.pth does not hold ImageNet-trained weights"):
        metrics.load_alexnet_features(random_path)

    pickled = tmp_path / "pickled.pth"
    torch.save({"features.0.weight": object()}, pickled)
    with pytest.raises(UsageError, match=r"pickled\.pth cannot be loaded as plain tensors"):
        metrics.load_alexnet_features(pickled)

    with pytest.raises(UsageError, match="not found"):
        metrics.build_lpips(tmp_path / "absent.pth")


def test_no_backbone_and_no_network_fails_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(metrics.LPIPS_BACKBONE_ENV, "")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    monkeypatch.setattr(metrics, "ALEXNET_OWT_URL", _closed_port_url("alexnet-owt-7be5be79.pth"))
    timeout_before = socket.getdefaulttimeout()
    started = time.perf_counter()
    with pytest.raises(UsageError) as caught:
        metrics.evaluate_images([np.zeros((64, 64, 3), np.uint8)], [np.zeros((64, 64, 3), np.uint8)], "lpips")
    assert time.perf_counter() - started < 10
    message = str(caught.value)
    assert "--lpips-backbone PATH" in message and metrics.LPIPS_BACKBONE_ENV in message
    assert "\n" not in message
    assert socket.getdefaulttimeout() == timeout_before


# -------------------------------------------------------------------------------- results folders


def _write_pair(images: Path, stem: str, fake: np.ndarray, real: np.ndarray) -> None:
    images.mkdir(parents=True, exist_ok=True)
    Image.fromarray(fake).save(images / f"{stem}_fake_B.png")
    Image.fromarray(real).save(images / f"{stem}_real_B.png")


def test_eval_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="results folder not found"):
        metrics.evaluate_results_dir(tmp_path / "absent", "rmse")
    results = tmp_path / "run"
    results.mkdir()
    with pytest.raises(UsageError, match=r"no images/ folder"):
        metrics.evaluate_results_dir(results, "rmse")
    images = results / "images"
    images.mkdir()
    with pytest.raises(UsageError, match=r"no \*_fake_B\.png images in .*images"):
        metrics.evaluate_results_dir(results, "rmse")

    image = np.zeros((8, 8, 3), np.uint8)
    _write_pair(images, "1", image, image)
    Image.fromarray(image).save(images / "2_fake_B.png")
    with pytest.raises(UsageError, match=r"2_fake_B\.png has no ground truth: .*2_real_B\.png is missing"):
        metrics.evaluate_results_dir(results, "rmse")

    Image.fromarray(np.zeros((8, 10, 3), np.uint8)).save(images / "2_real_B.png")
    with pytest.raises(UsageError, match=r"2_fake_B\.png is 8x8 but .*2_real_B\.png is 10x8"):
        metrics.evaluate_results_dir(results, "rmse")

    (images / "2_real_B.png").write_bytes(b"broken")
    with pytest.raises(UsageError, match=r"cannot read image .*2_real_B\.png"):
        metrics.evaluate_results_dir(results, "rmse")


def test_run_eval_command_writes_json(
    tmp_path: Path, lpips_backbone: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = tmp_path / "results" / "run" / "test_latest"
    rng = np.random.default_rng(4)
    offsets = {"10": 2, "2": 6, "1": 0}  # natural order: 1, 2, 10
    for stem, offset in offsets.items():
        real = rng.integers(20, 230, size=(64, 64, 3), dtype=np.uint8)
        _write_pair(results / "images", stem, (real + offset).astype(np.uint8), real)

    returned = metrics.run_eval_command(results, "rmse,psnr,mae,ssim,lpips", lpips_backbone, None, "auto", 2)
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
    metrics.run_eval_command(results, "mae", None, custom, "cpu", 16)
    assert json.loads(custom.read_text())["mean"] == {"mae": pytest.approx(8 / 3)}

    with pytest.raises(UsageError, match="unknown metric 'fid'"):
        metrics.run_eval_command(results, "fid", None, None, "cpu", 16)
