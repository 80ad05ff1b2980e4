"""Bad input, for real: damaged, odd and hostile image files in train, test, eval and the data tools."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from pix2pix_ilm.cli import main
from pix2pix_ilm.data.images import load_rgb
from pix2pix_ilm.errors import UsageError
from pix2pix_ilm.training.checkpoint import load_checkpoint
from tests.faults import (
    args_for_test,
    cli_error,
    encode,
    good_pairs,
    iterations,
    png_bomb,
    png_broken_inside,
    temp_files,
    train_args,
    trained_run,
    write_folder,
)

pytestmark = pytest.mark.usefixtures("one_thread")


# -- bad input: training data --------------------------------------------------------------------------
BAD_FILES = {
    # case: (file name, content from (jpeg, png) of a good pair, words the error must contain)
    "truncated JPEG": ("cut.jpg", lambda jpg, png: jpg[: len(jpg) * 6 // 10], "truncated"),
    "truncated PNG": ("cut.png", lambda jpg, png: png[: len(png) * 6 // 10], "truncated"),
    "zero-byte file": ("empty.jpg", lambda jpg, png: b"", "cannot decode"),
    "text file named .png": ("notes.png", lambda jpg, png: b"not an image\n", "cannot decode"),
    "width not 2x height": (
        "narrow.png",
        lambda jpg, png: encode(Image.new("RGB", (150, 64)), "PNG"),
        "150x64: its width must be twice its height",
    ),
    "decompression bomb": ("bomb.png", lambda jpg, png: png_bomb(), "exceeds limit"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_training_image_stops_before_any_work_or_is_skipped(case, pairs, tmp_path, capsys):
    name, make, words = BAD_FILES[case]
    good = pairs["train3"]
    bad = make(encode(good, "JPEG", quality=95), encode(good, "PNG"))
    root = write_folder(tmp_path / "data", "train", {**good_pairs(pairs, "train1", "train2"), name: bad})
    ckpt = tmp_path / "ckpt"

    # Found by the (default, header) validation before any work: one line naming the file; no run folder.
    msg = cli_error(capsys, *train_args(root, ckpt, "stop"))
    assert name in msg and words in msg and "--skip-bad-images" in msg
    assert not (ckpt / "stop").exists()

    # --skip-bad-images: one warning with the count; the run trains on the two good images.
    with pytest.warns(UserWarning, match=rf"skipped 1 bad image\(s\) of 3: .*{re.escape(name)}"):
        assert main(train_args(root, ckpt, "skip", "--skip-bad-images")) == 0
    assert iterations(ckpt / "skip") == [1, 2]


def test_grayscale_rgba_palette_16bit_cmyk_and_1bit_images_are_converted(pairs, tmp_path):
    """Converted to RGB, not refused: every mode trains, and the pixel values are the expected ones."""
    rgb = pairs["train1"]
    gray = rgb.convert("L")
    alpha = Image.linear_gradient("L").resize(rgb.size)
    rgba = rgb.copy()
    rgba.putalpha(alpha)
    gray16 = Image.fromarray(np.asarray(gray).astype(np.uint16) * 257)  # 16-bit: v8 * 257
    palette = rgb.convert("P", palette=Image.ADAPTIVE, colors=64)
    files = {
        "rgb.png": rgb,
        "gray.jpg": gray,
        "gray_alpha.png": Image.merge("LA", (gray, alpha)),
        "rgba.png": rgba,
        "palette.png": palette,
        "gray16.png": gray16,
        "cmyk.jpg": rgb.convert("CMYK"),
        "bilevel.png": rgb.convert("1"),
    }
    root = write_folder(tmp_path / "data", "train", files)
    folder = root / "train"
    with Image.open(folder / "gray16.png") as img:
        assert img.mode.startswith("I"), img.mode  # really a 16-bit file
    # 16 bit is scaled to 8 bit (not clipped to white); alpha is dropped; palette indices become colours.
    assert np.array_equal(np.asarray(load_rgb(folder / "gray16.png")), np.asarray(gray.convert("RGB")))
    assert np.array_equal(np.asarray(load_rgb(folder / "rgba.png")), np.asarray(rgb))
    assert np.array_equal(np.asarray(load_rgb(folder / "palette.png")), np.asarray(palette.convert("RGB")))
    for name in files:
        assert load_rgb(folder / name).mode == "RGB", name

    assert main(train_args(root, tmp_path / "ckpt", "modes")) == 0
    assert iterations(tmp_path / "ckpt" / "modes") == list(range(1, len(files) + 1))


def test_images_too_small_for_the_crop_or_unfit_for_the_unet(pairs, tmp_path, capsys):
    tiny = pairs["train3"].resize((40, 20))  # each half 20x20, below --crop-size 32
    root = write_folder(
        tmp_path / "data", "train", {**good_pairs(pairs, "train1", "train2"), "tiny.jpg": tiny}
    )
    ckpt = tmp_path / "ckpt"
    # resize_and_crop (default) scales it up first: it is used.
    assert main(train_args(root, ckpt, "resized")) == 0
    assert iterations(ckpt / "resized") == [1, 2, 3]
    # --preprocess crop cannot: an error naming it before any work, or skipped.
    msg = cli_error(capsys, *train_args(root, ckpt, "crop", "--preprocess", "crop"))
    assert "tiny.jpg is 40x20: each half (20x20) is smaller than --crop-size 32" in msg
    assert not (ckpt / "crop").exists()
    with pytest.warns(UserWarning, match="skipped 1 bad image"):
        assert main(train_args(root, ckpt, "crop", "--preprocess", "crop", "--skip-bad-images")) == 0
    assert iterations(ckpt / "crop") == [1, 2]
    # --preprocess none keeps the size (rounded to 4): 50x50 halves give 48x48, which unet_32 cannot take.
    (root / "train" / "tiny.jpg").unlink()
    write_folder(root, "train", {"odd.jpg": pairs["train3"].resize((100, 50))})
    msg = cli_error(capsys, *train_args(root, ckpt, "none", "--preprocess", "none"))
    assert "odd.jpg is 100x50" in msg and "48x48" in msg and "multiples of 32" in msg


def test_hidden_and_non_image_files_are_ignored(pairs, tmp_path, capsys):
    junk = {
        ".DS_Store": b"\x00\x00\x00\x01Bud1" + bytes(64),
        "._train1.jpg": b"\x00\x05\x16\x07 AppleDouble junk",  # hidden, despite the .jpg
        "notes.txt": b"hello",
        "Thumbs.db": bytes(32),
    }
    root = write_folder(tmp_path / "data", "train", {**good_pairs(pairs, "train1", "train2"), **junk})
    (root / "train" / "folder.jpg").mkdir()  # a folder named like an image
    assert main(train_args(root, tmp_path / "ckpt", "junk")) == 0
    assert iterations(tmp_path / "ckpt" / "junk") == [1, 2]
    only_junk = write_folder(tmp_path / "junk_only", "train", junk)
    msg = cli_error(capsys, *train_args(only_junk, tmp_path / "ckpt", "none"))
    assert "no images in" in msg and str(only_junk / "train") in msg


def test_missing_phase_folder_and_file_as_dataroot(pairs, tmp_path, capsys):
    root = tmp_path / "data"
    write_folder(root, "test", good_pairs(pairs, "test1"))
    write_folder(root, "val", good_pairs(pairs, "test2"))
    msg = cli_error(capsys, *train_args(root, tmp_path / "ckpt", "x"))
    assert f"{root / 'train'} not found" in msg and "it has test/, val/" in msg
    a_file = tmp_path / "facades.tar.gz"
    a_file.write_bytes(b"\x1f\x8b not really")
    msg = cli_error(capsys, *train_args(a_file, tmp_path / "ckpt", "x"))
    assert "facades.tar.gz is a file" in msg
    assert not (tmp_path / "ckpt").exists()


def test_image_that_breaks_only_when_decoded(pairs, tmp_path, capsys):
    """Header, size and trailer are fine; the pixel data stops half-way. Header validation cannot see it."""
    root, ckpt, run, before = trained_run(pairs, tmp_path)
    late = root / "train" / "late.png"
    late.write_bytes(png_broken_inside(encode(pairs["train3"], "PNG")))

    # Without --skip-bad-images the run stops at that image with one line naming it, also when a DataLoader
    # worker process hits it; latest.pt from the last save stays as it was.
    for workers in ("0", "1"):
        msg = cli_error(
            capsys, *train_args(root, ckpt, "run", "--continue", "--n-epochs", "3", "--num-workers", workers)
        )
        assert "late.png" in msg and "truncated" in msg and "--skip-bad-images" in msg, msg
        assert (run / "latest.pt").read_bytes() == before
    assert load_checkpoint(run / "latest.pt")["counters"]["iteration"] == 2
    assert temp_files(ckpt) == []

    # --validate-images full finds it before any work.
    msg = cli_error(capsys, *train_args(root, ckpt, "full", "--validate-images", "full"))
    assert "late.png" in msg and not (ckpt / "full").exists()

    # --skip-bad-images: the next good image takes its place (same number of steps), with a warning.
    with pytest.warns(UserWarning, match=r"late\.png.*next good image is used in its place \(1 bad image"):
        assert main(train_args(root, ckpt, "sub", "--skip-bad-images")) == 0
    assert iterations(ckpt / "sub") == [1, 2, 3]
    assert "late.png" in (ckpt / "sub" / "bad_images.txt").read_text()
    # --skip-bad-images --validate-images full: skipped up front.
    with pytest.warns(UserWarning, match=r"skipped 1 bad image\(s\) of 3: .*late\.png"):
        assert main(train_args(root, ckpt, "pre", "--skip-bad-images", "--validate-images", "full")) == 0
    assert iterations(ckpt / "pre") == [1, 2]


# -- bad input: test and eval --------------------------------------------------------------------------
def test_test_command_on_bad_images(trained, pairs, tmp_path, capsys):
    _, ckpt = trained
    data = write_folder(tmp_path / "data", "test", good_pairs(pairs, "test1", "test2"))
    jpeg = encode(pairs["train3"], "JPEG", quality=95)
    (data / "test" / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    results = tmp_path / "results"
    msg = cli_error(capsys, *args_for_test(data, ckpt, results))
    assert "cut.jpg" in msg and "truncated" in msg
    with pytest.warns(UserWarning, match=r"skipped 1 bad image\(s\) of 3.*cut\.jpg"):
        assert main(args_for_test(data, ckpt, results, "--skip-bad-images")) == 0
    images = results / "base" / "test_latest" / "images"
    assert sorted(p.name.split("_")[0] for p in images.iterdir()) == ["test1"] * 3 + ["test2"] * 3
    assert "cut.jpg" in (results / "base" / "test_latest" / "bad_images.txt").read_text()

    # Broken only inside: found while translating; an error naming it, or dropped with --skip-bad-images.
    (data / "test" / "cut.jpg").unlink()
    (data / "test" / "late.png").write_bytes(png_broken_inside(encode(pairs["train3"], "PNG")))
    msg = cli_error(capsys, *args_for_test(data, ckpt, tmp_path / "r2"))
    assert "late.png" in msg and "truncated" in msg
    with pytest.warns(UserWarning, match=r"late\.png.*dropped"):
        assert main(args_for_test(data, ckpt, tmp_path / "r3", "--skip-bad-images", "--batch-size", "2")) == 0
    out = tmp_path / "r3" / "base" / "test_latest"
    assert len(list((out / "images").iterdir())) == 6 and "late_" not in (out / "index.html").read_text()
    assert "late.png" in (out / "bad_images.txt").read_text()

    msg = cli_error(capsys, *args_for_test(data, ckpt, tmp_path / "r4", "--phase", "val"))
    assert "val not found" in msg and "it has test/" in msg


@pytest.mark.parametrize(
    ("target", "content", "words"),
    [
        ("test1_fake_B.png", "truncated", "truncated"),
        ("test2_real_B.png", "empty", "cannot identify"),
        ("test1_real_B.png", "text", "cannot identify"),
        ("test2_fake_B.png", "bomb", "exceeds limit"),
    ],
)
def test_eval_on_bad_images(trained, tmp_path, capsys, target, content, words):
    data, ckpt = trained
    results = tmp_path / "results"
    assert main(args_for_test(data, ckpt, results)) == 0
    out = results / "base" / "test_latest"
    path = out / "images" / target
    png = path.read_bytes()
    path.write_bytes(
        {"truncated": png[: len(png) // 2], "empty": b"", "text": b"<html>", "bomb": png_bomb()}[content]
    )
    msg = cli_error(capsys, "eval", "--results-dir", str(out), "--metrics", "rmse,ssim")
    assert target in msg and words in msg, msg
    assert not (out / "metrics.json").exists()


def test_data_tools_name_the_bad_file(pairs, tmp_path):
    from pix2pix_ilm.data.cmp import convert_cmp

    base = tmp_path / "base"
    base.mkdir()
    labels = Image.fromarray(np.tile(np.arange(1, 13, dtype=np.uint8), (64, 6))[:, :64], mode="L")
    for stem in ("cmp_b0001", "cmp_b0002"):
        (base / f"{stem}.jpg").write_bytes(encode(pairs["train1"].crop((0, 0, 64, 64)), "JPEG"))
        (base / f"{stem}.png").write_bytes(encode(labels, "PNG"))
    assert len(convert_cmp(base, tmp_path / "ok", size=32)["train"]) == 2
    label = (base / "cmp_b0002.png").read_bytes()
    (base / "cmp_b0002.png").write_bytes(label[: len(label) // 2])
    with pytest.raises(UsageError, match="cmp_b0002"):
        convert_cmp(base, tmp_path / "bad", size=32)
    (base / "cmp_b0002.png").write_bytes(label)
    (base / "cmp_b0001.jpg").write_bytes(b"")
    with pytest.raises(UsageError, match="cmp_b0001.jpg"):
        convert_cmp(base, tmp_path / "bad", size=32)


def test_every_bad_image_is_named(pairs, tmp_path, capsys):
    files = {**good_pairs(pairs, "train1"), "a.jpg": b"not an image", "b.png": b"", "c.jpg": b"\xff\xd8 cut"}
    root = write_folder(tmp_path / "data", "train", files)
    msg = cli_error(capsys, *train_args(root, tmp_path / "ckpt", "x"))
    assert "3 bad image(s) of 4:" in msg and all(name in msg for name in ("a.jpg", "b.png", "c.jpg")), msg
    with pytest.warns(UserWarning, match=r"skipped 3 bad image\(s\) of 4: .*a\.jpg.*b\.png.*c\.jpg"):
        assert main(train_args(root, tmp_path / "ckpt", "x", "--skip-bad-images")) == 0
    # The run folder lists every skipped file with its reason, one per line.
    listed = (tmp_path / "ckpt" / "x" / "bad_images.txt").read_text().splitlines()
    assert len(listed) == 3, listed
    assert all(name in line for name, line in zip(("a.jpg", "b.png", "c.jpg"), listed, strict=True)), listed
    assert all("cannot decode" in line or "truncated" in line for line in listed), listed
    # More than 20: the first 20 named in the warning, the rest counted; all in the list.
    many = {f"bad{i:02d}.jpg": b"not an image" for i in range(23)}
    root = write_folder(tmp_path / "many", "train", {**good_pairs(pairs, "train1"), **many})
    with pytest.warns(
        UserWarning, match=r"skipped 23 bad image\(s\) of 24: .*bad19\.jpg[^;]*; and 3 more"
    ) as seen:
        assert main(train_args(root, tmp_path / "ckpt", "many", "--skip-bad-images")) == 0
    assert "bad20.jpg" not in str(seen[0].message)
    assert len((tmp_path / "ckpt" / "many" / "bad_images.txt").read_text().splitlines()) == 23
