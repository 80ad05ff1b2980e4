"""The README's "Use a trained model" examples, run as written (a trained run as checkpoints/facades_ilm)."""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pix2pix_ilm.cli import main
from tests.helpers import require_module

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_blocks(section: str) -> dict[str, list[str]]:
    """The code blocks of a README section by language: ``{"sh": [...], "python": [...]}``."""
    text = README.read_text().split(f"### {section}\n", 1)[1].split("\n### ", 1)[0]
    blocks: dict[str, list[str]] = {}
    for language, body in re.findall(r"```(\w+)\n(.*?)```", text, re.S):
        blocks.setdefault(language, []).append(body)
    return blocks


@pytest.mark.usefixtures("one_thread")
def test_use_a_trained_model_examples_run_as_written(runs, facades_dir, tmp_path, monkeypatch):
    require_module("onnxruntime")
    _, ckpt = runs
    shutil.copytree(ckpt / "ilm", tmp_path / "checkpoints" / "facades_ilm")
    with Image.open(facades_dir / "test" / "5.jpg") as pair:
        pair.crop((256, 0, 512, 256)).resize((180, 120)).save(tmp_path / "photo.jpg")
    monkeypatch.chdir(tmp_path)
    blocks = readme_blocks("Use a trained model")
    commands = [line for block in blocks["sh"] for line in block.splitlines() if line.strip()]
    assert len(commands) == 3 and len(blocks["python"]) == 1
    for line in commands:
        argv = shlex.split(line)
        assert argv[0] == "pix2pix-ilm"
        assert main(argv[1:]) == 0, line
    exec(compile(blocks["python"][0], "README.md", "exec"), {})
    for path in (
        "translated/photo.png",
        "facades_ilm.onnx",
        "translated_onnx/photo.png",
        "photo_translated.png",
    ):
        assert (tmp_path / path).is_file(), path
    with Image.open("translated/photo.png") as cli, Image.open("photo_translated.png") as api:
        assert cli.size == api.size == (180, 120) and list(cli.getdata()) == list(
            api.convert(cli.mode).getdata()
        )
        # The exported generator gives the PyTorch generator's pixels: fp32 in two runtimes, one level apart
        with Image.open("translated_onnx/photo.png") as onnx:
            diff = np.abs(np.asarray(onnx, dtype=int) - np.asarray(cli, dtype=int))
            assert onnx.size == cli.size and diff.max() <= 1 and diff.mean() < 0.01


# Appended to the README's commands: the same jobs on tiny networks and one epoch.
SMALL = ["--netG", "unet_32", "--ngf", "4", "--ndf", "4", "--load-size", "36", "--crop-size", "32"]
TINY_RUN = [*SMALL, "--n-epochs", "1", "--n-epochs-decay", "1", "--no-display", "--no-progress"]


@pytest.mark.usefixtures("one_thread")
def test_your_data_examples_run_as_written(pairs, lpips_backbone, tmp_path, monkeypatch):
    from tests.deploy.test_reference import NGF, reference_patchgan, reference_unet
    from tests.faults import write_paired

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PIX2PIX_ILM_LPIPS_BACKBONE", str(lpips_backbone))
    edges = tmp_path / "datasets" / "edges"
    write_paired(edges, "train", {k: pairs[k] for k in ("train1", "train2", "train3")}, grey=True)
    write_paired(edges, "test", {k: pairs[k] for k in ("test1", "test2")}, grey=True)
    torch.save(reference_unet(NGF, 5), "latest_net_G.pth")
    torch.save(reference_patchgan(NGF), "latest_net_D.pth")
    extra = {"train": TINY_RUN, "import": SMALL[:6]}
    commands = [
        line for block in readme_blocks("Your data")["sh"] for line in block.splitlines() if line.strip()
    ]
    assert [shlex.split(line)[1] for line in commands] == ["train", "test", "eval", "import"]
    for line in commands:
        argv = shlex.split(line)
        assert main([*argv[1:], *extra.get(argv[1], [])]) == 0, line
    with Image.open(next((tmp_path / "results/edges/test_latest/images").glob("*_fake_B.png"))) as image:
        assert image.mode == "L"
    assert json.loads(Path("results/edges/test_latest/metrics.json").read_text())["n"] == 2
    assert (tmp_path / "checkpoints" / "facades_ref" / "latest.pt").is_file()
