"""Network outputs as pixels: :func:`tensor_to_image` is the one place a tensor becomes an image; PNG files and grids."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from typing import Union

import numpy as np
import torch
from PIL import Image

from pix2pix_ilm.files import atomic_write_bytes

PathLike = Union[str, "os.PathLike[str]"]


def tensor_to_image(t: torch.Tensor, *, keep_grey: bool = False) -> np.ndarray:
    """``(C, H, W)``, ``(1, C, H, W)`` or ``(H, W)`` in [-1, 1] (C = 1 or 3) -> uint8 ``(H, W, 3)``, or with
    ``keep_grey`` a one-channel image as ``(H, W)``.

    Clamped (NaN as 0), then ``round((x + 1) / 2 * 255)`` with ties to even: −1 → 0, 0 → 128, 1 → 255.
    """
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"tensor_to_image expects a torch.Tensor, got {type(t).__name__}")
    x = t.detach()
    if x.dim() == 4:
        if x.shape[0] != 1:
            raise ValueError(f"tensor_to_image takes one image; got a batch of shape {tuple(x.shape)}")
        x = x[0]
    elif x.dim() == 2:
        x = x.unsqueeze(0)
    if x.dim() != 3 or x.shape[0] not in (1, 3):
        raise ValueError(f"expected an image tensor (C, H, W) with C = 1 or 3, got shape {tuple(t.shape)}")
    x = x.to(device="cpu", dtype=torch.float32)
    x = torch.nan_to_num(x, nan=0.0).clamp(-1.0, 1.0)
    pixels = torch.round((x + 1.0) / 2.0 * 255.0).to(torch.uint8)
    if pixels.shape[0] == 1:
        if keep_grey:
            return np.ascontiguousarray(pixels[0].numpy())
        pixels = pixels.expand(3, -1, -1)
    return np.ascontiguousarray(pixels.permute(1, 2, 0).numpy())


def as_rgb(image: np.ndarray) -> np.ndarray:
    """Check a uint8 ``(H, W)``, ``(H, W, 1)`` or ``(H, W, 3)`` array and return it as ``(H, W, 3)``."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        kind = image.dtype if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"expected a uint8 numpy image (use tensor_to_image for tensors), got {kind}")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3):
        raise ValueError(f"expected an image of shape (H, W) or (H, W, 3), got {image.shape}")
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    return image


def save_image(image: np.ndarray, path: PathLike, *, fsync: bool = True) -> None:
    """Write a uint8 ``(H, W, 3)`` array as an RGB PNG, or an ``(H, W)`` one as a grey (mode L) PNG, atomically;
    parent folders are created."""
    rgb = as_rgb(image)
    array = np.ascontiguousarray(rgb[:, :, 0] if image.ndim == 2 else rgb)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue(), fsync=fsync)


def image_grid(rows: Sequence[Sequence[np.ndarray]], pad: int = 2) -> np.ndarray:
    """Tile uint8 images, one list per row, into white cells as large as the largest, ``pad`` pixels apart."""
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    grid_rows = [[as_rgb(image) for image in row] for row in rows]
    images = [image for row in grid_rows for image in row]
    if not images:
        raise ValueError("image_grid needs at least one image")
    cell_h, cell_w = (max(image.shape[i] for image in images) + pad for i in (0, 1))
    n_cols = max(len(row) for row in grid_rows)
    grid = np.full((len(grid_rows) * cell_h + pad, n_cols * cell_w + pad, 3), 255, dtype=np.uint8)
    for r, row in enumerate(grid_rows):
        for c, image in enumerate(row):
            top, left = pad + r * cell_h, pad + c * cell_w
            grid[top : top + image.shape[0], left : left + image.shape[1]] = image
    return grid
