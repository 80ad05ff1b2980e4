"""Paired A/B folders: matching by stem, the errors that name unpaired files, and A and B cropped alike."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from pix2pix_ilm.data.aligned import AlignedDataset
from pix2pix_ilm.data.images import NAMED_BAD_IMAGES, select_files
from pix2pix_ilm.data.paired import PairedDataset, paired_files
from pix2pix_ilm.data.transforms import TransformSpec
from tests.faults import cli_error, good_pairs, train_args, write_folder, write_paired

pytestmark = pytest.mark.usefixtures("one_thread")

JITTER = TransformSpec("resize_and_crop", load_size=80, crop_size=32, flip=True, train=True)


def _halves(image: Image.Image) -> tuple[Image.Image, Image.Image]:
    half = image.width // 2
    return image.crop((0, 0, half, image.height)), image.crop((half, 0, image.width, image.height))


def _paired_args(root, ckpt, name: str, *extra: str) -> list[str]:
    return train_args(root, ckpt, name, "--dataset-mode", "paired", *extra)


def test_pairs_are_matched_by_stem_whatever_their_extensions(pairs, tmp_path):
    root = write_paired(
        tmp_path, "train", {"10": pairs["train3"], "2": pairs["train2"], "1": pairs["train1"]}
    )
    (root / "train_A" / ".hidden.jpg").write_bytes(b"")
    (root / "train_B" / "notes.txt").write_text("not an image")
    found = paired_files(root, "train")
    assert [(a.name, b.name) for a, b in found] == [
        ("1.jpg", "1.png"),
        ("2.png", "2.jpg"),
        ("10.jpg", "10.png"),
    ]
    assert all(a.parent.name == "train_A" and b.parent.name == "train_B" for a, b in found)
    assert select_files(found, slice(1, None), 1) == [found[1]]  # --subset, then --max-dataset-size


def test_a_file_without_its_partner_is_named(pairs, tmp_path, capsys):
    root = write_paired(tmp_path / "data", "train", {str(n): pairs[f"train{n}"] for n in (1, 2, 3)})
    (root / "train_B" / "2.jpg").unlink()
    write_folder(root, "train_B", {"7.png": _halves(pairs["train4"])[1]})
    msg = cli_error(capsys, *_paired_args(root, tmp_path / "ckpt", "x"))
    assert "2 problem(s) pairing" in msg and "matched by file stem" in msg
    assert f"{root / 'train_A' / '2.png'} has no 2.* in {root / 'train_B'}/" in msg
    assert f"{root / 'train_B' / '7.png'} has no 7.* in {root / 'train_A'}/" in msg
    assert not (tmp_path / "ckpt" / "x").exists()


def test_many_unpaired_files_are_named_up_to_the_limit_then_counted(pairs, tmp_path, capsys):
    photo = _halves(pairs["train1"])[0]
    extra = NAMED_BAD_IMAGES + 5
    root = write_paired(tmp_path / "data", "train", {"0": pairs["train2"]})
    write_folder(root, "train_A", {f"{n}.jpg": photo for n in range(1, extra + 1)})
    msg = cli_error(capsys, *_paired_args(root, tmp_path / "ckpt", "x"))
    assert f"{extra} problem(s)" in msg and msg.endswith("; and 5 more")
    assert msg.count("has no") == NAMED_BAD_IMAGES and f"{NAMED_BAD_IMAGES}.jpg has no" in msg


def test_missing_a_folder_two_files_of_one_stem_and_pairs_of_two_sizes(pairs, tmp_path, capsys):
    root = write_folder(tmp_path / "data", "train", good_pairs(pairs, "train1"))
    msg = cli_error(capsys, *_paired_args(root, tmp_path / "ckpt", "x"))
    assert f"{root / 'train_A'} not found" in msg and "needs" in msg and "it has train/" in msg

    write_paired(root, "train", {"1": pairs["train1"], "2": pairs["train2"]})  # 1.jpg / 1.png, 2.png / 2.jpg
    write_folder(root, "train_A", {"1.png": _halves(pairs["train3"])[0]})
    msg = cli_error(capsys, *_paired_args(root, tmp_path / "ckpt", "x"))
    assert f"{root / 'train_A' / '1.jpg'} and 1.png have the same stem" in msg

    (root / "train_A" / "1.png").unlink()
    write_folder(root, "train_B", {"2.jpg": _halves(pairs["train2"])[1].resize((60, 64))})
    msg = cli_error(capsys, *_paired_args(root, tmp_path / "ckpt", "x"))
    assert f"paired images differ in size: {root / 'train_A' / '2.png'} is 64x64" in msg
    assert f"{root / 'train_B' / '2.jpg'} is 60x64" in msg


def test_a_and_b_get_the_same_crop_and_flip(pairs, tmp_path):
    photo = _halves(pairs["train1"])[0]
    root = write_folder(tmp_path, "train_A", {"1.png": photo})
    write_folder(root, "train_B", {"1.png": photo})
    dataset = PairedDataset(paired_files(root, "train"), JITTER)
    items = [dataset[(0, seed)] for seed in range(16)]
    for item in items:
        assert torch.equal(item["A"], item["B"])
    assert len({tuple(item["A"][:, 0, :4].flatten().tolist()) for item in items}) > 8  # the jitter varies


@pytest.mark.parametrize("direction", ["AtoB", "BtoA"])
@pytest.mark.parametrize("channels", [3, 1])
def test_a_pair_is_the_same_sample_as_its_aligned_image(pairs, tmp_path, direction, channels):
    """Stored losslessly, the two layouts give the same tensors for the same (index, seed), grey included."""
    aligned = write_folder(tmp_path / "aligned", "train", {"5.png": pairs["test1"]})
    image_a, image_b = _halves(pairs["test1"])
    paired = write_folder(tmp_path / "paired", "train_A", {"5.png": image_a})
    write_folder(paired, "train_B", {"5.png": image_b})
    options = {"direction": direction, "input_nc": channels, "output_nc": channels}
    one = AlignedDataset([aligned / "train" / "5.png"], JITTER, **options)
    other = PairedDataset(paired_files(paired, "train"), JITTER, **options)
    for seed in range(6):
        x, y = one[(0, seed)], other[(0, seed)]
        assert x["A"].shape == (channels, 32, 32) and x["B"].shape == (channels, 32, 32)
        assert torch.equal(x["A"], y["A"]) and torch.equal(x["B"], y["B"])
    assert other[0]["path"] == str(paired / ("train_A" if direction == "AtoB" else "train_B") / "5.png")
