"""The README's "Use a trained model" examples, run as written (a trained run as checkpoints/facades_ilm)."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest
from PIL import Image

from pix2pix_ilm.cli import main

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
    pytest.importorskip("onnxruntime")
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
