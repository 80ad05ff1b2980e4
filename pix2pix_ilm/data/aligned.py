"""Aligned (A|B side by side) and single-image datasets, and a sampler whose order and augmentation come
from ``(seed, epoch)`` alone, so that a run resumed mid-epoch sees what an uninterrupted one would."""

from __future__ import annotations

import abc
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset

from pix2pix_ilm.data.images import Item, load_rgb, record_bad_images
from pix2pix_ilm.data.transforms import TransformSpec, to_tensor
from pix2pix_ilm.errors import UsageError

BAD_IMAGE_POLICIES = ("error", "substitute", "drop")
EPOCH_SEED_STRIDE = 1_000_003  # a prime: every (seed, epoch) gets its own data-order seed


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch's data order and augmentation (and of its DataLoader's own generator)."""
    return seed * EPOCH_SEED_STRIDE + epoch


class _ImageFolderDataset(Dataset, abc.ABC):
    """An image that fails to decode when used (``bad_image``): ``"error"`` stops with its name;
    ``"substitute"`` (training) uses the next good image with the same augmentation; ``"drop"`` (test) gives
    ``None``, which :func:`collate_skipping_none` drops."""

    def __init__(self, paths: Sequence[Item], bad_image: str) -> None:
        if bad_image not in BAD_IMAGE_POLICIES:
            raise ValueError(f"bad_image must be one of {BAD_IMAGE_POLICIES}, got {bad_image!r}")
        self.paths = list(paths)
        self.bad_image = bad_image
        self.bad_indices: set[int] = set()
        self.bad_list: Path | None = None  # where skipped files are recorded (see record_bad_images)

    def __len__(self) -> int:
        return len(self.paths)

    @abc.abstractmethod
    def _load_item(self, index: int, seed: int | None) -> dict:
        """Decode and transform item ``index`` (``seed``: its augmentation seed, None in test mode)."""

    def __getitem__(self, item: int | tuple[int, int]) -> dict | None:
        index, seed = item if isinstance(item, tuple) else (item, None)
        for offset in range(len(self.paths)):
            candidate = (index + offset) % len(self.paths)
            if candidate in self.bad_indices:
                continue
            try:
                return self._load_item(candidate, seed)
            except UsageError as err:
                if self.bad_image == "error":
                    raise UsageError(
                        f"{err} (found while reading it; use --skip-bad-images to skip such files, or "
                        "--validate-images full to check every file before starting)"
                    ) from err
                self.bad_indices.add(candidate)
                record_bad_images(self.bad_list, [str(err)])
                action = "dropped" if self.bad_image == "drop" else "the next good image is used in its place"
                warnings.warn(
                    f"skipping an image that failed to decode: {err}; {action} "
                    f"({len(self.bad_indices)} bad image(s) so far)",
                    stacklevel=2,
                )
                if self.bad_image == "drop":
                    return None
        raise UsageError(f"none of the {len(self.paths)} images could be decoded")


class AlignedDataset(_ImageFolderDataset):
    """Images holding A (left) and B (right) side by side; items are ``(index, augmentation_seed)`` from
    :class:`EpochBatchSampler`, or a plain index without randomness (test). A and B get the same crop and flip,
    then become ``input_nc`` / ``output_nc`` channels (1: grey)."""

    def __init__(
        self,
        paths: Sequence[Item],
        transform: TransformSpec,
        direction: str = "AtoB",
        input_nc: int = 3,
        output_nc: int = 3,
        bad_image: str = "error",
    ) -> None:
        if direction not in ("AtoB", "BtoA"):
            raise UsageError(f"--direction must be AtoB or BtoA, got {direction!r}")
        super().__init__(paths, bad_image)
        self.transform = transform
        self.direction = direction
        self.input_nc, self.output_nc = input_nc, output_nc

    def _read(self, index: int) -> tuple[Image.Image, Image.Image, Path]:
        """Item ``index``'s A and B images (before ``direction``) and the file that names it."""
        path = self.paths[index]
        image = load_rgb(path)
        width, height = image.size
        if width != 2 * height:
            raise UsageError(
                f"aligned image {path} is {width}x{height}: its width must be twice its height (A|B side by side)"
            )
        half = width // 2
        return image.crop((0, 0, half, height)), image.crop((half, 0, width, height)), path

    def resized(self, index: int) -> tuple[Image.Image, Image.Image, Path]:
        """Item ``index``'s input and target (after ``direction``), resized as the transform says and in
        their channel counts: what is left of the transform is its random crop and flip."""
        image_a, image_b, path = self._read(index)
        real_a, real_b = (image_a, image_b) if self.direction == "AtoB" else (image_b, image_a)
        real_a, real_b = self.transform.resize([real_a, real_b])
        return (
            real_a.convert("L") if self.input_nc == 1 else real_a,
            real_b.convert("L") if self.output_nc == 1 else real_b,
            path,
        )

    def _load_item(self, index: int, seed: int | None) -> dict:
        real_a, real_b, path = self.resized(index)
        rng = torch.Generator().manual_seed(seed) if seed is not None else None
        try:
            real_a, real_b = self.transform.crop_flip([real_a, real_b], rng)
        except UsageError as err:
            raise UsageError(f"image {path}: {err}") from err
        return {"A": to_tensor(real_a), "B": to_tensor(real_b), "path": str(path), "index": index}


class SingleDataset(_ImageFolderDataset):
    """A folder of plain input images (no B half), for ``test --single``."""

    def __init__(
        self, paths: Sequence[Path], transform: TransformSpec, input_nc: int = 3, bad_image: str = "error"
    ) -> None:
        super().__init__(paths, bad_image)
        self.transform = transform
        self.input_nc = input_nc

    def _load_item(self, index: int, seed: int | None) -> dict:
        path = self.paths[index]
        image = load_rgb(path, self.input_nc)
        try:
            (real_a,) = self.transform.apply([image], None)
        except UsageError as err:
            raise UsageError(f"image {path}: {err}") from err
        return {"A": to_tensor(real_a), "path": str(path), "index": index, "size": image.size}


def collate_skipping_none(items: list[dict | None]) -> dict | None:
    """``default_collate`` of the items that are not ``None`` (``None`` when none is left)."""
    kept = [item for item in items if item is not None]
    return torch.utils.data.default_collate(kept) if kept else None


class EpochBatchSampler(torch.utils.data.Sampler):
    """Batches of ``(index, augmentation_seed)`` for one epoch, reproducible from ``(seed, epoch)``.

    Under torchrun each global batch of ``batch_size * num_replicas`` is split between the processes, and an
    incomplete last one is dropped so that all take the same steps. ``start_batch`` skips the batches done.
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        seed: int,
        epoch: int,
        *,
        shuffle: bool = True,
        start_batch: int = 0,
        rank: int = 0,
        num_replicas: int = 1,
    ) -> None:
        self.num_samples, self.batch_size = num_samples, batch_size
        self.seed, self.epoch, self.shuffle = seed, epoch, shuffle
        self.start_batch, self.rank, self.num_replicas = start_batch, rank, num_replicas

    def batches_per_epoch(self) -> int:
        global_batch = self.batch_size * self.num_replicas
        if self.num_replicas > 1:
            return self.num_samples // global_batch
        return -(-self.num_samples // global_batch)

    def __len__(self) -> int:
        return max(0, self.batches_per_epoch() - self.start_batch)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        gen = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        n = self.num_samples
        order = torch.randperm(n, generator=gen) if self.shuffle else torch.arange(n)
        seeds = torch.randint(0, 2**62, (n,), generator=gen)
        global_batch = self.batch_size * self.num_replicas
        for b in range(self.start_batch, self.batches_per_epoch()):
            lo = b * global_batch + self.rank * self.batch_size
            hi = min(lo + self.batch_size, self.num_samples, (b + 1) * global_batch)
            yield [(int(order[i]), int(seeds[order[i]])) for i in range(lo, hi)]
