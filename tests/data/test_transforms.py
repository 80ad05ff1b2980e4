"""The training and test transforms against numpy slicing of the resized image: every random crop is a window
of it, every flip its mirror, the test transform its centre or the whole resize."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from pix2pix_ilm.data.transforms import TransformSpec, to_tensor

IMAGE = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8))  # 50 wide


def _windows(resized: np.ndarray, crop: int) -> dict[tuple[int, int, bool], np.ndarray]:
    """Every crop x crop window of ``resized`` at (x, y), as it is and mirrored left to right."""
    height, width = resized.shape[:2]
    return {
        (x, y, mirrored): window[:, ::-1] if mirrored else window
        for x in range(width - crop + 1)
        for y in range(height - crop + 1)
        for mirrored in (False, True)
        for window in [resized[y : y + crop, x : x + crop]]
    }


def _which(output: Image.Image, windows: dict) -> list[tuple[int, int, bool]]:
    return [key for key, window in windows.items() if np.array_equal(np.asarray(output), window)]


def test_training_crops_are_windows_of_the_resize_and_flips_their_mirror():
    spec = TransformSpec("resize_and_crop", load_size=36, crop_size=32, flip=True, train=True)
    windows = _windows(np.asarray(IMAGE.resize((36, 36), Image.BICUBIC)), 32)
    seen = []
    for seed in range(64):
        (output,) = spec.apply([IMAGE], torch.Generator().manual_seed(seed))
        found = _which(output, windows)
        assert len(found) == 1, (seed, found)  # exactly one window (a random image has no repeats)
        seen += found
    offsets = {(x, y) for x, y, _ in seen}
    assert len(offsets) >= 15 and {x for x, _ in offsets} == {y for _, y in offsets} == set(range(5))
    assert 16 <= sum(mirrored for *_, mirrored in seen) <= 48  # about half the samples are flipped
    # the same seed, the same window
    again = spec.apply([IMAGE], torch.Generator().manual_seed(7))[0]
    assert _which(again, windows) == [seen[7]]


def test_no_flip_and_the_test_transforms_are_fixed_windows():
    resized = np.asarray(IMAGE.resize((36, 36), Image.BICUBIC))
    no_flip = TransformSpec("resize_and_crop", load_size=36, crop_size=32, flip=False, train=True)
    for seed in range(16):
        (output,) = no_flip.apply([IMAGE], torch.Generator().manual_seed(seed))
        assert not _which(output, _windows(resized, 32))[0][2]
    # at test time: resize_and_crop resizes straight to the crop size; crop takes the centre
    (whole,) = TransformSpec("resize_and_crop", 36, 32, flip=True, train=False).apply([IMAGE], None)
    assert np.array_equal(np.asarray(whole), np.asarray(IMAGE.resize((32, 32), Image.BICUBIC)))
    (centre,) = TransformSpec("crop", 36, 32, flip=True, train=False).apply([IMAGE], None)
    assert np.array_equal(np.asarray(centre), np.asarray(IMAGE)[4:36, 9:41])
    # the tensor: pixel / 127.5 - 1, channels first
    expected = np.asarray(centre, dtype=np.float32).transpose(2, 0, 1) / 127.5 - 1
    assert torch.allclose(to_tensor(centre), torch.from_numpy(expected), atol=1e-6)
