"""`test` outputs: every image renamed into place whole, all flushed to disk by one sync."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from PIL import Image

from pix2pix_ilm.cli import main
from tests.faults import args_for_test, cli_error

pytestmark = pytest.mark.usefixtures("one_thread")


def test_outputs_are_atomic_and_flushed_once(trained, tmp_path, monkeypatch):
    data, ckpt = trained
    calls = {"fsync": 0, "sync": 0}
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        calls["fsync"] += 1
        real_fsync(fd)

    def sync() -> None:
        calls["sync"] += 1

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "sync", sync)
    assert main(args_for_test(data, ckpt, tmp_path / "results")) == 0
    assert calls == {"fsync": 0, "sync": 1}  # was one fsync per image and per folder entry
    out = tmp_path / "results" / "base" / "test_latest"
    names = sorted(p.name for p in (out / "images").iterdir())
    assert names == sorted(f"test{n}_{label}.png" for n in (1, 2) for label in ("real_A", "fake_B", "real_B"))
    for name in names:  # complete PNGs, no temp files left
        with Image.open(out / "images" / name) as image:
            image.load()
            assert image.size == (32, 32)
    assert sorted(p.name for p in out.iterdir()) == ["images", "index.html", "test.json"]


def _eval(results, capsys) -> dict:
    assert main(["eval", "--results-dir", str(results), "--metrics", "rmse"]) == 0
    capsys.readouterr()
    return json.loads((results / "metrics.json").read_text())


def test_eval_scores_exactly_what_the_last_test_wrote(trained, tmp_path, capsys):
    data, ckpt = trained
    out = tmp_path / "results" / "base" / "test_latest"
    assert main(args_for_test(data, ckpt, tmp_path / "results")) == 0
    assert _eval(out, capsys)["n"] == 2
    assert main(args_for_test(data, ckpt, tmp_path / "results", "--num-test", "1")) == 0
    assert not (out / "metrics.json").exists()  # the old scores went with the old images
    assert sorted(p.name for p in (out / "images").iterdir()) == [
        f"test1_{x}.png" for x in ("fake_B", "real_A", "real_B")
    ]
    assert _eval(out, capsys)["n"] == 1

    for label in ("fake_B", "real_B"):  # an image that test did not write
        Image.new("RGB", (32, 32)).save(out / "images" / f"stray_{label}.png")
    assert main(["eval", "--results-dir", str(out), "--metrics", "rmse"]) == 2
    err = capsys.readouterr().err
    assert "disagree with" in err and "1 not listed there ['stray']" in err


def test_single_inputs_have_their_own_folder_and_keep_their_size(trained, tmp_path, capsys):
    data, ckpt = trained
    results = tmp_path / "results"
    assert main(args_for_test(data, ckpt, results)) == 0
    paired = {p.name: p.read_bytes() for p in (results / "base" / "test_latest" / "images").iterdir()}
    single = tmp_path / "single" / "test"
    single.mkdir(parents=True)
    Image.new("RGB", (300, 200), (200, 40, 40)).save(single / "label_a.png")
    argv = ["test", "--name", "base", "--checkpoints-dir", str(ckpt), "--results-dir", str(results)]
    assert main([*argv, "--dataroot", str(tmp_path / "single"), "--single", "--no-progress"]) == 0
    out = results / "base" / "test_latest_single"
    assert sorted(p.name for p in (out / "images").iterdir()) == ["label_a_fake_B.png"]
    with Image.open(out / "images" / "label_a_fake_B.png") as image:
        assert image.size == (300, 200)
    assert "pix2pix-ilm eval" not in (out / "index.html").read_text()
    assert {p.name: p.read_bytes() for p in (results / "base" / "test_latest" / "images").iterdir()} == paired
    info = json.loads((out / "test.json").read_text())
    assert info["trained"] == {
        "epochs_done": 1,
        "total_epochs": 1,
        "batches_into_next_epoch": 0,
        "iteration": 2,
    }


def test_the_results_folder_is_checked_before_the_model_loads(trained, tmp_path, capsys, monkeypatch):
    from pix2pix_ilm.training import inference

    data, ckpt = trained
    loads = []
    monkeypatch.setattr(inference, "load_generator_for_inference", lambda *a: loads.append(a))
    (tmp_path / "file").write_text("mine")
    for results, expected in (
        (tmp_path / "file", "is a file, not a folder"),
        (tmp_path / "file" / "deeper", "which is a file"),
    ):
        assert expected in cli_error(capsys, *args_for_test(data, ckpt, results))
    # The folder a test replaces must not hold its own inputs: the data, or the run.
    results = tmp_path / "results"
    inside = results / "base" / "test_latest" / "data"
    shutil.copytree(data, inside)
    assert "holds the input" in cli_error(capsys, *args_for_test(inside, ckpt, results))
    assert (inside / "test").is_dir() and loads == []
    assert (tmp_path / "file").read_text() == "mine"
    msg = cli_error(capsys, *args_for_test(data, ckpt, tmp_path / "r", "--num-test", "0"))
    assert "--num-test must be >= 1, got 0" in msg and "max-dataset-size" not in msg


def test_a_damaged_config_json_is_one_line_naming_it(trained, tmp_path, capsys):
    data, ckpt = trained
    copy = tmp_path / "ckpt"
    shutil.copytree(ckpt, copy)
    config = copy / "base" / "config.json"
    run = ["--name", "base", "--checkpoints-dir", str(copy)]
    test = args_for_test(data, copy, tmp_path / "results")
    train = ["train", "--dataroot", str(data), *run, "--continue"]
    export = ["export", *run, "--format", "torchscript", "--out", str(tmp_path / "g.pt")]
    for content in (b'{"config": {"netG": ', b"\xff\xfe\x00garbage", b'{"environment": {}}', b"[1, 2]"):
        config.write_bytes(content)
        for args in (test, export, train):
            msg = cli_error(capsys, *args)
            assert str(config) in msg and "not a valid run config" in msg, msg
    # Well-formed JSON with values a run cannot have: named, with the value and what it must be.
    saved = json.loads((ckpt / "base" / "config.json").read_text())
    for key, value, why in (
        ("ngf", "eight", "ngf is 'eight', but it must be an integer"),
        ("no_dropout", 1, "no_dropout is 1, but it must be true or false"),
        ("netG_norm", "fancy", "netG_norm is 'fancy', not one of none, batch"),
        ("lr", None, "lr is None, but it must be a number"),
    ):
        config.write_text(json.dumps({**saved, "config": {**saved["config"], key: value}}))
        for args in (test, train):
            msg = cli_error(capsys, *args)
            assert f"{config}: {why}" in msg, msg
    assert not (tmp_path / "results").exists() and not (tmp_path / "g.pt").exists()
