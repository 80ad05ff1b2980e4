"""The paper's Table 6 protocol as one resumable command: train, test and score each configuration for every
seed (docs/table6.md)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shlex
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pix2pix_ilm.config import TestConfig, TrainConfig, config_to_dict, load_run_config
from pix2pix_ilm.errors import UsageError
from pix2pix_ilm.evaluation.options import Table6Config
from pix2pix_ilm.evaluation.table6_budget import PLAN_FILE, BudgetPlanner, check_disk_space, scoring_seconds
from pix2pix_ilm.evaluation.table6_curves import epoch_tables, format_epochs, write_epoch_figure
from pix2pix_ilm.evaluation.table6_jobs import child_env, run_finished, say, train_command, train_runs
from pix2pix_ilm.evaluation.table6_report import (
    format_table,
    saved_runs,
    split_rows,
    write_figure,
    write_sample_grids,
)
from pix2pix_ilm.files import atomic_write_text, check_output_folder
from pix2pix_ilm.flags import parse_field_value
from pix2pix_ilm.locks import held
from pix2pix_ilm.stats import CONFIDENCE


@dataclass(frozen=True)
class Configuration:
    """One row of the table: G and D norms, and whether ILM is the authors' code."""

    label: str
    slug: str
    netG_norm: str
    netD_norm: str
    authors_ilm: bool = False

    @property
    def options(self) -> dict[str, Any]:
        authors = {"ilm_init": "pytorch", "ilm_variance": "unbiased", "ilm_hidden": "authors"}
        return authors if self.authors_ilm else {}

    @property
    def paper_row(self) -> str:
        return self.slug.removesuffix("_authors")


CONFIGURATIONS: tuple[Configuration, ...] = (
    Configuration("IN / IN", "in_in", "instance", "instance"),
    Configuration("ILM+IN / IN", "ilmin_in", "ilm_in", "instance"),
    Configuration("ILM+IN / ILM+IN", "ilmin_ilmin", "ilm_in", "ilm_in"),
    Configuration("ILM+IN / IN, authors' ILM code", "ilmin_in_authors", "ilm_in", "instance", True),
    Configuration("ILM+IN / ILM+IN, authors' ILM code", "ilmin_ilmin_authors", "ilm_in", "ilm_in", True),
    Configuration("IN / ILM+IN", "in_ilmin", "instance", "ilm_in"),  # ILM in D only: not in the paper
)
# The paper's RMSE is the per-pixel Euclidean colour distance: our ``rmse_rgb`` (docs/metrics.md).
PAPER_TABLE6: dict[str, dict[str, float]] = {
    "in_in": {"rmse_rgb": 108.17, "lpips": 0.441, "ssim": 0.372},
    "ilmin_in": {"rmse_rgb": 105.82, "lpips": 0.435, "ssim": 0.390},
    "ilmin_ilmin": {"rmse_rgb": 105.46, "lpips": 0.428, "ssim": 0.372},
}
SCORED_METRICS = ("rmse", "rmse_rgb", "lpips", "ssim", "psnr", "mae")
SPLITS: dict[str, tuple[str, str | None]] = {"paper": ("train", "200:400"), "test": ("test", None)}
"""Evaluation split -> (folder under the data root, subset): train/201-400, or the 106 test/ images."""

PRESETS: dict[str, dict[str, Any]] = {
    # The paper's setting: 256², unet_256 (8 downsamplings), 100 + 100 epochs.
    "paper": dict(
        netG="unet_256", ngf=64, ndf=64, load_size=286, crop_size=256, n_epochs=100, n_epochs_decay=100
    ),
    # A real comparison small enough for a CPU: 128², a U-Net at half width, 10 + 10 epochs (docs/table6.md).
    "quick": dict(
        netG="unet_128", ngf=32, ndf=32, load_size=142, crop_size=128, n_epochs=10, n_epochs_decay=10
    ),
}
# Both presets: labels → photos, 70x70 PatchGAN, batch 1, trained on train/1-200 (natural order).
COMMON = dict(
    direction="BtoA",
    lr_schedule="pix2pix",  # the pix2pix code's, which the paper's authors trained with
    netD="basic",
    batch_size=1,
    ilm_group_size=1,
    preprocess="resize_and_crop",
    gan_mode="vanilla",
    lambda_l1=100.0,
    subset="0:200",
    phase="train",
)


def preset_options(config: Table6Config) -> dict[str, Any]:
    return {**PRESETS[config.preset], **COMMON, **parse_overrides(config.overrides)}


def parse_overrides(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``("n_epochs=2", "precision=bf16")`` → typed values of :class:`TrainConfig` fields."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in names:
            raise UsageError(f"--set expects KEY=VALUE with a training option as KEY, got {pair!r}")
        try:
            out[key] = parse_field_value(TrainConfig, key, value)
        except UsageError as err:
            raise UsageError(f"--set {err}") from err
    return out


def _resolve_dataroot(dataroot: str | None, dry_run: bool) -> Path:
    """The user's folder, else the facades set found or (not in a dry run) fetched."""
    from pix2pix_ilm.data.facades import FACADES_ENV, ensure_facades

    if dataroot and Path(dataroot).is_dir():
        return Path(dataroot)
    if dry_run and dataroot and not Path(dataroot).exists():
        raise UsageError(f"--dataroot {dataroot} not found (give the facades folder or facades.tar.gz)")
    if dry_run:
        return Path(dataroot or os.environ.get(FACADES_ENV) or "datasets/facades")
    return Path(ensure_facades(Path("datasets"), local=dataroot))


# Options that change how a run is carried out, not what it learns: a run stays valid across them.
_HOW_NOT_WHAT = frozenset(
    {"name", "checkpoints_dir", "dataroot", "device", "continue_train", "overwrite", "compile", "num_workers"}
    | {"print_freq", "display_freq", "save_latest_freq", "save_latest_minutes", "save_epoch_freq"}
    | {"no_display", "display_server", "display_port", "display_env", "no_html", "loss_plot", "no_progress"}
    | {"progress_interval", "validate_images", "sync_batch", "tensorboard", "cuda_graph", "data_on_device"}
)


def trained_differently(run: TrainConfig) -> list[str]:
    """``["ngf: requested 16, trained 8", ...]`` for a run folder trained with other options ([] if none)."""
    if not (run.run_dir / "config.json").is_file():
        return []
    saved, wanted = config_to_dict(load_run_config(run.run_dir)), config_to_dict(run)
    automatic = {"precision": "auto", "channels_last": None}  # resolved for the device when trained
    return [
        f"{key}: requested {value!r}, trained {saved.get(key)!r}"
        for key, value in wanted.items()
        if key not in _HOW_NOT_WHAT and saved.get(key) != value and automatic.get(key, ...) != value
    ]


def _budget_plan(config: Table6Config) -> dict[str, Any] | None:
    """The plan ``--budget-min`` made for these options (``budget_plan.json``), if any."""
    path = Path(config.out) / PLAN_FILE
    if config.budget_min <= 0 or not path.is_file():
        return None
    plan = json.loads(path.read_text())
    options = {**PRESETS[config.preset], **parse_overrides(config.overrides)}
    fitted = [options["n_epochs"], options["n_epochs_decay"]]
    return plan if fitted in (plan["requested_epochs"], plan["epochs"]) else None


def _with_budget_plan(config: Table6Config) -> Table6Config:
    """With ``--budget-min``, the epochs an earlier run of the command fitted into the budget, as overrides."""
    plan = None if config.retrain else _budget_plan(config)
    if plan is None or plan["epochs"] == plan["requested_epochs"]:
        return config
    fitted = (f"n_epochs={plan['epochs'][0]}", f"n_epochs_decay={plan['epochs'][1]}")
    return dataclasses.replace(config, overrides=(*config.overrides, *fitted))


def _split_size(config: Table6Config, dataroot: Path, split: str) -> int:
    from pix2pix_ilm.config import parse_subset
    from pix2pix_ilm.data.images import list_images, phase_folder, select_files

    phase, subset = SPLITS[split]
    return len(
        select_files(list_images(phase_folder(dataroot, phase)), parse_subset(subset), config.eval_limit)
    )


def train_config(config: Table6Config, row: Configuration, seed: int, dataroot: Path) -> TrainConfig:
    return TrainConfig(
        dataroot=str(dataroot),
        name=f"{row.slug}_seed{seed}",
        checkpoints_dir=str(Path(config.out) / "checkpoints"),
        netG_norm=row.netG_norm,
        netD_norm=row.netD_norm,
        seed=seed,
        device=config.device,
        no_progress=config.no_progress,
        progress_interval=config.progress_interval,
        no_display=True,
        print_freq=50,
        display_freq=1000,
        # the epochs --score-epochs scores, else only the last one's (the table's) unless --set says otherwise
        **({"save_epoch_freq": math.gcd(*config.score_epochs)} | preset_options(config) | row.options),
    )


def score_run(config: Table6Config, run: TrainConfig, split: str, epoch: int | None = None) -> dict[str, Any]:
    """Test and score one run's ``latest.pt`` (or ``epoch_<epoch>.pt``) on ``split`` as ``eval`` does, unless
    its scores are complete and newer than the checkpoint (or the checkpoint is gone)."""
    from pix2pix_ilm.evaluation.evaluate import score_to_json
    from pix2pix_ilm.training.inference import checkpoint_path, run_test

    phase, subset = SPLITS[split]
    out, which = Path(config.out), "latest" if epoch is None else str(epoch)
    result_dir = out / "results" / run.name / f"{phase}_{which}"
    metrics_path = result_dir / "metrics.json"
    document = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    complete = set(SCORED_METRICS) <= set(document.get("metrics", [])) and "settings" in document
    checkpoint = checkpoint_path(run.run_dir, which)
    if not complete and not checkpoint.is_file():
        raise UsageError(f"{run.name}: {checkpoint.name} is gone and {metrics_path} holds no complete scores")
    if not complete or (checkpoint.is_file() and metrics_path.stat().st_mtime < checkpoint.stat().st_mtime):
        run_test(
            TestConfig(
                name=run.name,
                epoch=which,
                dataroot=run.dataroot,
                checkpoints_dir=run.checkpoints_dir,
                phase=phase,
                subset=subset,
                num_test=config.eval_limit,
                results_dir=str(out / "results"),
                train_mode_dropout=config.test_dropout == "on",
                device=config.device,
                seed=run.seed,
                progress_interval=config.progress_interval,
            )
        )
        _, document, _ = score_to_json(
            result_dir, SCORED_METRICS, lpips_backbone=config.lpips_backbone, device=config.device
        )
    stems = "\n".join(document["per_image"]).encode()
    return {
        "n": document["n"],
        "mean": document["mean"],
        "images_digest": hashlib.sha256(stems).hexdigest()[:16],
        "result_dir": str(result_dir),
    }


def print_plan(
    config: Table6Config, runs: list[tuple[Configuration, TrainConfig]], splits: list[str]
) -> None:
    threads = child_env(min(config.jobs, len(runs)))["OMP_NUM_THREADS"]
    print(f"table6 plan: preset {config.preset}, {len(runs)} runs, {config.jobs} at a time")
    print(
        f"device {config.device}, {threads} CPU thread(s) per run; evaluation on {' and '.join(splits)}, "
        f"test dropout {config.test_dropout}"
    )
    print(f"output: {config.out}; options of every run: {json.dumps(preset_options(config))}")
    for row, run in runs:
        state = "trained" if run_finished(run) else "not trained, left out" if config.no_train else ""
        extra = f" {json.dumps(row.options)}" if row.options else ""
        print(f"- {run.name}: {row.label}{extra}: {state or 'to train'}")
        if not state:
            print(f"  {shlex.join(train_command(run))}")


def run_table6(config: Table6Config) -> dict[str, Any] | None:
    """Train, test and score the chosen rows for every seed; write the table to ``--out`` (or print the plan).
    One table6 at a time per ``--out``."""
    if config.dry_run:
        return _run_table6(config)
    busy = (
        f"--out {config.out} is in use by another table6 (pid "
        + "{pid}); wait for it to end, or use another --out"
    )
    with held(Path(config.out) / ".table6.lock", busy):
        return _run_table6(config)


def _run_table6(config: Table6Config) -> dict[str, Any] | None:
    from pix2pix_ilm.evaluation.lpips_alexnet import build_lpips
    from pix2pix_ilm.training.run_dir import check_train_config

    if config.jobs < 1:
        raise UsageError(f"--jobs must be >= 1, got {config.jobs}")
    if not config.budget_min >= 0:
        raise UsageError(f"--budget-min must be >= 0 minutes, got {config.budget_min}")
    if any(e < 1 for e in config.score_epochs):
        raise UsageError(f"--score-epochs must be epochs >= 1, got {list(config.score_epochs)}")
    config = _with_budget_plan(config)
    dataroot = _resolve_dataroot(config.dataroot, config.dry_run)
    check_output_folder(config.out, "--out", [dataroot])
    splits = list(SPLITS) if config.eval_split == "both" else [config.eval_split]
    rows = [row for row in CONFIGURATIONS if row.slug in config.configs or "all" in config.configs]
    runs = [(row, train_config(config, row, seed, dataroot)) for row in rows for seed in config.seeds]
    for _, run in runs:
        check_train_config(run)
    differing = {run.name: diffs for _, run in runs if (diffs := trained_differently(run))}
    if differing and not config.retrain:
        name, diffs = next(iter(differing.items()))
        raise UsageError(
            f"{len(differing)} run(s) in {config.out} were trained with other options, e.g. {name}: "
            f"{'; '.join(diffs)}; use --retrain to train them again, or another --out"
        )
    if config.dry_run:
        print_plan(config, runs, splits)
        return None
    started = time.time()
    lpips_model = build_lpips(config.lpips_backbone, "cpu")  # fail now, not after hours of training
    lpips_seconds = time.time() - started  # each result folder builds it again
    for _, run in runs:
        if run.name in differing:
            say(f"{run.name}: trained with other options, training again")
            shutil.rmtree(run.run_dir)
        elif run_finished(run):
            say(f"{run.name}: trained already, skipping training")
    to_train = [run for _, run in runs if not run_finished(run)]
    if to_train and not config.no_train:
        check_disk_space([run for _, run in runs], Path(config.out))
        planner = None
        if config.budget_min > 0:
            per_image, per_folder = scoring_seconds(to_train[0], lpips_model, config.device)
            images = sum(_split_size(config, dataroot, split) for split in splits) * len(runs)
            scoring = images * per_image + len(runs) * len(splits) * (per_folder + lpips_seconds)
            planner = BudgetPlanner(config.budget_min, started, to_train, config.jobs, scoring)
        train_runs(to_train, config.jobs, Path(config.out) / "logs", planner)
        if planner is not None and planner.plan is None:
            say(f"budget: the runs finished within the first {planner.window:.0f} s, before any projection")
        if planner is not None and planner.plan is not None:
            atomic_write_text(Path(config.out) / PLAN_FILE, json.dumps(planner.plan, indent=2) + "\n")
            config = _with_budget_plan(config)
            runs = [(row, train_config(config, row, run.seed, dataroot)) for row, run in runs]
    saved = {}
    if config.no_train:
        settings = {"preset_options": preset_options(config), "test_dropout": config.test_dropout}
        sizes = {split: _split_size(config, dataroot, split) for split in splits}
        epochs = [str(e) for e in config.score_epochs if e <= runs[0][1].total_epochs]
        saved = saved_runs(Path(config.out), settings, sizes, epochs)
    records = [
        _record(config, row, run, splits) if run_finished(run) else saved[run.name]
        for row, run in runs
        if run_finished(run) or run.name in saved
    ]
    missing = [run.name for _, run in runs if not run_finished(run) and run.name not in saved]
    if not records:
        raise UsageError(f"no trained run to score in {config.out} (missing: {', '.join(missing)})")
    summary = summarize(config, records, missing, dataroot, time.time() - started)
    write_outputs(summary, Path(config.out))
    return summary


def _record(config: Table6Config, row: Configuration, run: TrainConfig, splits: list[str]) -> dict[str, Any]:
    """One trained run: what it is, its training time, its scores per split (and per --score-epochs epoch)."""
    timing = run.run_dir / "table6_timing.json"
    scores = {split: score_run(config, run, split) for split in splits}
    return {
        "config": row.slug,
        "label": row.label,
        "seed": run.seed,
        "name": run.name,
        "paper": PAPER_TABLE6.get(row.paper_row),
        "train_seconds": json.loads(timing.read_text())["train_seconds"] if timing.is_file() else 0.0,
        "splits": scores,
        "epochs": {
            str(e): scores
            if e == run.total_epochs
            else {split: score_run(config, run, split, e) for split in splits}
            for e in config.score_epochs
            if e <= run.total_epochs
        },
    }


def summarize(
    config: Table6Config, runs: list[dict[str, Any]], missing: list[str], dataroot: Path, seconds: float
) -> dict[str, Any]:
    splits = list(runs[0]["splits"])
    return {
        "preset": config.preset,
        "overrides": parse_overrides(config.overrides),
        "preset_options": preset_options(config),
        "seeds": list(config.seeds),
        "eval_splits": splits,
        "test_dropout": config.test_dropout,
        "dataroot": str(dataroot),
        "jobs": config.jobs,
        "budget": _budget_plan(config),
        "wall_seconds": round(seconds, 1),
        "confidence": CONFIDENCE,
        "tables": {split: split_rows(runs, split) for split in splits},
        "score_epochs": list(config.score_epochs),
        "epoch_tables": epoch_tables(runs, splits) if config.score_epochs else {},
        "runs": runs,
        "missing": missing,
        "command": " ".join(["pix2pix-ilm", *sys.argv[1:]]),
    }


def write_outputs(summary: dict[str, Any], out: Path) -> None:
    """table6.json, table6.md, table6.png (and table6_epochs.png), the sample grids; prints the table."""
    out.mkdir(parents=True, exist_ok=True)
    text = format_table(summary) + "\n".join(format_epochs(summary))
    atomic_write_text(out / "table6.json", json.dumps(summary, indent=2) + "\n")
    atomic_write_text(out / "table6.md", text)
    write_figure(summary, out / "table6.png")
    if summary["epoch_tables"]:
        write_epoch_figure(summary, out / "table6_epochs.png")
    write_sample_grids(out, summary["runs"])
    print(text)
