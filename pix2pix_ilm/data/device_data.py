"""Training data kept on the device (``--data-on-device``): every pair decoded and resized once, each step's
crop and flip taken there from the same per-item seeds as the DataLoader's, so the batches are bit-identical."""

from __future__ import annotations

import torch

from pix2pix_ilm.data.aligned import AlignedDataset
from pix2pix_ilm.data.images import image_header
from pix2pix_ilm.data.transforms import to_uint8, to_unit_range
from pix2pix_ilm.errors import UsageError

# ``auto`` keeps a set on a CUDA device when it takes at most this share of the device's free memory.
FREE_MEMORY_SHARE = 0.1


class DeviceImages:
    """A dataset's resized pairs as two uint8 tensors (N, C, H, W) on ``device``; :meth:`batch` crops, flips
    and scales a batch of ``(index, augmentation_seed)`` items as :class:`AlignedDataset` would."""

    def __init__(self, dataset: AlignedDataset, device: torch.device) -> None:
        self.transform = dataset.transform
        first_a, first_b, _ = dataset.resized(0)
        shapes = to_uint8(first_a).shape, to_uint8(first_b).shape
        self.real_a, self.real_b = (
            torch.empty((len(dataset), *shape), dtype=torch.uint8) for shape in shapes
        )
        for index in range(len(dataset)):
            real_a, real_b, path = dataset.resized(index)
            pixels = to_uint8(real_a), to_uint8(real_b)
            if (pixels[0].shape, pixels[1].shape) != shapes:
                raise UsageError(
                    f"{path} is resized to {real_a.size[0]}x{real_a.size[1]}, the first image to "
                    f"{first_a.size[0]}x{first_a.size[1]}: --data-on-device needs one size"
                )
            self.real_a[index], self.real_b[index] = pixels
        self.real_a, self.real_b = self.real_a.to(device), self.real_b.to(device)

    def batch(self, items: list[tuple[int, int]]) -> dict[str, torch.Tensor]:
        height, width = self.real_a.shape[-2:]
        crops = [
            self.transform.crop_and_flip(width, height, torch.Generator().manual_seed(s)) for _, s in items
        ]
        return {
            key: to_unit_range(
                torch.stack([_crop_flip(images[i], *crop) for (i, _), crop in zip(items, crops, strict=True)])
            )
            for key, images in (("A", self.real_a), ("B", self.real_b))
        }


def _crop_flip(pixels: torch.Tensor, x: int, y: int, side: int, flip: bool) -> torch.Tensor:
    if side:
        pixels = pixels[:, y : y + side, x : x + side]
    return pixels.flip(-1) if flip else pixels


def estimated_bytes(dataset: AlignedDataset) -> int:
    """The size of the set on the device, from the first item's header (every item resizes alike)."""
    first = dataset.paths[0]
    (width, height), _ = image_header(first[0] if isinstance(first, tuple) else first)
    width //= 1 if isinstance(first, tuple) else 2  # aligned: A|B side by side
    resized = dataset.transform.resize_size(width, height) or (width, height)
    return len(dataset) * (dataset.input_nc + dataset.output_nc) * resized[0] * resized[1]


def device_images(dataset: AlignedDataset, mode: str, device: torch.device) -> DeviceImages | None:
    """The set on ``device`` as ``--data-on-device`` says: ``on``, or ``auto`` on a CUDA device where it fits in
    :data:`FREE_MEMORY_SHARE` of the free memory and every image decodes; None: the DataLoader reads it."""
    if mode == "off" or (mode == "auto" and device.type != "cuda"):
        return None
    if mode == "auto":
        free, _ = torch.cuda.mem_get_info(device)
        if estimated_bytes(dataset) > FREE_MEMORY_SHARE * free:
            return None
    try:
        return DeviceImages(dataset, device)
    except UsageError:
        if mode == "on":
            raise
        return None  # a bad image or mixed sizes: the DataLoader's path reports or skips them
