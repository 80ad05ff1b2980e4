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

    def apply(self, images: Sequence[Image.Image], rng: torch.Generator | None) -> list[Image.Image]:
        """Apply the same random resize/crop/flip to every image of ``images``."""
        width, height = images[0].size
        out = list(images)
        size = None
        if self.preprocess == "resize_and_crop":
            size = (self.load_size, self.load_size) if self.train else (self.crop_size, self.crop_size)
        elif self.preprocess in ("scale_width", "scale_width_and_crop"):
            new_h = max(int(self.load_size * height / width), self.crop_size)
            size = (self.load_size, new_h)
        elif self.preprocess == "none":
            size = (_round4(width), _round4(height))
        if size is not None and size != (width, height):
            out = [img.resize(size, Image.BICUBIC) for img in out]
        if self.preprocess in ("resize_and_crop", "crop", "scale_width_and_crop"):
            width, height = out[0].size
            if width < self.crop_size or height < self.crop_size:
                raise UsageError(
                    f"image of {width}x{height} is smaller than --crop-size {self.crop_size} "
                    f"(with --preprocess {self.preprocess})"
                )
            if self.train:
                x = int(torch.randint(0, width - self.crop_size + 1, (1,), generator=rng))
                y = int(torch.randint(0, height - self.crop_size + 1, (1,), generator=rng))
            else:
                x, y = (width - self.crop_size) // 2, (height - self.crop_size) // 2
            out = [img.crop((x, y, x + self.crop_size, y + self.crop_size)) for img in out]
        if self.train and self.flip and float(torch.rand((1,), generator=rng)) < 0.5:
            out = [img.transpose(Image.FLIP_LEFT_RIGHT) for img in out]
        return out


def _round4(value: int) -> int:
    return max(4, int(round(value / 4)) * 4)


def to_tensor(img: Image.Image) -> torch.Tensor:
    """PIL image → float tensor (C, H, W) in [-1, 1]."""
    array = np.asarray(img, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(127.5).sub_(1.0)
