"""Test and score one run of a study on one split, reusing saved scores only when they are of the test that
would run now: the same options and inputs, the same checkpoint."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pix2pix_ilm.config import TestConfig, TrainConfig
from pix2pix_ilm.errors import UsageError
from pix2pix_ilm.evaluation.options import StudyOptions
from pix2pix_ilm.evaluation.study import Study


def results_root(out: Path, phase: str, subset: str | None) -> Path:
    """Where a split's test folders go: ``<out>/results`` for a whole phase, ``<out>/results_<phase>_<a>-<b>``
    for a slice of it (two slices of one phase never share a folder)."""
    return out / "results" if subset is None else out / f"results_{phase}_{subset.replace(':', '-')}"


def score_run(
    study: Study, config: StudyOptions, run: TrainConfig, split: str, epoch: int | None = None
) -> dict[str, Any]:
    """Test and score one run's ``latest.pt`` (or ``epoch_<epoch>.pt``) on ``split`` as ``eval`` does, unless
    the saved scores are complete, of this very test and newer than the checkpoint (or the checkpoint is gone)."""
    from pix2pix_ilm.evaluation.evaluate import score_to_json
    from pix2pix_ilm.training.inference import checkpoint_path, run_test

    phase, subset = study.splits[split]
    which = "latest" if epoch is None else str(epoch)
    test = TestConfig(
        name=run.name,
        epoch=which,
        dataroot=run.dataroot,
        checkpoints_dir=run.checkpoints_dir,
        phase=phase,
        subset=subset,
        num_test=config.eval_limit,
        results_dir=str(results_root(Path(config.out), phase, subset)),
        train_mode_dropout=config.test_dropout == "on",
        device=config.device,
        seed=run.seed,
        progress_interval=config.progress_interval,
    )
    result_dir = Path(test.results_dir) / run.name / f"{phase}_{which}"
    document = _read(result_dir / "metrics.json")
    stale = _stale(document, result_dir, test, run, study.metrics)
    checkpoint = checkpoint_path(run.run_dir, which)
    if stale and not checkpoint.is_file():
        raise UsageError(f"{run.name}: {checkpoint.name} is gone and {result_dir} holds {stale}")
    if stale or (
        checkpoint.is_file() and (result_dir / "metrics.json").stat().st_mtime < checkpoint.stat().st_mtime
    ):
        run_test(test)
        _, document, _ = score_to_json(
            result_dir, study.metrics, lpips_backbone=config.lpips_backbone, device=config.device
        )
    stems = "\n".join(document["per_image"]).encode()
    return {
        "n": document["n"],
        "mean": {metric: value for metric, value in document["mean"].items() if metric in study.metrics},
        "images_digest": hashlib.sha256(stems).hexdigest()[:16],
        "result_dir": str(result_dir),
    }


def _read(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # missing or damaged: tested and scored again
        return {}
    return document if isinstance(document, dict) else {}


def _stale(
    document: dict[str, Any], result_dir: Path, test: TestConfig, run: TrainConfig, metrics: list[str]
) -> str:
    """Why the saved scores cannot stand for this test ('' if they can)."""
    from pix2pix_ilm.training.inference import test_record
    from pix2pix_ilm.viz.pages import TEST_INFO

    if not set(metrics) <= set(document.get("metrics", [])) or "settings" not in document:
        return "no complete scores"
    tested = _read(result_dir / TEST_INFO)
    if document.get("test_id") is None or document.get("test_id") != tested.get("test_id"):
        return "scores of another test"
    now = test_record(test, run)
    if {key: tested.get(key) for key in now} != now:
        return "scores of a test with other options or images"
    return ""
