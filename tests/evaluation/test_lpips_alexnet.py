"""LPIPS: regression anchor, batching, and where the AlexNet backbone comes from (and when it is refused)."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pix2pix_ilm.errors import UsageError
from pix2pix_ilm.evaluation import lpips_alexnet, metrics
from tests.helpers import closed_port_url

# LPIPS(alex, v0.1) between the photo halves of facades train/1.jpg and train/2.jpg with the shared
# backbone; computed once with this code and cross-checked against lpips.im2tensor + LPIPS.forward.
LPIPS_FACADES_1_2 = 0.579930


def _photo(facades_dir: Path, name: str) -> np.ndarray:
    return np.asarray(Image.open(facades_dir / "train" / name).convert("RGB"))[:, :256]


@pytest.fixture(scope="module")
def lpips_model(lpips_backbone: Path) -> torch.nn.Module:
    return lpips_alexnet.build_lpips(lpips_backbone, "cpu")


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
    score = metrics.get_metric("lpips").make_scorer(metrics.EvalOptions(lpips_backbone))
    assert score(one[None], two[None])[0] == pytest.approx(LPIPS_FACADES_1_2, abs=1e-4)


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

    loaded = lpips_alexnet.load_alexnet_features(full_path)
    assert set(loaded) == set(features)
    model = lpips_alexnet.build_lpips(full_path, "cpu")
    one, two = _photo(facades_dir, "1.jpg"), _photo(facades_dir, "2.jpg")
    assert metrics.lpips_scorer(model)(one[None], two[None])[0] == pytest.approx(LPIPS_FACADES_1_2, abs=1e-4)


def test_backbone_sources_in_order(
    tmp_path: Path, lpips_backbone: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv(lpips_alexnet.LPIPS_BACKBONE_ENV, "")
    assert lpips_alexnet.resolve_lpips_backbone(None) is None
    cached = tmp_path / "torch" / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"")
    assert lpips_alexnet.resolve_lpips_backbone(None) == cached
    monkeypatch.setenv(lpips_alexnet.LPIPS_BACKBONE_ENV, str(lpips_backbone))
    assert lpips_alexnet.resolve_lpips_backbone(None) == lpips_backbone
    monkeypatch.setenv(lpips_alexnet.LPIPS_BACKBONE_ENV, str(tmp_path / "missing.pth"))
    assert lpips_alexnet.resolve_lpips_backbone(lpips_backbone) == lpips_backbone  # the argument wins
    with pytest.raises(UsageError, match="missing.pth"):
        lpips_alexnet.resolve_lpips_backbone(None)


def test_bad_backbone_files_are_usage_errors(tmp_path: Path, lpips_backbone: Path) -> None:
    import torchvision

    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(UsageError, match="notes.pth"):
        lpips_alexnet.build_lpips(text)

    features = torch.load(lpips_backbone, map_location="cpu", weights_only=True)
    only_conv1 = tmp_path / "partial.pth"
    torch.save({k: v for k, v in features.items() if k.startswith("features.0.")}, only_conv1)
    with pytest.raises(UsageError, match=r"partial\.pth.*missing features\.3\.weight"):
        lpips_alexnet.load_alexnet_features(only_conv1)

    wrong_shape = dict(features)
    wrong_shape["features.6.weight"] = features["features.6.weight"][:100]
    wrong_path = tmp_path / "wrong_shape.pth"
    torch.save(wrong_shape, wrong_path)
    with pytest.raises(UsageError, match=r"wrong_shape\.pth: features\.6\.weight has shape"):
        lpips_alexnet.load_alexnet_features(wrong_path)

    torch.manual_seed(0)
    random_state = {f"features.{k}": v for k, v in torchvision.models.alexnet().features.state_dict().items()}
    random_path = tmp_path / "random_alexnet.pth"
    torch.save(random_state, random_path)
    with pytest.raises(UsageError, match=r"random_alexnet\.pth does not hold ImageNet-trained weights"):
        lpips_alexnet.load_alexnet_features(random_path)

    pickled = tmp_path / "pickled.pth"
    torch.save({"features.0.weight": object()}, pickled)
    with pytest.raises(UsageError, match=r"pickled\.pth cannot be loaded as plain tensors"):
        lpips_alexnet.load_alexnet_features(pickled)

    with pytest.raises(UsageError, match="not found"):
        lpips_alexnet.build_lpips(tmp_path / "absent.pth")


def test_no_backbone_and_no_network_fails_fast(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(lpips_alexnet.LPIPS_BACKBONE_ENV, "")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    monkeypatch.setattr(lpips_alexnet, "ALEXNET_OWT_URL", closed_port_url("alexnet-owt-7be5be79.pth"))
    timeout_before = socket.getdefaulttimeout()
    started = time.perf_counter()
    with pytest.raises(UsageError) as caught:
        metrics.get_metric("lpips").make_scorer(metrics.EvalOptions())
    assert time.perf_counter() - started < 10
    message = str(caught.value)
    assert "--lpips-backbone PATH" in message and lpips_alexnet.LPIPS_BACKBONE_ENV in message
    assert "\n" not in message
    assert socket.getdefaulttimeout() == timeout_before
    assert capfd.readouterr() == ("", "")  # the error is the only word: no "Downloading: ..." before it
