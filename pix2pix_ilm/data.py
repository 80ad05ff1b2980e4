"""Aligned (A|B side by side) and single-image datasets, their transforms, and a deterministic sampler.

Determinism: the order of an epoch and every image's random crop/flip come from ``(seed, epoch)`` alone,
not from a global RNG. A run resumed in the middle of an epoch therefore sees exactly the images and jitter
an uninterrupted run would have seen, with any number of data-loading workers.
"""

from __future__ import annotations

import abc
import re
import struct
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from pix2pix_ilm.config import VALIDATION_MODES
from pix2pix_ilm.errors import UsageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".tif", ".tiff", ".webp")

# What PIL may raise on a damaged or hostile file (DecompressionBombError: a header claiming a gigantic size).
_DECODE_ERRORS = (
    OSError,  # UnidentifiedImageError, "image file is truncated", "broken data stream"
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    struct.error,
    Image.DecompressionBombError,
)


def natural_key(path: Path) -> list:
    """Sort key that orders ``2.jpg`` before ``10.jpg``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def phase_folder(dataroot: Path | str, phase: str) -> Path:
    """``<dataroot>/<phase>``, or a :class:`UsageError` saying what is wrong and which subfolders exist."""
    root = Path(dataroot)
    if root.is_file():
        raise UsageError(
            f"--dataroot {root} is a file; it must be a folder holding {phase}/ (and test/, ...)"
        )
    if not root.is_dir():
        raise UsageError(f"--dataroot {root} is not a folder")
    folder = root / phase
    if not folder.is_dir():
        subfolders = sorted(p.name + "/" for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        found = f"it has {', '.join(subfolders)}" if subfolders else "it has no subfolders"
        what = "is a file, not a folder" if folder.exists() else "not found"
        raise UsageError(f"{folder} {what}: --phase {phase} needs {root}/{phase}/ ({found})")
    return folder


def list_images(folder: Path | str) -> list[Path]:
    """Image files directly in ``folder``, naturally sorted; hidden files and other extensions are ignored."""
    folder = Path(folder)
    if folder.is_file():
        raise UsageError(f"{folder} is a file, not a folder of images")
    if not folder.is_dir():
        raise UsageError(f"image folder not found: {folder}")
    files = [
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    ]
    return sorted(files, key=natural_key)


def load_rgb(path: Path, channels: int = 3) -> Image.Image:
    """Decode an image fully and convert it to RGB (or L for 1 channel).

    Conversions: palette and RGBA/LA images are converted by PIL (alpha dropped), grayscale is repeated to
    RGB, 16-bit and 32-bit integer images are scaled to 8 bits (top 8 bits) rather than clipped.
    """
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                array = np.asarray(img, dtype=np.int64)
                shift = 8 if img.mode.startswith("I;16") or array.max() < 65536 else 24
                img = Image.fromarray(np.clip(array >> shift, 0, 255).astype(np.uint8), mode="L")
            elif img.mode == "F":
                array = np.asarray(img, dtype=np.float32)
                img = Image.fromarray(np.clip(array, 0, 255).astype(np.uint8), mode="L")
            return img.convert("L" if channels == 1 else "RGB")
    except _DECODE_ERRORS as err:
        raise UsageError(f"cannot decode image {path}: {err}") from err


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file header, without decoding the pixels."""
    return _image_header(path)[0]


def _image_header(path: Path) -> tuple[tuple[int, int], str]:
    """((width, height), PIL format name) from the file header, without decoding the pixels."""
    try:
        with Image.open(path) as img:
            return img.size, img.format or ""
    except _DECODE_ERRORS as err:
        raise UsageError(f"cannot decode image {path}: {err}") from err


def _ends_with_trailer(path: Path, image_format: str) -> bool:
    """Whether a JPEG ends with its EOI marker (FF D9) or a PNG with its IEND chunk.

    Trailing zero bytes and whitespace are allowed. False for other formats, and for files with other data
    after the trailer (which PIL may still decode): the caller then decodes the file to decide.
    """
    trailers = {"JPEG": b"\xff\xd9", "MPO": b"\xff\xd9", "PNG": b"IEND\xaeB`\x82"}
    trailer = trailers.get(image_format)
    if trailer is None:
        return False
    with open(path, "rb") as handle:
        handle.seek(0, 2)
        handle.seek(max(0, handle.tell() - 1024))
        tail = handle.read()
    return tail.rstrip(b"\x00 \t\r\n").endswith(trailer)


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


BAD_IMAGE_POLICIES = ("error", "substitute", "drop")


class _ImageFolderDataset(Dataset, abc.ABC):
    """What to do when an image that passed validation fails to decode when it is used (``bad_image``):

    * ``"error"``: a :class:`UsageError` naming the file (the run stops; its last checkpoint is kept);
    * ``"substitute"`` (training with ``--skip-bad-images``): use the next decodable image of the list
      instead, with the same augmentation, so batches and step counts stay the same and the choice is
      deterministic; a warning names the file and counts the bad images so far (in this process);
    * ``"drop"`` (``test --skip-bad-images``): the item is ``None``; :func:`collate_skipping_none` drops it.
    """

    def __init__(self, paths: Sequence[Path], bad_image: str) -> None:
        if bad_image not in BAD_IMAGE_POLICIES:
            raise ValueError(f"bad_image must be one of {BAD_IMAGE_POLICIES}, got {bad_image!r}")
        self.paths = list(paths)
        self.bad_image = bad_image
        self.bad_indices: set[int] = set()

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
    """Images holding A (left half) and B (right half) side by side; ``direction`` picks the input.

    Items are requested as ``(index, augmentation_seed)`` pairs by :class:`EpochBatchSampler`; a plain index
    uses no randomness (test mode). ``bad_image``: see :class:`_ImageFolderDataset`.
    """

    def __init__(
        self,
        paths: Sequence[Path],
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

    def _load_item(self, index: int, seed: int | None) -> dict:
        path = self.paths[index]
        image = load_rgb(path)
        width, height = image.size
        if width != 2 * height:
            raise UsageError(
                f"aligned image {path} is {width}x{height}: its width must be twice its height (A|B side by side)"
            )
        half = width // 2
        left, right = image.crop((0, 0, half, height)), image.crop((half, 0, width, height))
        real_a, real_b = (left, right) if self.direction == "AtoB" else (right, left)
        rng = torch.Generator().manual_seed(seed) if seed is not None else None
        try:
            real_a, real_b = self.transform.apply([real_a, real_b], rng)
        except UsageError as err:
            raise UsageError(f"image {path}: {err}") from err
        if self.input_nc == 1:
            real_a = real_a.convert("L")
        if self.output_nc == 1:
            real_b = real_b.convert("L")
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
        return {"A": to_tensor(real_a), "path": str(path), "index": index}


def collate_skipping_none(items: list[dict | None]) -> dict | None:
    """``default_collate`` of the items that are not ``None`` (``None`` when none is left)."""
    kept = [item for item in items if item is not None]
    return torch.utils.data.default_collate(kept) if kept else None


class EpochBatchSampler(torch.utils.data.Sampler):
    """Batches of ``(index, augmentation_seed)`` for one epoch, reproducible from ``(seed, epoch)``.

    With ``num_replicas > 1`` (torchrun), each global batch of ``batch_size * num_replicas`` samples is split
    between the processes, so the union of the processes' batches is the single-process batch of that size;
    an incomplete last global batch is dropped there so that every process takes the same number of steps.
    ``start_batch`` skips the batches already done (exact mid-epoch resume).
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

    def _plan(self) -> tuple[torch.Tensor, torch.Tensor]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = (
            torch.randperm(self.num_samples, generator=gen)
            if self.shuffle
            else torch.arange(self.num_samples)
        )
        seeds = torch.randint(0, 2**62, (self.num_samples,), generator=gen)
        return order, seeds

    def batches_per_epoch(self) -> int:
        global_batch = self.batch_size * self.num_replicas
        if self.num_replicas > 1:
            return self.num_samples // global_batch
        return -(-self.num_samples // global_batch)

    def __len__(self) -> int:
        return max(0, self.batches_per_epoch() - self.start_batch)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        order, seeds = self._plan()
        global_batch = self.batch_size * self.num_replicas
        for b in range(self.start_batch, self.batches_per_epoch()):
            lo = b * global_batch + self.rank * self.batch_size
            hi = min(lo + self.batch_size, self.num_samples, (b + 1) * global_batch)
            yield [(int(order[i]), int(seeds[order[i]])) for i in range(lo, hi)]


def select_files(files: list[Path], subset: slice | None, max_size: int | None) -> list[Path]:
    """Apply ``--subset`` (a slice of the naturally sorted list) then ``--max-dataset-size``."""
    if subset is not None:
        files = files[subset]
    if max_size is not None:
        if max_size < 1:
            raise UsageError(f"--max-dataset-size must be >= 1, got {max_size}")
        files = files[:max_size]
    return files


def check_image(
    path: Path,
    *,
    aligned: bool,
    mode: str = "header",
    transform: TransformSpec | None = None,
    size_multiple: int = 1,
) -> None:
    """Raise :class:`UsageError` naming ``path`` if it cannot be used; see :func:`validate_images`."""
    (width, height), image_format = _image_header(path)
    if width < 1 or height < 1:
        raise UsageError(f"image {path} is empty ({width}x{height})")
    if aligned and width != 2 * height:
        raise UsageError(
            f"aligned image {path} is {width}x{height}: its width must be twice its height (A|B side by side)"
        )
    if mode == "full" or not _ends_with_trailer(path, image_format):
        load_rgb(path)  # a truncated JPEG/PNG (or another format) fails here
    if transform is not None:
        part_w = width // 2 if aligned else width
        problem = transform.problem(part_w, height, size_multiple)
        if problem:
            what = f"each half ({part_w}x{height})" if aligned else "it"
            raise UsageError(f"image {path} is {width}x{height}: {what} {problem}")


def validate_images(
    paths: Sequence[Path],
    *,
    aligned: bool,
    skip_bad: bool,
    mode: str = "header",
    transform: TransformSpec | None = None,
    size_multiple: int = 1,
) -> list[Path]:
    """Check every file before any work, so a bad file cannot stop a run hours later; returns the usable paths.

    ``mode="header"`` (fast) reads each header (format, size, A|B 2:1 shape) and the last bytes of JPEGs and
    PNGs (their end marker: a truncated file lacks it); files without the expected ending, and formats other
    than JPEG and PNG, are decoded in full. ``mode="full"`` decodes every file. With ``transform``, images too
    small for ``--preprocess crop`` and (``size_multiple``) input sizes the generator cannot take are bad too.

    Bad files are an error naming the first one and counting the others, or, with ``skip_bad``, skipped
    with one warning giving the count and an example.
    """
    if mode not in VALIDATION_MODES:
        raise UsageError(f"--validate-images must be one of {', '.join(VALIDATION_MODES)}, got {mode!r}")
    good: list[Path] = []
    bad: list[str] = []
    for path in paths:
        try:
            check_image(path, aligned=aligned, mode=mode, transform=transform, size_multiple=size_multiple)
        except UsageError as err:
            bad.append(str(err))
            continue
        good.append(path)
    if bad and not skip_bad:
        more = f"; {len(bad) - 1} more bad image(s) in the folder" if len(bad) > 1 else ""
        raise UsageError(f"{bad[0]}{more} (use --skip-bad-images to skip such files)")
    if bad:
        warnings.warn(f"skipped {len(bad)} bad image(s) of {len(paths)}, e.g. {bad[0]}", stacklevel=2)
    if not good:
        raise UsageError(f"no usable images: all {len(paths)} were skipped as bad")
    return good
