"""Export to ONNX and TorchScript: a trained IN and ILM+IN model reproduce ``test``'s generator outputs on real
facades images in onnxruntime and in a torch-only process; the contract is in the files' metadata."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from pix2pix_ilm.cli import main
from pix2pix_ilm.training.inference import load_generator_for_inference, translate
from tests.faults import cli_error
from tests.helpers import require_module

pytestmark = pytest.mark.usefixtures("one_thread")


def _test_inputs(data: Path) -> torch.Tensor:
    """The test images as ``test`` feeds them (B → A here: the runs use --direction BtoA), stacked."""
    from pix2pix_ilm.data.aligned import AlignedDataset
    from pix2pix_ilm.data.images import list_images
    from pix2pix_ilm.data.transforms import TransformSpec

    dataset = AlignedDataset(
        list_images(data / "test"), TransformSpec("resize_and_crop", 36, 32, False, False), "BtoA"
    )
    return torch.stack([dataset[i]["A"] for i in range(len(dataset))])


@pytest.mark.parametrize("name", ["in", "ilm"])
def test_onnx_and_torchscript_reproduce_the_generator(runs, tmp_path, name):
    onnxruntime = require_module("onnxruntime")

    data, ckpt = runs
    generator, config, _ = load_generator_for_inference(ckpt / name, "latest", "cpu")
    inputs = _test_inputs(data)
    expected = torch.cat([translate(generator, x[None], config) for x in inputs]).numpy()

    onnx_file, script_file = tmp_path / f"{name}.onnx", tmp_path / f"{name}.pt"
    common = ["--name", name, "--checkpoints-dir", str(ckpt)]
    assert main(["export", *common, "--format", "onnx", "--out", str(onnx_file), "--dynamic"]) == 0
    assert main(["export", *common, "--format", "torchscript", "--out", str(script_file)]) == 0

    session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    got = np.concatenate([session.run(None, {"input": x[None].numpy()})[0] for x in inputs])
    assert np.abs(got - expected).max() <= 1e-4
    batch = session.run(None, {"input": inputs.numpy()})[0]  # --dynamic: a batch, and other sizes
    assert np.abs(batch - expected).max() <= 1e-4
    wide = torch.rand(1, 3, 64, 96) * 2 - 1
    assert (
        np.abs(
            session.run(None, {"input": wide.numpy()})[0] - translate(generator, wide, config).numpy()
        ).max()
        <= 1e-4
    )
    contract = json.loads(session.get_modelmeta().custom_metadata_map["pix2pix_ilm"])
    assert (contract["input_nc"], contract["output_nc"], contract["value_range"]) == (3, 3, [-1, 1])
    assert (contract["height"], contract["size_multiple"], contract["direction"]) == (None, 32, "BtoA")
    assert contract["trained"]["epochs_done"] == 2 and contract["preprocess"]["crop_size"] == 32

    # TorchScript in a fresh process that never imports this package.
    np.save(tmp_path / "inputs.npy", inputs.numpy())
    script = (
        "import json, sys, numpy as np, torch\n"
        f"extra = {{'pix2pix_ilm.json': ''}}\n"
        f"m = torch.jit.load({str(script_file)!r}, _extra_files=extra)\n"
        f"x = torch.from_numpy(np.load({str(tmp_path / 'inputs.npy')!r}))\n"
        "out = torch.cat([m(x[i:i + 1]) for i in range(len(x))]).detach().numpy()\n"
        f"np.save({str(tmp_path / 'script.npy')!r}, out)\n"
        "assert not any(n.startswith('pix2pix_ilm') for n in sys.modules)\n"
        "print(json.loads(extra['pix2pix_ilm.json'])['height'])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "32"
    assert np.abs(np.load(tmp_path / "script.npy") - expected).max() <= 1e-4


def test_export_errors_are_one_line(runs, tmp_path, capsys, monkeypatch):
    from pix2pix_ilm.deploy import export

    _, ckpt = runs
    assert (
        main(["export", "--name", "nope", "--checkpoints-dir", str(ckpt), "--out", str(tmp_path / "x.onnx")])
        == 2
    )
    assert "no run at" in capsys.readouterr().err
    monkeypatch.setattr(export.importlib.util, "find_spec", lambda name: None)
    assert (
        main(["export", "--name", "in", "--checkpoints-dir", str(ckpt), "--out", str(tmp_path / "x.onnx")])
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert err.endswith("pip install 'pix2pix-ilm[export]'") and "\n" not in err
    assert not (tmp_path / "x.onnx").exists()


def test_export_checks_its_output_first_and_writes_it_atomically(runs, tmp_path, capsys, monkeypatch):
    from pix2pix_ilm.deploy import export

    _, ckpt = runs
    run = ["export", "--name", "ilm", "--checkpoints-dir", str(ckpt), "--format", "torchscript"]
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    calls = []
    monkeypatch.setattr(export, "load_generator_for_inference", lambda *a: calls.append(a))
    assert "notes.txt exists; use --overwrite" in cli_error(capsys, *run, "--out", str(notes))
    assert "is a folder" in cli_error(capsys, *run, "--out", str(tmp_path))
    assert "which is a file" in cli_error(capsys, *run, "--out", str(notes / "model.pt"))
    # A file of the run is an input: never replaced, not even with --overwrite.
    latest = ckpt / "ilm" / "latest.pt"
    digest = hashlib.sha256(latest.read_bytes()).hexdigest()
    for victim in (latest, ckpt / "ilm" / "config.json"):
        assert "is the input" in cli_error(capsys, *run, "--out", str(victim), "--overwrite")
    assert hashlib.sha256(latest.read_bytes()).hexdigest() == digest
    assert calls == [] and notes.read_text() == "mine"  # all refused before the model was loaded
    monkeypatch.undo()

    # A failing exporter leaves the previous file as it was and no temp file (a full disk: tests/test_files.py).
    def failing(generator, example, meta):
        raise RuntimeError("the exporter fails")

    monkeypatch.setattr(export, "_export_torchscript", failing)
    with pytest.raises(RuntimeError):
        main([*run, "--out", str(notes), "--overwrite"])
    assert notes.read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    monkeypatch.undo()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main([*run, "--out", str(notes), "--overwrite"]) == 0
    assert [str(w.message) for w in caught] == []  # the tracer's known notes do not read like failures
    assert zipfile.is_zipfile(notes) and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
