"""Fault injection, for real: damaged and odd images, impossible options, damaged and hostile checkpoints,
failing disks, signals, NaN, a visdom server that dies, and hostile file names.

Every case runs the real command (in-process ``main`` or a real subprocess) on real files. Exact resume after
SIGKILL/SIGTERM is tested in ``test_train.py`` (``test_resume_after_kill_is_exact``) and not repeated here.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import resource
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pix2pix_ilm.checkpoint import load_checkpoint, save_checkpoint
from pix2pix_ilm.cli import main
from pix2pix_ilm.data import load_rgb
from pix2pix_ilm.errors import UsageError

NET = [
    "--netG",
    "unet_32",
    "--ngf",
    "4",
    "--ndf",
    "4",
    "--load-size",
    "36",
    "--crop-size",
    "32",
    "--direction",
    "BtoA",
]
QUICK = [
    *NET,
    "--no-display",
    "--no-progress",
    "--print-freq",
    "1",
    "--n-epochs",
    "1",
    "--n-epochs-decay",
    "0",
]
# One thread: these networks are tiny, and on a busy 2-core machine spinning OpenMP threads make them 30x slower.
CHILD_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- real files ----------------------------------------------------------------------------------------
def _encode(image: Image.Image, fmt: str, **kw) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kw)
    return buffer.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    chunks, pos = [], 8
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        chunks.append((png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]))
        pos += 12 + length
    return chunks


def _png_broken_inside(png: bytes) -> bytes:
    """A PNG with a valid header and IEND trailer whose image data stops half-way: only decoding finds it."""
    chunks = _png_chunks(png)
    pixels = b"".join(data for kind, data in chunks if kind == b"IDAT")
    head = b"".join(_png_chunk(kind, data) for kind, data in chunks if kind not in (b"IDAT", b"IEND"))
    return png[:8] + head + _png_chunk(b"IDAT", pixels[: len(pixels) // 2]) + _png_chunk(b"IEND", b"")


def _png_bomb() -> bytes:
    """A tiny PNG whose header claims 200000x100000 pixels (a decompression bomb)."""
    header = struct.pack(">IIBBBBB", 200_000, 100_000, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(b""))
        + _png_chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def pairs(facades_dir: Path) -> dict[str, Image.Image]:
    """Six real facades A|B pairs at 128x64 (four from train/, two from test/)."""
    out = {}
    for key, path in (
        *((f"train{n}", facades_dir / "train" / f"{n}.jpg") for n in (1, 2, 3, 4)),
        *((f"test{n}", facades_dir / "test" / f"{n}.jpg") for n in (1, 2)),
    ):
        with Image.open(path) as img:
            out[key] = img.convert("RGB").resize((128, 64), Image.BICUBIC)
    return out


def _folder(root: Path, phase: str, files: dict[str, bytes | Image.Image]) -> Path:
    folder = root / phase
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        if isinstance(content, Image.Image):
            content = _encode(content, "PNG" if name.endswith(".png") else "JPEG", quality=95)
        (folder / name).write_bytes(content)
    return root


def _good(pairs, *keys: str) -> dict[str, Image.Image]:
    return {f"{key}.jpg": pairs[key] for key in keys}


def _train_args(root: Path, ckpt: Path, name: str, *extra: str) -> list[str]:
    return ["train", "--dataroot", str(root), "--name", name, "--checkpoints-dir", str(ckpt), *QUICK, *extra]


def _iterations(run: Path) -> list[int]:
    return [json.loads(line)["iteration"] for line in (run / "loss_log.jsonl").read_text().splitlines()]


def _error(capsys, *args: str) -> str:
    """Run the CLI in-process; it must exit 2 with one line on stderr and no traceback."""
    code = main(list(args))
    err = capsys.readouterr().err.strip()
    assert code == 2, (code, err)
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def _cli(*args: str, **popen) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pix2pix_ilm", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=CHILD_ENV,
        **popen,
    )


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _temp_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*.tmp"))


@pytest.fixture(scope="module")
def trained(pairs, tmp_path_factory) -> tuple[Path, Path]:
    """(data root, checkpoints dir) with run ``base``: 1 epoch on 2 images, epoch_1.pt and latest.pt."""
    root = tmp_path_factory.mktemp("trained")
    _folder(root / "data", "train", _good(pairs, "train1", "train2"))
    _folder(root / "data", "test", _good(pairs, "test1", "test2"))
    assert main(_train_args(root / "data", root / "ckpt", "base", "--save-epoch-freq", "1")) == 0
    return root / "data", root / "ckpt"


def _copy_run(trained, tmp_path: Path) -> tuple[Path, Path]:
    data, ckpt = trained
    shutil.copytree(ckpt, tmp_path / "ckpt")
    return data, tmp_path / "ckpt"


# -- bad input: training data --------------------------------------------------------------------------
BAD_FILES = {
    # case: (file name, content from (jpeg, png) of a good pair, words the error must contain)
    "truncated JPEG": ("cut.jpg", lambda jpg, png: jpg[: len(jpg) * 6 // 10], "truncated"),
    "truncated PNG": ("cut.png", lambda jpg, png: png[: len(png) * 6 // 10], "truncated"),
    "zero-byte file": ("empty.jpg", lambda jpg, png: b"", "cannot decode"),
    "text file named .png": ("notes.png", lambda jpg, png: b"not an image\n", "cannot decode"),
    "width not 2x height": (
        "narrow.png",
        lambda jpg, png: _encode(Image.new("RGB", (150, 64)), "PNG"),
        "150x64: its width must be twice its height",
    ),
    "decompression bomb": ("bomb.png", lambda jpg, png: _png_bomb(), "exceeds limit"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_training_image_stops_before_any_work_or_is_skipped(case, pairs, tmp_path, capsys):
    name, make, words = BAD_FILES[case]
    good = pairs["train3"]
    bad = make(_encode(good, "JPEG", quality=95), _encode(good, "PNG"))
    root = _folder(tmp_path / "data", "train", {**_good(pairs, "train1", "train2"), name: bad})
    ckpt = tmp_path / "ckpt"

    # Found by the (default, header) validation before any work: one line naming the file; no run folder.
    msg = _error(capsys, *_train_args(root, ckpt, "stop"))
    assert name in msg and words in msg and "--skip-bad-images" in msg
    assert not (ckpt / "stop").exists()

    # --skip-bad-images: one warning with the count; the run trains on the two good images.
    with pytest.warns(UserWarning, match=rf"skipped 1 bad image\(s\) of 3, e\.g\. .*{re.escape(name)}"):
        assert main(_train_args(root, ckpt, "skip", "--skip-bad-images")) == 0
    assert _iterations(ckpt / "skip") == [1, 2]


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
    root = _folder(tmp_path / "data", "train", files)
    folder = root / "train"
    with Image.open(folder / "gray16.png") as img:
        assert img.mode.startswith("I"), img.mode  # really a 16-bit file
    # 16 bit is scaled to 8 bit (not clipped to white); alpha is dropped; palette indices become colours.
    assert np.array_equal(np.asarray(load_rgb(folder / "gray16.png")), np.asarray(gray.convert("RGB")))
    assert np.array_equal(np.asarray(load_rgb(folder / "rgba.png")), np.asarray(rgb))
    assert np.array_equal(np.asarray(load_rgb(folder / "palette.png")), np.asarray(palette.convert("RGB")))
    for name in files:
        assert load_rgb(folder / name).mode == "RGB", name

    assert main(_train_args(root, tmp_path / "ckpt", "modes")) == 0
    assert _iterations(tmp_path / "ckpt" / "modes") == list(range(1, len(files) + 1))


def test_images_too_small_for_the_crop_or_unfit_for_the_unet(pairs, tmp_path, capsys):
    tiny = pairs["train3"].resize((40, 20))  # each half 20x20, below --crop-size 32
    root = _folder(tmp_path / "data", "train", {**_good(pairs, "train1", "train2"), "tiny.jpg": tiny})
    ckpt = tmp_path / "ckpt"
    # resize_and_crop (default) scales it up first: it is used.
    assert main(_train_args(root, ckpt, "resized")) == 0
    assert _iterations(ckpt / "resized") == [1, 2, 3]
    # --preprocess crop cannot: an error naming it before any work, or skipped.
    msg = _error(capsys, *_train_args(root, ckpt, "crop", "--preprocess", "crop"))
    assert "tiny.jpg is 40x20: each half (20x20) is smaller than --crop-size 32" in msg
    assert not (ckpt / "crop").exists()
    with pytest.warns(UserWarning, match="skipped 1 bad image"):
        assert main(_train_args(root, ckpt, "crop", "--preprocess", "crop", "--skip-bad-images")) == 0
    assert _iterations(ckpt / "crop") == [1, 2]
    # --preprocess none keeps the size (rounded to 4): 50x50 halves give 48x48, which unet_32 cannot take.
    (root / "train" / "tiny.jpg").unlink()
    _folder(root, "train", {"odd.jpg": pairs["train3"].resize((100, 50))})
    msg = _error(capsys, *_train_args(root, ckpt, "none", "--preprocess", "none"))
    assert "odd.jpg is 100x50" in msg and "48x48" in msg and "multiples of 32" in msg


def test_hidden_and_non_image_files_are_ignored(pairs, tmp_path, capsys):
    junk = {
        ".DS_Store": b"\x00\x00\x00\x01Bud1" + bytes(64),
        "._train1.jpg": b"\x00\x05\x16\x07 AppleDouble junk",  # hidden, despite the .jpg
        "notes.txt": b"hello",
        "Thumbs.db": bytes(32),
    }
    root = _folder(tmp_path / "data", "train", {**_good(pairs, "train1", "train2"), **junk})
    (root / "train" / "folder.jpg").mkdir()  # a folder named like an image
    assert main(_train_args(root, tmp_path / "ckpt", "junk")) == 0
    assert _iterations(tmp_path / "ckpt" / "junk") == [1, 2]
    only_junk = _folder(tmp_path / "junk_only", "train", junk)
    msg = _error(capsys, *_train_args(only_junk, tmp_path / "ckpt", "none"))
    assert "no images in" in msg and str(only_junk / "train") in msg


def test_missing_phase_folder_and_file_as_dataroot(pairs, tmp_path, capsys):
    root = tmp_path / "data"
    _folder(root, "test", _good(pairs, "test1"))
    _folder(root, "val", _good(pairs, "test2"))
    msg = _error(capsys, *_train_args(root, tmp_path / "ckpt", "x"))
    assert f"{root / 'train'} not found" in msg and "it has test/, val/" in msg
    a_file = tmp_path / "facades.tar.gz"
    a_file.write_bytes(b"\x1f\x8b not really")
    msg = _error(capsys, *_train_args(a_file, tmp_path / "ckpt", "x"))
    assert "facades.tar.gz is a file" in msg
    assert not (tmp_path / "ckpt").exists()


def _trained_run(pairs, tmp_path: Path) -> tuple[Path, Path, Path, bytes]:
    """A one-epoch run "run" on two good pairs: (data root, checkpoints dir, run dir, bytes of its latest.pt)."""
    root = _folder(tmp_path / "data", "train", _good(pairs, "train1", "train2"))
    ckpt = tmp_path / "ckpt"
    run = ckpt / "run"
    assert main(_train_args(root, ckpt, "run")) == 0
    return root, ckpt, run, (run / "latest.pt").read_bytes()


def test_image_that_breaks_only_when_decoded(pairs, tmp_path, capsys):
    """Header, size and trailer are fine; the pixel data stops half-way. Header validation cannot see it."""
    root, ckpt, run, before = _trained_run(pairs, tmp_path)
    late = root / "train" / "late.png"
    late.write_bytes(_png_broken_inside(_encode(pairs["train3"], "PNG")))

    # Without --skip-bad-images the run stops at that image with one line naming it, also when a DataLoader
    # worker process hits it; latest.pt from the last save stays as it was.
    for workers in ("0", "1"):
        msg = _error(
            capsys, *_train_args(root, ckpt, "run", "--continue", "--n-epochs", "3", "--num-workers", workers)
        )
        assert "late.png" in msg and "truncated" in msg and "--skip-bad-images" in msg, msg
        assert (run / "latest.pt").read_bytes() == before
    assert load_checkpoint(run / "latest.pt")["counters"]["iteration"] == 2
    assert _temp_files(ckpt) == []

    # --validate-images full finds it before any work.
    msg = _error(capsys, *_train_args(root, ckpt, "full", "--validate-images", "full"))
    assert "late.png" in msg and not (ckpt / "full").exists()

    # --skip-bad-images: the next good image takes its place (same number of steps), with a warning.
    with pytest.warns(UserWarning, match=r"late\.png.*next good image is used in its place \(1 bad image"):
        assert main(_train_args(root, ckpt, "sub", "--skip-bad-images")) == 0
    assert _iterations(ckpt / "sub") == [1, 2, 3]
    # --skip-bad-images --validate-images full: skipped up front.
    with pytest.warns(UserWarning, match=r"skipped 1 bad image\(s\) of 3, e\.g\. .*late\.png"):
        assert main(_train_args(root, ckpt, "pre", "--skip-bad-images", "--validate-images", "full")) == 0
    assert _iterations(ckpt / "pre") == [1, 2]


# -- bad input: test and eval --------------------------------------------------------------------------
def _test_args(data: Path, ckpt: Path, results: Path, *extra: str) -> list[str]:
    return [
        "test",
        "--name",
        "base",
        "--dataroot",
        str(data),
        "--checkpoints-dir",
        str(ckpt),
        "--results-dir",
        str(results),
        *extra,
    ]


def test_test_command_on_bad_images(trained, pairs, tmp_path, capsys):
    _, ckpt = trained
    data = _folder(tmp_path / "data", "test", _good(pairs, "test1", "test2"))
    jpeg = _encode(pairs["train3"], "JPEG", quality=95)
    (data / "test" / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    results = tmp_path / "results"
    msg = _error(capsys, *_test_args(data, ckpt, results))
    assert "cut.jpg" in msg and "truncated" in msg
    with pytest.warns(UserWarning, match=r"skipped 1 bad image\(s\) of 3.*cut\.jpg"):
        assert main(_test_args(data, ckpt, results, "--skip-bad-images")) == 0
    images = results / "base" / "test_latest" / "images"
    assert sorted(p.name.split("_")[0] for p in images.iterdir()) == ["test1"] * 3 + ["test2"] * 3

    # Broken only inside: found while translating; an error naming it, or dropped with --skip-bad-images.
    (data / "test" / "cut.jpg").unlink()
    (data / "test" / "late.png").write_bytes(_png_broken_inside(_encode(pairs["train3"], "PNG")))
    msg = _error(capsys, *_test_args(data, ckpt, tmp_path / "r2"))
    assert "late.png" in msg and "truncated" in msg
    with pytest.warns(UserWarning, match=r"late\.png.*dropped"):
        assert main(_test_args(data, ckpt, tmp_path / "r3", "--skip-bad-images", "--batch-size", "2")) == 0
    out = tmp_path / "r3" / "base" / "test_latest"
    assert len(list((out / "images").iterdir())) == 6 and "late_" not in (out / "index.html").read_text()

    msg = _error(capsys, *_test_args(data, ckpt, tmp_path / "r4", "--phase", "val"))
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
    assert main(_test_args(data, ckpt, results)) == 0
    out = results / "base" / "test_latest"
    path = out / "images" / target
    png = path.read_bytes()
    path.write_bytes(
        {"truncated": png[: len(png) // 2], "empty": b"", "text": b"<html>", "bomb": _png_bomb()}[content]
    )
    msg = _error(capsys, "eval", "--results-dir", str(out), "--metrics", "rmse,ssim")
    assert target in msg and words in msg, msg
    assert not (out / "metrics.json").exists()


def test_data_tools_name_the_bad_file(pairs, tmp_path):
    from pix2pix_ilm.datasets import convert_cmp

    base = tmp_path / "base"
    base.mkdir()
    labels = Image.fromarray(np.tile(np.arange(1, 13, dtype=np.uint8), (64, 6))[:, :64], mode="L")
    for stem in ("cmp_b0001", "cmp_b0002"):
        (base / f"{stem}.jpg").write_bytes(_encode(pairs["train1"].crop((0, 0, 64, 64)), "JPEG"))
        (base / f"{stem}.png").write_bytes(_encode(labels, "PNG"))
    assert len(convert_cmp(base, tmp_path / "ok", size=32)["train"]) == 2
    label = (base / "cmp_b0002.png").read_bytes()
    (base / "cmp_b0002.png").write_bytes(label[: len(label) // 2])
    with pytest.raises(UsageError, match="cmp_b0002"):
        convert_cmp(base, tmp_path / "bad", size=32)
    (base / "cmp_b0002.png").write_bytes(label)
    (base / "cmp_b0001.jpg").write_bytes(b"")
    with pytest.raises(UsageError, match="cmp_b0001.jpg"):
        convert_cmp(base, tmp_path / "bad", size=32)


@pytest.fixture
def inside_tmp_path(tmp_path):
    """Run the test with ``tmp_path`` as working directory (where an injected shell command would write)."""
    previous = os.getcwd()
    os.chdir(tmp_path)
    try:
        yield tmp_path
    finally:
        os.chdir(previous)


def test_file_names_with_spaces_unicode_shell_and_html_characters(pairs, inside_tmp_path):
    """Names pass through train, test, the HTML page and eval unchanged; nothing is run; the page is escaped."""
    tmp_path = inside_tmp_path
    names = [
        "with space",
        "façade_日本語_ü",
        "$(touch PWNED); `touch PWNED2` & | > out",
        "-rf --help",
        "<script>alert('x')",
        'quote"double',
        "100%20 #hash?q",
    ]
    files = {
        f"{stem}.jpg": pairs[key]
        for stem, key in zip(
            names, ["train1", "train2", "train3", "train4", "test1", "test2", "train1"], strict=True
        )
    }
    root = _folder(tmp_path / "data", "train", files)
    _folder(root, "test", files)
    assert main(_train_args(root, tmp_path / "ckpt", "names")) == 0
    results = tmp_path / "results"
    code = main(
        [
            "test",
            "--name",
            "names",
            "--dataroot",
            str(root),
            "--checkpoints-dir",
            str(tmp_path / "ckpt"),
            "--results-dir",
            str(results),
        ]
    )
    assert code == 0
    out = results / "names" / "test_latest"
    written = {p.name for p in (out / "images").iterdir()}
    assert written == {f"{stem}_{label}.png" for stem in names for label in ("real_A", "fake_B", "real_B")}
    page = (out / "index.html").read_text()
    assert "<script>" not in page and "alert('x')" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)" in page
    assert 'quote"double' not in page and "quote&quot;double" in page
    assert 'src="images/%3Cscript%3Ealert%28%27x%27%29_fake_B.png"' in page
    assert main(["eval", "--results-dir", str(out), "--metrics", "rmse"]) == 0
    assert set(json.loads((out / "metrics.json").read_text())["per_image"]) == set(names)
    assert not list(tmp_path.rglob("PWNED*")) and not (tmp_path / "out").exists()


# -- options -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--crop-size", "64"], "--crop-size 64 is larger than --load-size 36"),
        (
            ["--netG", "unet_64"],
            "--netG unet_64 downsamples 6 times, so --crop-size must be a multiple of 64; got 32",
        ),
        (["--n-epochs", "-1"], "--n-epochs must be >= 0, got -1"),
        (["--n-epochs", "0"], "--n-epochs + --n-epochs-decay must be >= 1, got 0 + 0"),
        (["--batch-size", "0"], "--batch-size must be >= 1, got 0"),
        (["--lr", "0"], "--lr must be a positive number, got 0.0"),
        (["--lr", "1e39"], "--lr 1e+39 is too large"),
        (["--beta1", "1"], "--beta1 must be in [0, 1), got 1.0"),
        (["--continue", "--overwrite"], "--continue and --overwrite contradict each other"),
        (["--ilm-group-size", "3", "--netG-norm", "ilm_in"], "3"),
        (["--name", "../escape"], "--name must be a plain folder name"),
        (["--name", "a/b"], "--name must be a plain folder name"),
        (["--name", ".."], "--name must be a plain folder name"),
    ],
)
def test_impossible_options_are_one_line_errors_before_any_work(pairs, tmp_path, capsys, extra, words):
    root = _folder(tmp_path / "data", "train", _good(pairs, "train1"))
    ckpt = tmp_path / "nest" / "ckpt"
    msg = _error(capsys, *_train_args(root, ckpt, "x", *extra))
    assert words in msg, msg
    assert not (tmp_path / "nest").exists() and not (tmp_path / "escape").exists()


def test_option_errors_in_a_real_process(pairs, tmp_path):
    root = _folder(tmp_path / "data", "train", _good(pairs, "train1"))
    done = _cli(*_train_args(root, tmp_path / "ckpt", "x", "--crop-size", "64"))
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        "pix2pix-ilm train: error: --crop-size 64 is larger than --load-size 36"
    ]
    # An unknown norm is refused by argparse itself, also in one line that lists the choices.
    done = _cli(*_train_args(root, tmp_path / "ckpt", "x", "--netG-norm", "weird"))
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert "invalid choice: 'weird'" in done.stderr and "ilm_in" in done.stderr
    assert not (tmp_path / "ckpt").exists()


def test_continue_with_another_architecture_and_foreign_checkpoints(trained, pairs, tmp_path, capsys):
    data, ckpt = _copy_run(trained, tmp_path)
    before = _sha256(ckpt / "base" / "latest.pt")
    msg = _error(
        capsys, *_train_args(data, ckpt, "base", "--continue", "--ngf", "8", "--netG-norm", "ilm_in")
    )
    assert "--continue with a different architecture" in msg
    assert "ngf: 4 != 8" in msg and "netG_norm: 'instance' != 'ilm_in'" in msg
    # A latest.pt from a run of another architecture, dropped into this run.
    assert main(_train_args(data, ckpt, "wide", "--ngf", "8")) == 0
    for suffix in ("", ".sha256"):
        shutil.copy(ckpt / "wide" / f"latest.pt{suffix}", ckpt / "base" / f"latest.pt{suffix}")
    msg = _error(capsys, *_train_args(data, ckpt, "base", "--continue", "--n-epochs", "2"))
    assert "latest.pt does not match" in msg and "config.json" in msg and "ngf: 4 != 8" in msg
    msg = _error(capsys, *_test_args(data, ckpt, tmp_path / "res"))
    assert "latest.pt does not match" in msg and "ngf: 4 != 8" in msg
    assert _sha256(ckpt / "base" / "latest.pt") != before
    assert main(_test_args(data, ckpt, tmp_path / "res", "--epoch", "1")) == 0  # epoch_1.pt is still usable


# -- checkpoints ---------------------------------------------------------------------------------------
class NotATensor:
    """A custom class: pickling it into a checkpoint must make loading refuse the file."""


def _flip_byte_in(path: Path, part: str) -> None:
    """Flip one byte in the middle of the largest tensor of ``part`` (generator, discriminator, opt_g, ...)."""
    import zipfile

    state = torch.load(path, weights_only=True, mmap=True)
    tensors = state[part].values() if part in ("generator", "discriminator") else _tensors_of(state[part])
    target = max(tensors, key=lambda t: t.untyped_storage().nbytes())
    data = bytearray(path.read_bytes())
    payload = bytes(target.contiguous().view(torch.uint8).reshape(-1).numpy())
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as archive:
        records = [info for info in archive.infolist() if "/data/" in info.filename]
        for info in records:  # the record whose stored bytes are that tensor's
            name_len, extra_len = struct.unpack(
                "<HH", data[info.header_offset + 26 : info.header_offset + 30]
            )
            start = info.header_offset + 30 + name_len + extra_len
            if data[start : start + info.file_size] == payload:
                data[start + info.file_size // 2] ^= 0xFF
                path.write_bytes(bytes(data))
                return
    raise AssertionError(f"no record of {part} found in {path}")


def _tensors_of(value) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value] if value.numel() > 1 else []
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors_of(v)]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors_of(v)]
    return []


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])


@pytest.mark.parametrize(
    ("damage", "sidecar", "words"),
    [
        ("flip", True, "generator weights do not match the digest"),
        ("flip", False, "generator weights do not match the digest"),
        ("truncate", True, "SHA-256 does not match epoch_1.pt.sha256"),
        ("truncate", False, "truncated or corrupted"),
        ("object", False, "pickled Python object (test_reliability.NotATensor)"),
        ("function", True, "pickled Python object (posix.system)"),
    ],
)
def test_corrupted_and_unsafe_checkpoints_are_refused(trained, tmp_path, capsys, damage, sidecar, words):
    data, ckpt = _copy_run(trained, tmp_path)
    path = ckpt / "base" / "epoch_1.pt"
    if damage == "flip":
        _flip_byte_in(path, "generator")
    elif damage == "truncate":
        _truncate(path)
    else:
        state = load_checkpoint(path)
        state["extra"] = NotATensor() if damage == "object" else os.system
        if sidecar:
            save_checkpoint(state, path)  # even with a matching checksum
        else:
            torch.save(state, path)
    if not sidecar:
        Path(f"{path}.sha256").unlink(missing_ok=True)
    msg = _error(capsys, *_test_args(data, ckpt, tmp_path / "res", "--epoch", "1"))
    assert words in msg and "epoch_1.pt" in msg, msg
    assert not (tmp_path / "res").exists()
    if damage in ("flip", "truncate"):  # and --continue from such a latest.pt: the whole file is checked
        shutil.copy(path, ckpt / "base" / "latest.pt")
        if sidecar:
            shutil.copy(f"{path}.sha256", ckpt / "base" / "latest.pt.sha256")
        else:
            (ckpt / "base" / "latest.pt.sha256").unlink()
        msg = _error(capsys, *_train_args(data, ckpt, "base", "--continue", "--n-epochs", "2"))
        assert "latest.pt" in msg and ("corrupted" in msg or "truncated" in msg), msg
        if damage == "flip":
            assert ("SHA-256 does not match" if sidecar else "fails its CRC-32 check") in msg, msg


@pytest.mark.parametrize("part", ["discriminator", "opt_g"])
def test_damage_outside_the_generator_does_not_stop_test_but_stops_resume(trained, tmp_path, capsys, part):
    """``test`` reads and verifies only G (memory-mapped, by G's own digest); resuming checks every byte."""
    data, ckpt = _copy_run(trained, tmp_path)
    intact = tmp_path / "intact"
    assert main(_test_args(data, ckpt, intact, "--epoch", "1")) == 0
    _flip_byte_in(ckpt / "base" / "epoch_1.pt", part)
    assert main(_test_args(data, ckpt, tmp_path / "res", "--epoch", "1")) == 0
    outputs = sorted((intact / "base" / "test_1" / "images").glob("*.png"))
    assert outputs
    for image in outputs:
        assert (
            image.read_bytes() == (tmp_path / "res" / "base" / "test_1" / "images" / image.name).read_bytes()
        )
    shutil.copy(ckpt / "base" / "epoch_1.pt", ckpt / "base" / "latest.pt")
    shutil.copy(ckpt / "base" / "epoch_1.pt.sha256", ckpt / "base" / "latest.pt.sha256")
    msg = _error(capsys, *_train_args(data, ckpt, "base", "--continue", "--n-epochs", "2"))
    assert "latest.pt" in msg and "SHA-256 does not match" in msg, msg


def _limit_file_size(limit: int):
    def preexec() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return preexec


def test_checkpoint_write_failing_part_way_keeps_the_previous_one(pairs, tmp_path):
    root, ckpt, run, before = _trained_run(pairs, tmp_path)
    assert len(before) > 60_000  # the limit below must fall inside latest.pt, not in config/log/preview files
    limit = len(before) // 2
    done = _cli(
        *_train_args(root, ckpt, "run", "--continue", "--n-epochs", "2"), preexec_fn=_limit_file_size(limit)
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert f"cannot write checkpoint {run / 'latest.pt'}: File too large" in lines[0]
    assert "the previous latest.pt, if any, is unchanged" in lines[0]
    # 0 bytes lost: the old checkpoint, its checksum file, and no temp files left behind.
    assert (run / "latest.pt").read_bytes() == before
    assert (run / "latest.pt.sha256").read_text() == f"{hashlib.sha256(before).hexdigest()}  latest.pt\n"
    assert _temp_files(tmp_path) == []
    assert load_checkpoint(run / "latest.pt")["counters"]["iteration"] == 2


def test_state_left_by_a_kill_during_a_save_resumes(pairs, tmp_path):
    """What SIGKILL between the steps of a save leaves behind: a partial temp file and a sidecar listing the
    new and the old digest. The old latest.pt still loads, and --continue removes the temp file."""
    root = _folder(tmp_path / "data", "train", _good(pairs, "train1", "train2"))
    ckpt = tmp_path / "ckpt"
    run = ckpt / "run"
    assert main(_train_args(root, ckpt, "run")) == 0
    old = (run / "latest.pt").read_bytes()
    new = load_checkpoint(run / "epoch_1.pt")
    new["counters"]["iteration"] = 99
    buffer = io.BytesIO()
    torch.save(new, buffer)
    (run / ".latest.pt.k1ll3d_x.tmp").write_bytes(buffer.getvalue()[:5000])
    digests = [hashlib.sha256(buffer.getvalue()).hexdigest(), hashlib.sha256(old).hexdigest()]
    (run / "latest.pt.sha256").write_text("".join(f"{d}  latest.pt\n" for d in digests))
    assert load_checkpoint(run / "latest.pt")["counters"]["iteration"] == 2
    assert main(_train_args(root, ckpt, "run", "--continue", "--n-epochs", "2")) == 0
    assert _temp_files(run) == []
    assert load_checkpoint(run / "latest.pt")["counters"]["iteration"] == 4
    assert len((run / "latest.pt.sha256").read_text().splitlines()) == 1


def test_sigint_finishes_the_step_saves_and_exits_cleanly(pairs, tmp_path):
    root = _folder(tmp_path / "data", "train", _good(pairs, "train1", "train2", "train3", "train4"))
    ckpt = tmp_path / "ckpt"
    log = ckpt / "run" / "loss_log.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pix2pix_ilm", *_train_args(root, ckpt, "run", "--n-epochs", "40")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=CHILD_ENV,
    )
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if log.is_file() and len(log.read_text().splitlines()) >= 3:
            proc.send_signal(signal.SIGINT)
            break
        time.sleep(0.02)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGINT, err  # the shell's convention for "ended by SIGINT"
    match = re.search(r"SIGINT: stopped after iteration (\d+); saved (.*latest\.pt)", err)
    assert match and "Traceback" not in err, err
    stopped = int(match.group(1))
    assert 3 <= stopped < 160
    state = load_checkpoint(ckpt / "run" / "latest.pt")
    assert state["counters"]["iteration"] == stopped
    assert _iterations(ckpt / "run")[-1] == stopped  # the step in progress was finished and logged
    assert _temp_files(ckpt) == []


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(pairs, tmp_path, capsys):
    root, ckpt, run, before = _trained_run(pairs, tmp_path)
    msg = _error(capsys, *_train_args(root, ckpt, "run", "--continue", "--n-epochs", "5", "--lr", "1e30"))
    match = re.search(r"non-finite loss .*=(nan|inf) at iteration (\d+) \(epoch \d+\)", msg)
    assert match and int(match.group(2)) > 2, msg
    assert "latest.pt is kept" in msg
    assert (run / "latest.pt").read_bytes() == before
    state = load_checkpoint(run / "latest.pt")
    for part in ("generator", "discriminator"):
        assert all(bool(torch.isfinite(t).all()) for t in state[part].values() if t.is_floating_point())


def test_non_finite_weights_are_never_saved_or_used(pairs, tmp_path, capsys):
    """Batch norm's running variance is not used by a training step, so an infinite one leaves the losses
    finite; it would ruin every test output. Neither training nor test may save or use it."""
    root = _folder(tmp_path / "data", "train", _good(pairs, "train1", "train2"))
    _folder(root, "test", _good(pairs, "test1"))
    ckpt = tmp_path / "ckpt"
    run = ckpt / "run"
    assert main(_train_args(root, ckpt, "run", "--netG-norm", "batch")) == 0
    state = load_checkpoint(run / "latest.pt")
    key = next(k for k in state["generator"] if k.endswith("running_var"))
    state["generator"][key].fill_(float("inf"))
    save_checkpoint(state, run / "latest.pt")
    before = (run / "latest.pt").read_bytes()
    msg = _error(
        capsys,
        "test",
        "--name",
        "run",
        "--dataroot",
        str(root),
        "--checkpoints-dir",
        str(ckpt),
        "--results-dir",
        str(tmp_path / "res"),
    )
    assert "NaN or infinite values" in msg and key in msg
    msg = _error(
        capsys, *_train_args(root, ckpt, "run", "--continue", "--n-epochs", "2", "--save-latest-freq", "1")
    )
    assert "the weights became non-finite (NaN or inf) at iteration 3" in msg and "latest.pt" in msg
    assert (run / "latest.pt").read_bytes() == before
    assert _temp_files(ckpt) == []


# -- outputs -------------------------------------------------------------------------------------------
def test_output_names_cannot_leave_the_results_folder(trained, tmp_path, capsys):
    data, ckpt = trained
    results = tmp_path / "box" / "results"
    for extra in (
        ["--name", "../base"],
        ["--name", "base/../../x"],
        ["--phase", "../../x"],
        ["--phase", ".."],
    ):
        args = _test_args(data, ckpt, results, *extra)
        msg = _error(capsys, *args)
        assert "must be a plain folder name" in msg, msg
    assert not (tmp_path / "box").exists()


# -- live previews -------------------------------------------------------------------------------------
def test_training_survives_its_visdom_server_dying(pairs, tmp_path):
    import visdom

    from pix2pix_ilm.visual import VisdomDisplay, free_port, start_visdom_server, stop_visdom_server

    root = _folder(tmp_path / "data", "train", _good(pairs, "train1", "train2", "train3", "train4"))
    ckpt = tmp_path / "ckpt"
    port = free_port()
    server = start_visdom_server(port, env_path=tmp_path / "visdom")
    args = _train_args(root, ckpt, "run", "--n-epochs", "25")
    args.remove("--no-display")
    args += ["--display-port", str(port), "--display-freq", "1", "--display-env", "dying"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "pix2pix_ilm", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=CHILD_ENV,
    )
    try:
        log = ckpt / "run" / "loss_log.jsonl"
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if log.is_file() and len(log.read_text().splitlines()) >= 3:
                break
            time.sleep(0.02)
        client = visdom.Visdom(port=port, use_incoming_socket=False, raise_exceptions=True)
        windows = json.loads(client.get_window_data(win=None, env="dying"))
        assert VisdomDisplay.IMAGE_WINDOW in windows  # previews arrived while the server was up
    finally:
        stop_visdom_server(server)  # the server dies in the middle of the run
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert f"lost the connection to visdom server at http://127.0.0.1:{port}" in err
    assert "Traceback" not in err
    assert load_checkpoint(ckpt / "run" / "latest.pt")["counters"]["iteration"] == 100


def test_visdom_helper_binds_to_loopback_and_says_so(tmp_path):
    from pix2pix_ilm.visual import free_port

    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pix2pix_ilm",
            "visdom",
            "--port",
            str(port),
            "--env-path",
            str(tmp_path / "env"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    watchdog = threading.Timer(60, proc.kill)  # readline() returns "" if the server never says it
    watchdog.start()
    try:
        lines = []
        while not lines or not (lines[-1].startswith("visdom server at") or lines[-1] == ""):
            lines.append(proc.stdout.readline())
        assert lines[-1].startswith(f"visdom server at http://127.0.0.1:{port} (local only"), lines

        # The kernel's tables of listening TCP sockets: bound to 127.0.0.1 (0100007F) only.
        def listening(table: str) -> list[str]:
            rows = [line.split() for line in Path(table).read_text().splitlines()[1:]]
            return [row[1] for row in rows if row[3] == "0A" and row[1].endswith(f":{port:04X}")]

        assert listening("/proc/net/tcp") == [f"0100007F:{port:04X}"]
        assert not Path("/proc/net/tcp6").exists() or listening("/proc/net/tcp6") == []
    finally:
        watchdog.cancel()
        proc.terminate()
        proc.wait(timeout=30)
