"""Compare rows of training options over seeds as one resumable command: train, test and score every row for every
seed, then pair each row with the baseline per seed; ``compare`` and its preset ``table6`` (docs/table6.md)."""

from __future__ import annotations

import dataclasses
import json
import math
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from pix2pix_ilm.config import TrainConfig, config_to_dict, load_run_config
from pix2pix_ilm.errors import UsageError
from pix2pix_ilm.evaluation.options import CompareConfig, StudyOptions
from pix2pix_ilm.evaluation.scoring import score_run
from pix2pix_ilm.evaluation.study import Row, Study, count_images, not_held_out, option_key, parse_overrides
from pix2pix_ilm.evaluation.table6_budget import PLAN_FILE, BudgetPlanner, check_disk_space, scoring_seconds
from pix2pix_ilm.evaluation.table6_curves import epoch_tables, format_epochs, write_epoch_figure
from pix2pix_ilm.evaluation.table6_jobs import (
    COMMAND,
    child_env,
    run_finished,
    say,
    train_command,
    train_runs,
)
from pix2pix_ilm.evaluation.table6_report import (
    format_table,
    saved_runs,
    split_rows,
    write_figure,
    write_sample_grids,
)
from pix2pix_ilm.files import atomic_write_text, check_output_folder
from pix2pix_ilm.locks import held
from pix2pix_ilm.stats import CONFIDENCE


def run_options(study: Study, config: StudyOptions) -> dict[str, Any]:
    """Every run's training options: the study's, then ``--set``."""
    return {**study.base, **parse_overrides(config.overrides)}


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


def _check_rows_differ(runs: list[tuple[Row, TrainConfig]]) -> None:
    """Two rows that would learn the same thing make a comparison of nothing."""
    learned: dict[str, Row] = {}
    for row, run in runs:
        what = json.dumps({k: v for k, v in config_to_dict(run).items() if k not in _HOW_NOT_WHAT | {"seed"}})
        other = learned.setdefault(what, row)
        if other.slug != row.slug:
            raise UsageError(
                f"rows {other.slug} and {row.slug} train with the same options, a comparison of nothing: "
                "change or drop one"
            )


def _budget_plan(study: Study, config: StudyOptions) -> dict[str, Any] | None:
    """The plan ``--budget-min`` made for these options (``budget_plan.json``), if any."""
    path = Path(config.out) / PLAN_FILE
    if config.budget_min <= 0 or not path.is_file():
        return None
    plan = json.loads(path.read_text())
    options = run_options(study, config)
    fitted = [options.get(key, getattr(TrainConfig, key)) for key in ("n_epochs", "n_epochs_decay")]
    return plan if fitted in (plan["requested_epochs"], plan["epochs"]) else None


def _with_budget_plan(study: Study, config: StudyOptions) -> StudyOptions:
    """With ``--budget-min``, the epochs an earlier run of the command fitted into the budget, as overrides."""
    plan = None if config.retrain else _budget_plan(study, config)
    if plan is None or plan["epochs"] == plan["requested_epochs"]:
        return config
    fitted = (f"n_epochs={plan['epochs'][0]}", f"n_epochs_decay={plan['epochs'][1]}")
    kept = tuple(o for o in config.overrides if option_key(o) not in ("n_epochs", "n_epochs_decay"))
    return dataclasses.replace(config, overrides=(*kept, *fitted))


def split_size(study: Study, config: StudyOptions, dataroot: Path, split: str) -> int:
    phase, subset = study.splits[split]
    paired = run_options(study, config).get("dataset_mode") == "paired"
    return count_images(dataroot, phase, subset, paired, config.eval_limit)


def train_config(study: Study, config: StudyOptions, row: Row, seed: int, dataroot: Path) -> TrainConfig:
    # the epochs --score-epochs scores, else only the last one's (the table's) unless --set says otherwise
    return TrainConfig(
        **{"save_epoch_freq": math.gcd(*config.score_epochs), "no_display": True}
        | {"print_freq": 50, "display_freq": 1000}
        | run_options(study, config)
        | row.options
        | {"dataroot": str(dataroot), "name": f"{row.slug}_seed{seed}", "seed": seed, "device": config.device}
        | {"checkpoints_dir": str(Path(config.out) / "checkpoints"), "no_progress": config.no_progress}
        | {"progress_interval": config.progress_interval}
    )


def print_plan(
    study: Study, config: StudyOptions, runs: list[tuple[Row, TrainConfig]], splits: list[str]
) -> None:
    threads = child_env(min(config.jobs, len(runs)))["OMP_NUM_THREADS"]
    print(f"{study.name} plan: preset {config.preset}, {len(runs)} runs, {config.jobs} at a time")
    print(
        f"device {config.device}, {threads} CPU thread(s) per run; evaluation on {' and '.join(splits)}, "
        f"test dropout {config.test_dropout}"
    )
    print(f"output: {config.out}; options of every run: {json.dumps(run_options(study, config))}")
    for line in not_held_out(study, [run for _, run in runs], config.eval_limit):
        print(line)
    for row, run in runs:
        state = "trained" if run_finished(run) else "not trained, left out" if config.no_train else ""
        print(f"- {run.name}: {row.label} {json.dumps(row.options)}: {state or 'to train'}")
        if not state:
            print(f"  {shlex.join(train_command(run))}")


def check_options(config: StudyOptions) -> None:
    """The command's own options, before any work."""
    if config.jobs < 1:
        raise UsageError(f"--jobs must be >= 1, got {config.jobs}")
    if not config.budget_min >= 0:
        raise UsageError(f"--budget-min must be >= 0 minutes, got {config.budget_min}")
    if any(e < 1 for e in config.score_epochs):
        raise UsageError(f"--score-epochs must be epochs >= 1, got {list(config.score_epochs)}")


def _checked_runs(study: Study, config: StudyOptions, dataroot: Path) -> list[tuple[Row, TrainConfig]]:
    """Every (row, run) of the study, each checked as ``train`` checks its options."""
    from pix2pix_ilm.training.run_dir import check_train_config

    runs = [
        (row, train_config(study, config, row, seed, dataroot)) for row in study.rows for seed in config.seeds
    ]
    for _, run in runs:
        check_train_config(run)
    _check_rows_differ(runs)
    return runs


def run_study(study: Study, config: StudyOptions, dataroot: Path) -> dict[str, Any] | None:
    """Train, test and score every row for every seed; write the table to ``--out`` (or print the plan). One
    command at a time per ``--out``."""
    check_options(config)
    check_output_folder(config.out, "--out", [dataroot])
    if config.dry_run:
        return _run_study(study, config, dataroot)
    in_use = f"--out {config.out} is in use by another {study.name}"
    command = COMMAND.set(study.name)  # its progress lines
    try:
        with held(
            Path(config.out) / f".{study.name}.lock", in_use, "wait for it to end, or use another --out"
        ):
            return _run_study(study, config, dataroot)
    finally:
        COMMAND.reset(command)


def _run_study(study: Study, config: StudyOptions, dataroot: Path) -> dict[str, Any] | None:
    from pix2pix_ilm.evaluation.lpips_alexnet import build_lpips

    config = _with_budget_plan(study, config)
    splits = list(study.splits)
    runs = _checked_runs(study, config, dataroot)
    differing = {run.name: diffs for _, run in runs if (diffs := trained_differently(run))}
    if differing and not config.retrain:
        name, diffs = next(iter(differing.items()))
        raise UsageError(
            f"{len(differing)} run(s) in {config.out} were trained with other options, e.g. {name}: "
            f"{'; '.join(diffs)}; use --retrain to train them again, or another --out"
        )
    if config.dry_run:
        print_plan(study, config, runs, splits)
        return None
    for line in not_held_out(study, [run for _, run in runs], config.eval_limit):
        say(line)
    started = time.time()
    lpips_model = None  # fail now, not after hours of training
    if "lpips" in study.metrics or config.budget_min > 0:
        lpips_model = build_lpips(config.lpips_backbone, "cpu")
    lpips_seconds = time.time() - started  # each result folder builds it again
    for _, run in runs:
        if run.name in differing:
            say(f"{run.name}: trained with other options, training again")
            shutil.rmtree(run.run_dir)
        elif run_finished(run) and not config.no_train:
            say(f"{run.name}: trained already, skipping training")
    to_train = [run for _, run in runs if not run_finished(run)]
    if to_train and not config.no_train:
        config = _train(study, config, dataroot, runs, to_train, lpips_model, started, lpips_seconds)
        runs = [(row, train_config(study, config, row, run.seed, dataroot)) for row, run in runs]
    saved, lacking = {}, {}
    if config.no_train:
        settings = {"preset_options": run_options(study, config), "test_dropout": config.test_dropout}
        sizes = {split: split_size(study, config, dataroot, split) for split in splits}
        epochs = [str(e) for e in config.score_epochs if e <= runs[0][1].total_epochs]
        saved, lacking = saved_runs(Path(config.out) / f"{study.name}.json", study, settings, sizes, epochs)
    records = [
        _record(study, config, row, run) if run_finished(run) else saved[run.name]
        for row, run in runs
        if run_finished(run) or run.name in saved
    ]
    missing = [run.name for _, run in runs if not run_finished(run) and run.name not in saved]
    lacking = {name: metrics for name, metrics in lacking.items() if name in missing}
    if not records:
        lack = ", ".join(dict.fromkeys(m for metrics in lacking.values() for m in metrics))
        lack = f"; their saved scores lack {lack}" if lack else ""
        raise UsageError(f"no trained run to score in {config.out} (missing: {', '.join(missing)}{lack})")
    summary = summarize(study, config, records, missing, dataroot, time.time() - started)
    summary["lacking"] = lacking
    write_outputs(study, summary, Path(config.out))
    return summary


def _train(
    study: Study,
    config: StudyOptions,
    dataroot: Path,
    runs: list[tuple[Row, TrainConfig]],
    to_train: list[TrainConfig],
    lpips_model: Any,
    started: float,
    lpips_seconds: float,
) -> StudyOptions:
    """Train ``to_train`` (within ``--budget-min``); the options, with the epochs a budget fitted."""
    check_disk_space([run for _, run in runs], Path(config.out))
    planner = None
    if config.budget_min > 0:
        per_image, per_folder = scoring_seconds(to_train[0], lpips_model, config.device)
        images = sum(split_size(study, config, dataroot, split) for split in study.splits) * len(runs)
        scoring = images * per_image + len(runs) * len(study.splits) * (per_folder + lpips_seconds)
        planner = BudgetPlanner(config.budget_min, started, to_train, config.jobs, scoring)
    train_runs(to_train, config.jobs, Path(config.out) / "logs", planner)
    if planner is not None and planner.plan is None:
        say(f"budget: the runs finished within the first {planner.window:.0f} s, before any projection")
    if planner is not None and planner.plan is not None:
        atomic_write_text(Path(config.out) / PLAN_FILE, json.dumps(planner.plan, indent=2) + "\n")
        config = _with_budget_plan(study, config)
    return config


def _record(study: Study, config: StudyOptions, row: Row, run: TrainConfig) -> dict[str, Any]:
    """One trained run: what it is, its training time, its scores per split (and per --score-epochs epoch)."""
    timing = run.run_dir / "table6_timing.json"
    scores = {split: score_run(study, config, run, split) for split in study.splits}
    return {
        "config": row.slug,
        "label": row.label,
        "seed": run.seed,
        "name": run.name,
        **row.record,
        "train_seconds": json.loads(timing.read_text())["train_seconds"] if timing.is_file() else 0.0,
        "splits": scores,
        "epochs": {
            str(e): scores
            if e == run.total_epochs
            else {split: score_run(study, config, run, split, e) for split in study.splits}
            for e in config.score_epochs
            if e <= run.total_epochs
        },
    }


def summarize(
    study: Study,
    config: StudyOptions,
    runs: list[dict[str, Any]],
    missing: list[str],
    dataroot: Path,
    seconds: float,
) -> dict[str, Any]:
    splits = list(runs[0]["splits"])
    return {
        "preset": config.preset,
        "overrides": parse_overrides(config.overrides),
        "preset_options": run_options(study, config),
        "seeds": list(config.seeds),
        "eval_splits": splits,
        "test_dropout": config.test_dropout,
        "dataroot": str(dataroot),
        "jobs": config.jobs,
        "budget": _budget_plan(study, config),
        "wall_seconds": round(seconds, 1),
        "confidence": CONFIDENCE,
        "tables": {split: split_rows(study, runs, split) for split in splits},
        "score_epochs": list(config.score_epochs),
        "epoch_tables": epoch_tables(study, runs, splits) if config.score_epochs else {},
        "runs": runs,
        "missing": missing,
        "command": " ".join(["pix2pix-ilm", *sys.argv[1:]]),
        **study.describe,
    }


def write_outputs(study: Study, summary: dict[str, Any], out: Path) -> None:
    """<name>.json, <name>.md, <name>.png (and <name>_epochs.png), the sample grids; prints the table."""
    out.mkdir(parents=True, exist_ok=True)
    text = "\n".join([format_table(study, summary), *format_epochs(study, summary)])
    atomic_write_text(out / f"{study.name}.json", json.dumps(summary, indent=2) + "\n")
    atomic_write_text(out / f"{study.name}.md", text)
    write_figure(study, summary, out / f"{study.name}.png")
    if summary["epoch_tables"]:
        write_epoch_figure(study, summary, out / f"{study.name}_epochs.png")
    write_sample_grids(out, summary["runs"])
    print(text)


def run_compare(config: CompareConfig) -> dict[str, Any] | None:
    """``pix2pix-ilm compare``: the rows of ``--row`` on ``--dataroot``, scored on every ``--eval-phase``."""
    from pix2pix_ilm.evaluation.compare_rows import compare_study

    return run_study(compare_study(config), config, Path(config.dataroot or ""))
