"""``translate`` and :class:`Translator`: plain images of any size in, PNGs of the same size out; the same
pixels from the command, from Python and as ``test --single`` writes them, G of the preprocessed input; an ONNX file instead of a run."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from PIL import Image

from pix2pix_ilm.cli import main
from pix2pix_ilm.training.inference import load_generator_for_inference
from tests.faults import cli_error, encode, png_broken_inside
from tests.helpers import require_module

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def photo(facades_dir, tmp_path):
    """A 300x200 JPEG: the B half (labels) of a facades test pair, resized."""
    with Image.open(facades_dir / "test" / "3.jpg") as pair:
        image = pair.crop((256, 0, 512, 256)).resize((300, 200), Image.BICUBIC)
    path = tmp_path / "inputs" / "labels.jpg"
    path.parent.mkdir()
    image.save(path, quality=95)
    return path


def test_translate_a_jpeg_from_the_command_line_and_from_python(runs, photo, tmp_path):
    from pix2pix_ilm import Translator

    _, ckpt = runs
    out = tmp_path / "out"
    assert (
        main(["translate", "--name", "ilm", "--checkpoints-dir", str(ckpt), str(photo), "--out", str(out)])
        == 0
    )
    with Image.open(out / "labels.png") as written:
        assert written.size == (300, 200) and written.format == "PNG"
        pixels = np.asarray(written.convert("RGB"))
    with Image.open(photo) as source:
        api = np.asarray(Translator.from_run(ckpt / "ilm")(source))
    assert np.array_equal(api, pixels)
    # The same as test --single (its preprocessing, output resized back to the input's size).
    results = tmp_path / "results"
    common = ["--name", "ilm", "--checkpoints-dir", str(ckpt), "--results-dir", str(results)]
    assert (
        main(["test", *common, "--dataroot", str(photo.parent.parent), "--phase", "inputs", "--single"]) == 0
    )
    with Image.open(results / "ilm" / "inputs_latest_single" / "images" / "labels_fake_B.png") as single:
        assert np.array_equal(np.asarray(single.convert("RGB")), pixels)
    # And what they agree on is G applied to the preprocessed input, computed here step by step: the run's test
    # preprocessing (resize to its 32x32 crop), [-1, 1], G in eval mode, 8-bit, resized back to 300x200.
    generator, _, _ = load_generator_for_inference(ckpt / "ilm", "latest", "cpu")
    with Image.open(photo) as source:
        small = np.asarray(source.convert("RGB").resize((32, 32), Image.BICUBIC), dtype=np.float32)
    with torch.no_grad():
        output = generator.eval()(torch.from_numpy(small / 127.5 - 1).permute(2, 0, 1)[None])[0]
    output = np.rint((output.permute(1, 2, 0).numpy().clip(-1, 1) + 1) * 127.5).astype(np.uint8)
    assert np.array_equal(np.asarray(Image.fromarray(output).resize((300, 200), Image.BICUBIC)), pixels)


def test_translate_with_an_exported_onnx_file_and_a_folder(runs, photo, tmp_path):
    require_module("onnxruntime")
    _, ckpt = runs
    onnx_file = tmp_path / "ilm.onnx"
    assert main(["export", "--name", "ilm", "--checkpoints-dir", str(ckpt), "--out", str(onnx_file)]) == 0
    second = photo.parent / "second.png"
    Image.open(photo).transpose(Image.FLIP_LEFT_RIGHT).save(second)
    assert (
        main(["translate", "--onnx", str(onnx_file), str(photo.parent), "--out", str(tmp_path / "onnx")]) == 0
    )
    assert (
        main(
            [
                "translate",
                "--name",
                "ilm",
                "--checkpoints-dir",
                str(ckpt),
                str(photo.parent),
                "--out",
                str(tmp_path / "run"),
            ]
        )
        == 0
    )
    for name in ("labels.png", "second.png"):
        with Image.open(tmp_path / "onnx" / name) as a, Image.open(tmp_path / "run" / name) as b:
            diff = np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int))
            assert a.size == (300, 200) and diff.max() <= 1  # fp32 in two runtimes: at most one level apart


def test_bad_inputs_get_one_line(runs, photo, tmp_path, capsys):
    _, ckpt = runs
    text = photo.parent / "notes.jpg"
    text.write_text("not an image")
    args = ["translate", "--name", "ilm", "--checkpoints-dir", str(ckpt), "--out", str(tmp_path / "o")]
    assert main([*args, str(text)]) == 2
    err = capsys.readouterr().err.strip()
    assert "notes.jpg" in err and "cannot decode" in err and "\n" not in err
    assert main([*args, str(tmp_path / "missing.jpg")]) == 2
    assert "input not found" in capsys.readouterr().err
    assert main(["translate", str(photo), "--out", str(tmp_path / "o")]) == 2
    assert "either --name RUN" in capsys.readouterr().err


def test_a_grey_run_translates_and_exports_in_one_channel(runs, photo, tmp_path):
    require_module("onnxruntime")
    data, _ = runs
    ckpt = tmp_path / "ckpt"
    grey = ["--input-nc", "1", "--output-nc", "1", "--netG", "unet_32", "--ngf", "4", "--ndf", "4"]
    grey += ["--load-size", "36", "--crop-size", "32", "--n-epochs", "1", "--n-epochs-decay", "1"]
    grey += ["--no-display", "--no-progress", "--dataroot", str(data), "--checkpoints-dir", str(ckpt)]
    assert main(["train", "--name", "grey", *grey]) == 0
    common = ["--checkpoints-dir", str(ckpt), str(photo), "--out"]
    assert main(["translate", "--name", "grey", *common, str(tmp_path / "run")]) == 0
    onnx_file = tmp_path / "grey.onnx"
    assert main(["export", "--name", "grey", "--checkpoints-dir", str(ckpt), "--out", str(onnx_file)]) == 0
    assert main(["translate", "--onnx", str(onnx_file), *common[2:], str(tmp_path / "onnx")]) == 0
    with Image.open(tmp_path / "run" / "labels.png") as a, Image.open(tmp_path / "onnx" / "labels.png") as b:
        assert a.mode == b.mode == "L" and a.size == b.size == (300, 200)
        assert np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int)).max() <= 1


def _digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_outputs_never_replace_inputs_or_existing_files_unasked(runs, photo, tmp_path, capsys):
    _, ckpt = runs
    inputs = photo.parent
    Image.open(photo).save(inputs / "second.png")
    before = _digests(inputs)
    run = ["translate", "--name", "ilm", "--checkpoints-dir", str(ckpt)]
    # The input folder, spelled either way, and an input file as an output: refused, nothing written.
    for out in (inputs, tmp_path / "inputs" / ".." / "inputs"):
        assert "is the input" in cli_error(capsys, *run, str(inputs), "--out", str(out))
    assert "is the input" in cli_error(capsys, *run, str(inputs / "second.png"), "--out", str(inputs))
    assert "is the input" in cli_error(capsys, *run, str(photo), "--out", str(inputs))  # photo's own folder
    assert _digests(inputs) == before
    # --out a file, below a file: one line naming it, before any work.
    assert "is a file, not a folder" in cli_error(capsys, *run, str(photo), "--out", str(photo))
    assert "which is a file" in cli_error(capsys, *run, str(photo), "--out", str(photo / "sub"))
    # An existing output is replaced only with --overwrite.
    out = tmp_path / "out"
    out.mkdir()
    (out / "second.png").write_bytes(b"mine")
    assert "second.png exists; use --overwrite" in cli_error(capsys, *run, str(inputs), "--out", str(out))
    assert (out / "second.png").read_bytes() == b"mine" and not (out / "labels.png").exists()
    assert main([*run, str(inputs), "--out", str(out), "--overwrite"]) == 0
    with Image.open(out / "second.png") as replaced:
        assert replaced.size == (300, 200)
    assert _digests(inputs) == before and not list(out.glob(".*"))


def test_every_image_is_checked_before_any_is_translated(runs, photo, tmp_path, capsys):
    _, ckpt = runs
    (photo.parent / "broken.png").write_bytes(png_broken_inside(encode(Image.open(photo), "PNG")))
    run = ["translate", "--name", "ilm", "--checkpoints-dir", str(ckpt), str(photo.parent)]
    err = cli_error(capsys, *run, "--out", str(tmp_path / "out"))
    assert "broken.png" in err and "--skip-bad-images" in err
    assert not (tmp_path / "out").exists()
    with pytest.warns(UserWarning, match=r"skipped 1 bad image\(s\) of 2: .*broken.png"):
        assert main([*run, "--out", str(tmp_path / "out"), "--skip-bad-images"]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["labels.png"]


def test_a_damaged_onnx_file_is_one_line(runs, photo, tmp_path, capsys):
    require_module("onnxruntime")
    _, ckpt = runs
    good = tmp_path / "ilm.onnx"
    assert main(["export", "--name", "ilm", "--checkpoints-dir", str(ckpt), "--out", str(good)]) == 0
    data = good.read_bytes()
    flipped = bytearray(data)
    for i in range(0, len(flipped), 997):  # bits flipped all through the file
        flipped[i] ^= 0x5A
    damaged = {"truncated.onnx": data[: len(data) // 3], "flipped.onnx": bytes(flipped), "empty.onnx": b""}
    damaged["text.onnx"] = b"not a model at all"
    for name, content in damaged.items():
        (tmp_path / name).write_bytes(content)
        err = cli_error(
            capsys, "translate", "--onnx", str(tmp_path / name), str(photo), "--out", str(tmp_path / "o")
        )
        assert name in err and "export it again" in err, err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("mode", ["I;16", "P", "CMYK", "RGBA", "LA", "1"])
def test_python_and_the_command_line_read_every_image_mode_alike(runs, photo, tmp_path, mode):
    from pix2pix_ilm import Translator

    _, ckpt = runs
    with Image.open(photo) as source:
        rgb = source.convert("RGB")
    if mode == "I;16":  # 16 bits per pixel, the full range used: clipping would differ from scaling
        image = Image.fromarray((np.asarray(rgb.convert("L"), dtype=np.uint16) * 257).astype(np.uint16))
    else:
        image = rgb.convert(mode)
    path = tmp_path / "in" / f"{mode.replace(';', '')}.{'tif' if mode == 'CMYK' else 'png'}"
    path.parent.mkdir()
    image.save(path)
    out = tmp_path / "out"
    assert (
        main(["translate", "--name", "ilm", "--checkpoints-dir", str(ckpt), str(path), "--out", str(out)])
        == 0
    )
    with Image.open(out / f"{path.stem}.png") as written, Image.open(path) as opened:
        assert opened.mode == mode
        api = np.asarray(Translator.from_run(ckpt / "ilm")(opened))
        assert np.array_equal(api, np.asarray(written))
