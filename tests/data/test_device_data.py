"""The training set kept on the device: batches bit-identical to the DataLoader's, on the CPU (the same code
runs on CUDA), for every layout and transform it takes; what ``--data-on-device`` picks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from pix2pix_ilm.config import TrainConfig
from pix2pix_ilm.data.device_data import DeviceImages, device_images, estimated_bytes
from pix2pix_ilm.errors import UsageError
from pix2pix_ilm.training.distributed import Distributed
from pix2pix_ilm.training.loop import TrainingBatches, training_dataset
from pix2pix_ilm.training.state import Counters

CPU = torch.device("cpu")


def _config(root: Path, **options) -> TrainConfig:
    return TrainConfig(
        **{"name": "d", "dataroot": str(root), "netG": "unet_32", "load_size": 72, "crop_size": 64, **options}
    )


def _batches(config: TrainConfig, device: str | None, epoch: int, start: int = 0) -> list[dict]:
    """The batches of an epoch from the DataLoader (``device`` None) or kept on ``device``."""
    dataset, _ = training_dataset(config)
    dist = Distributed.set_up(CPU)
    images = DeviceImages(dataset, torch.device(device)) if device else None
    return list(TrainingBatches(dataset, config, dist, images).epoch(Counters(epoch, start, 0)))


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"direction": "BtoA", "batch_size": 2},
        {"input_nc": 1, "no_flip": True},
        {"preprocess": "crop", "crop_size": 192},
        {"preprocess": "scale_width_and_crop", "load_size": 160, "crop_size": 96, "output_nc": 1},
        {"preprocess": "none", "batch_size": 3},
    ],
    ids=["default", "btoa-batch2", "grey-input-noflip", "crop", "scale-width-crop", "none-batch3"],
)
@pytest.mark.parametrize(
    "device",
    ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))],
)
def test_device_batches_equal_the_dataloaders_bit_for_bit(five_facades, options, device):
    config = _config(five_facades, seed=3, **options)
    for epoch, start in ((1, 0), (2, 0), (4, 1)):  # another epoch: other crops and flips; a mid-epoch resume
        expected, got = _batches(config, None, epoch, start), _batches(config, device, epoch, start)
        assert len(got) == len(expected) > 0
        for want, have in zip(expected, got, strict=True):
            for key in ("A", "B"):
                assert have[key].dtype == want[key].dtype == torch.float32
                assert have[key].device.type == device
                assert torch.equal(have[key].cpu(), want[key]), (options, epoch, key)


def test_crops_and_flips_vary_and_match_an_independent_computation(five_facades):
    """Item 0 at 72² cropped to 64² over many seeds: every offset 0..8 and both flips occur, and each batch
    is the numpy slice of the resized image, mirrored when flipped."""
    import numpy as np

    config = _config(five_facades)
    dataset, _ = training_dataset(config)
    images = DeviceImages(dataset, CPU)
    with Image.open(five_facades / "train" / "1.jpg") as img:
        left = np.asarray(
            img.convert("RGB").crop((0, 0, img.width // 2, img.height)).resize((72, 72), Image.BICUBIC)
        )
    offsets, flips = set(), set()
    for seed in range(60):
        got = (
            ((images.batch([(0, seed)])["A"][0] + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
        )
        matches = [
            (x, y, flip)
            for x in range(9)
            for y in range(9)
            for flip in (False, True)
            if np.array_equal(
                got, left[y : y + 64, x : x + 64][:, ::-1] if flip else left[y : y + 64, x : x + 64]
            )
        ]
        assert len(matches) >= 1
        offsets.update((x, y) for x, y, _ in matches)
        flips.update(flip for *_, flip in matches)
    assert flips == {False, True}
    assert {x for x, _ in offsets} == set(range(9)) and {y for _, y in offsets} == set(range(9))


def test_the_size_estimate_is_what_the_device_holds(five_facades):
    for options in ({}, {"input_nc": 1}, {"preprocess": "none"}):
        config = _config(five_facades, **options)
        dataset, _ = training_dataset(config)
        images = DeviceImages(dataset, CPU)
        assert estimated_bytes(dataset) == images.real_a.numel() + images.real_b.numel()


def test_modes_and_what_cannot_be_kept(five_facades, tmp_path):
    config = _config(five_facades)
    dataset, _ = training_dataset(config)
    assert device_images(dataset, "off", CPU) is None
    assert device_images(dataset, "auto", CPU) is None  # auto: CUDA only
    assert isinstance(device_images(dataset, "on", CPU), DeviceImages)
    # Images of two sizes kept as they are (--preprocess none) cannot share one tensor.
    mixed = tmp_path / "mixed"
    (mixed / "train").mkdir(parents=True)
    Image.new("RGB", (128, 64), "red").save(mixed / "train" / "1.png")
    Image.new("RGB", (192, 96), "blue").save(mixed / "train" / "2.png")
    config = _config(mixed, preprocess="none")
    dataset, _ = training_dataset(config)
    with pytest.raises(
        UsageError,
        match=r"2\.png is resized to 96x96, the first image to 64x64: --data-on-device needs one size",
    ):
        device_images(dataset, "on", CPU)
