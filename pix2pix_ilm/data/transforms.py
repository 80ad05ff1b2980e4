"""How an image becomes the network's input (``--preprocess``): resize, crop, flip, and the tensor in [-1, 1]."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from pix2pix_ilm.errors import UsageError


@dataclass(frozen=True)
class TransformSpec:
    """How to turn a PIL image into the network's input (see ``--preprocess``)."""

    preprocess: str = "resize_and_crop"
    load_size: int = 286
    crop_size: int = 256
    flip: bool = True
    train: bool = True  # test mode: no randomness (resize to the crop size, or centre crop)

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) of the transformed image for an input of that size."""
        if self.preprocess == "resize_and_crop":
            return (self.crop_size, self.crop_size)
        if self.preprocess == "crop":
            return (self.crop_size, self.crop_size)
        if self.preprocess in ("scale_width", "scale_width_and_crop"):
            if self.preprocess == "scale_width_and_crop":
                return (self.crop_size, self.crop_size)
            return (self.load_size, max(int(self.load_size * height / width), self.crop_size))
        return (_round4(width), _round4(height))

    def problem(self, width: int, height: int, size_multiple: int = 1) -> str | None:
        """Why an input image of ``width`` x ``height`` cannot go through this transform, or None."""
        if self.preprocess == "crop" and (width < self.crop_size or height < self.crop_size):
            return (
                f"is smaller than --crop-size {self.crop_size} (with --preprocess crop); use --preprocess "
                "resize_and_crop or a smaller --crop-size"
            )
        out_w, out_h = self.output_size(width, height)
        if out_w % size_multiple or out_h % size_multiple:
            return (
                f"becomes a {out_w}x{out_h} network input with --preprocess {self.preprocess}, but the generator "
                f"needs sides that are multiples of {size_multiple}"
            )
        return None

    def resize_size(self, width: int, height: int) -> tuple[int, int] | None:
        """The size an input of ``width`` x ``height`` is resized to before any crop, or None (kept)."""
        size = None
        if self.preprocess == "resize_and_crop":
            size = (self.load_size, self.load_size) if self.train else (self.crop_size, self.crop_size)
        elif self.preprocess in ("scale_width", "scale_width_and_crop"):
            size = (self.load_size, max(int(self.load_size * height / width), self.crop_size))
        elif self.preprocess == "none":
            size = (_round4(width), _round4(height))
        return None if size == (width, height) else size

    def resize(self, images: Sequence[Image.Image]) -> list[Image.Image]:
        """The deterministic first part of :meth:`apply`: every image resized as ``--preprocess`` says."""
        size = self.resize_size(*images[0].size)
        return [img.resize(size, Image.BICUBIC) for img in images] if size else list(images)

    def crop_and_flip(
        self, width: int, height: int, rng: torch.Generator | None
    ) -> tuple[int, int, int, bool]:
        """The random second part of :meth:`apply` for a resized image of ``width`` x ``height``: the crop's
        left, top and side (the whole image: side 0) and whether to flip, drawn from ``rng`` in a fixed order."""
        x, y, side = 0, 0, 0
        if self.preprocess in ("resize_and_crop", "crop", "scale_width_and_crop"):
            if width < self.crop_size or height < self.crop_size:
                raise UsageError(
                    f"image of {width}x{height} is smaller than --crop-size {self.crop_size} "
                    f"(with --preprocess {self.preprocess})"
                )
            side = self.crop_size
            if self.train:
                x = int(torch.randint(0, width - side + 1, (1,), generator=rng))
                y = int(torch.randint(0, height - side + 1, (1,), generator=rng))
            else:
                x, y = (width - side) // 2, (height - side) // 2
        flip = self.train and self.flip and float(torch.rand((1,), generator=rng)) < 0.5
        return x, y, side, flip

    def apply(self, images: Sequence[Image.Image], rng: torch.Generator | None) -> list[Image.Image]:
        """Apply the same random resize/crop/flip to every image of ``images``."""
        return self.crop_flip(self.resize(images), rng)

    def crop_flip(self, images: Sequence[Image.Image], rng: torch.Generator | None) -> list[Image.Image]:
        """The random part of :meth:`apply` on resized ``images`` (:meth:`crop_and_flip` draws it)."""
        x, y, side, flip = self.crop_and_flip(*images[0].size, rng)
        out = [img.crop((x, y, x + side, y + side)) for img in images] if side else list(images)
        return [img.transpose(Image.FLIP_LEFT_RIGHT) for img in out] if flip else out


def _round4(value: int) -> int:
    return max(4, int(round(value / 4)) * 4)


def to_uint8(img: Image.Image) -> torch.Tensor:
    """PIL image → uint8 tensor (C, H, W)."""
    array = np.asarray(img, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def to_unit_range(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 pixels → float in [-1, 1], the network's input."""
    return pixels.float().div_(127.5).sub_(1.0)


def to_tensor(img: Image.Image) -> torch.Tensor:
    """PIL image → float tensor (C, H, W) in [-1, 1]."""
    return to_unit_range(to_uint8(img))
