"""A study's scores stand for a split only while they are of the test that would run now: slices of one phase in
folders of their own; other test options, new or changed images, a newer checkpoint test and score again."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from pix2pix_ilm.config import TrainConfig, load_run_config
from pix2pix_ilm.errors import UsageError
from pix2pix_ilm.evaluation.options import StudyOptions
from pix2pix_ilm.evaluation.scoring import score_run
from pix2pix_ilm.evaluation.study import Study

SPLITS = {"first": ("train", "0:1"), "second": ("train", "1:2"), "test": ("test", None)}


def _study() -> Study:
    return Study("compare", "", (), (), "", SPLITS, ("rmse",), ("rmse",), (), {})


@pytest.fixture
def run(trained, tmp_path: Path) -> TrainConfig:
    """A copy of the trained run ``base`` and its data, which the tests change."""
    data, ckpt = trained
    shutil.copytree(data, tmp_path / "data")
    shutil.copytree(ckpt / "base", tmp_path / "ckpt" / "base")
    config = load_run_config(tmp_path / "ckpt" / "base")
    return dataclasses.replace(
        config, dataroot=str(tmp_path / "data"), checkpoints_dir=str(tmp_path / "ckpt")
    )


def _score(run: TrainConfig, split: str, **options) -> tuple[dict, str]:
    """The split's record and the test_id of the test it scored."""
    config = StudyOptions(out=str(Path(run.checkpoints_dir).parent / "out"), no_progress=True, **options)
    record = score_run(_study(), config, run, split)
    tested = json.loads((Path(record["result_dir"]) / "test.json").read_text())
    return record, tested["test_id"]


def test_slices_of_one_phase_keep_their_own_tests(run):
    first, first_id = _score(run, "first")
    second, _ = _score(run, "second")
    whole, _ = _score(run, "test")
    assert Path(first["result_dir"]).parts[-3:] == ("results_train_0-1", "base", "train_latest")
    assert Path(second["result_dir"]).parts[-3:] == ("results_train_1-2", "base", "train_latest")
    assert Path(whole["result_dir"]).parts[-3:] == ("results", "base", "test_latest")
    assert (first["n"], second["n"], whole["n"]) == (1, 1, 2)
    assert first["images_digest"] != second["images_digest"]
    assert _score(run, "first") == (first, first_id)  # the same test: its scores reused


def test_other_test_options_or_images_test_again(run):
    record, test_id = _score(run, "test")
    assert _score(run, "test") == (record, test_id)
    off, off_id = _score(run, "test", test_dropout="off")
    assert off_id != test_id and off["n"] == 2
    result_dir = Path(off["result_dir"])
    assert json.loads((result_dir / "test.json").read_text())["options"]["train_mode_dropout"] is False
    limited, limited_id = _score(run, "test", test_dropout="off", eval_limit=1)
    assert limited_id != off_id and limited["n"] == 1

    test_dir = Path(run.dataroot) / "test"
    shutil.copy(test_dir / "test1.jpg", test_dir / "test3.jpg")  # a new image
    grown, grown_id = _score(run, "test", test_dropout="off")
    assert grown_id != limited_id and grown["n"] == 3
    with Image.open(test_dir / "test3.jpg") as image:  # a changed image, same name
        image.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(test_dir / "test3.jpg", quality=90)
    changed, changed_id = _score(run, "test", test_dropout="off")
    assert changed_id != grown_id and changed["mean"] != grown["mean"]


def test_without_the_checkpoint_only_scores_of_this_test_stand(run):
    record, test_id = _score(run, "test")
    for checkpoint in Path(run.run_dir).glob("*.pt"):
        checkpoint.unlink()
    assert _score(run, "test") == (record, test_id)
    with pytest.raises(
        UsageError, match=r"latest\.pt is gone and .* holds scores of a test with other options"
    ):
        _score(run, "test", eval_limit=1)
