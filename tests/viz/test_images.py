"""Network outputs as pixels: tensor_to_image, PNG round trip, grids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pix2pix_ilm.viz.images import image_grid, save_image, tensor_to_image


def test_tensor_to_image_values_and_rounding() -> None:
    t = torch.tensor([-1.0, 0.0, 1.0, -0.5, 3.0, -7.0, float("nan")]).view(1, 1, 7).expand(3, 1, 7)
    image = tensor_to_image(t)
    assert image.dtype == np.uint8 and image.shape == (1, 7, 3)
    # -1 → 0, 0 → 127.5 → 128 (ties to even), 1 → 255, -0.5 → 63.75 → 64, clamped to [-1, 1], NaN → 128
    assert image[0, :, 0].tolist() == [0, 128, 255, 64, 255, 0, 128]


def test_tensor_to_image_gray_batch_and_errors() -> None:
    gray = torch.linspace(-1, 1, 12).view(1, 1, 3, 4)  # (1, C, H, W) with one channel
    image = tensor_to_image(gray)
    assert image.shape == (3, 4, 3)
    assert np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 0], image[..., 2])
    assert image[0, 0, 0] == 0 and image[2, 3, 0] == 255
    color = torch.rand(3, 5, 6) * 2 - 1
    assert np.array_equal(tensor_to_image(color), tensor_to_image(color.unsqueeze(0)))
    assert np.array_equal(tensor_to_image(color.double()), tensor_to_image(color))
    assert np.array_equal(tensor_to_image(gray, keep_grey=True), image[..., 0])  # (H, W): one channel kept
    assert np.array_equal(tensor_to_image(color, keep_grey=True), tensor_to_image(color))
    with pytest.raises(ValueError, match="batch"):
        tensor_to_image(torch.zeros(2, 3, 4, 4))
    with pytest.raises(ValueError, match="C = 1 or 3"):
        tensor_to_image(torch.zeros(4, 4, 4))


def test_save_image_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(7, 9, 3), dtype=np.uint8)
    path = tmp_path / "new folder" / "ünï cödé & <x>.png"
    save_image(image, path)
    with Image.open(path) as loaded:
        assert loaded.format == "PNG" and loaded.mode == "RGB"
        assert np.array_equal(np.asarray(loaded), image)
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp file left behind

    gray = rng.integers(0, 256, size=(4, 5), dtype=np.uint8)
    save_image(gray, path)  # overwrites, as a single-channel PNG
    with Image.open(path) as loaded:
        assert loaded.mode == "L" and np.array_equal(np.asarray(loaded), gray)

    tensor = torch.rand(3, 6, 6) * 2 - 1
    save_image(tensor_to_image(tensor), tmp_path / "t.png")
    with Image.open(tmp_path / "t.png") as loaded:
        assert np.array_equal(np.asarray(loaded), tensor_to_image(tensor))

    with pytest.raises(ValueError, match="uint8"):
        save_image(image.astype(np.float32), tmp_path / "bad.png")


def test_image_grid_shape_and_placement() -> None:
    images = [np.full((8, 10, 3), 10 * (i + 1), dtype=np.uint8) for i in range(5)]
    grid = image_grid([images[:3], images[3:]], pad=2)
    assert grid.shape == (2 * 8 + 3 * 2, 3 * 10 + 4 * 2, 3)
    assert grid.dtype == np.uint8
    assert (grid[2:10, 2:12] == 10).all()  # row 0, column 0
    assert (grid[2:10, 26:36] == 30).all()  # row 0, column 2
    assert (grid[12:20, 14:24] == 50).all()  # row 1, column 1
    assert (grid[12:20, 26:36] == 255).all()  # the short row is padded with white
    assert (grid[:2] == 255).all() and (grid[:, :2] == 255).all()
    assert image_grid([[images[0]]], pad=0).shape == (8, 10, 3)
    with pytest.raises(ValueError):
        image_grid([[]])
