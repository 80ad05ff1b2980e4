"""The paper's Table 6 protocol as one command: train, test and score each configuration for every seed.

Protocol, splits, statistics and the figure: docs/table6.md. Every stage is resumable: a finished training
run is not trained again, an interrupted one continues from ``latest.pt``, and up-to-date scores are kept.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from pix2pix_ilm.config import TestConfig, TrainConfig
from pix2pix_ilm.errors import UsageError
from pix2pix_ilm.files import atomic_write_text
from pix2pix_ilm.flags import field_type


@dataclass(frozen=True)
class Configuration:
    """One row of the table: G and D norms, extra training options, and the paper's row to compare with."""

    label: str
    slug: str
    netG_norm: str
    netD_norm: str
    options: dict[str, Any] = field(default_factory=dict)
    paper: str = ""

    @property
    def paper_row(self) -> str:
        return self.paper or self.slug


CONFIGURATIONS: tuple[Configuration, ...] = (
    Configuration("IN / IN", "in_in", "instance", "instance"),
    Configuration("ILM+IN / IN", "ilmin_in", "ilm_in", "instance"),
    Configuration("ILM+IN / ILM+IN", "ilmin_ilmin", "ilm_in", "ilm_in"),
    # Our ablations: ILM as in the authors' code (PyTorch's init of W1-W3, unbiased standardisation).
    Configuration(
        "ILM+IN / IN, authors' ILM code",
        "ilmin_in_authors",
        "ilm_in",
        "instance",
        {"ilm_init": "pytorch", "ilm_variance": "unbiased"},
        paper="ilmin_in",
    ),
    Configuration(
        "ILM+IN / ILM+IN, authors' ILM code",
        "ilmin_ilmin_authors",
        "ilm_in",
        "ilm_in",
        {"ilm_init": "pytorch", "ilm_variance": "unbiased"},
        paper="ilmin_ilmin",
    ),
)
DEFAULT_CONFIGS = ("in_in", "ilmin_in", "ilmin_ilmin")
# The paper's RMSE is the per-pixel Euclidean colour distance: our ``rmse_rgb`` (docs/metrics.md).
PAPER_TABLE6: dict[str, dict[str, float]] = {
    "in_in": {"rmse_rgb": 108.17, "lpips": 0.441, "ssim": 0.372},
    "ilmin_in": {"rmse_rgb": 105.82, "lpips": 0.435, "ssim": 0.390},
    "ilmin_ilmin": {"rmse_rgb": 105.46, "lpips": 0.428, "ssim": 0.372},
}
SCORED_METRICS = ("rmse", "rmse_rgb", "lpips", "ssim", "psnr", "mae")
SPLITS: dict[str, tuple[str, str | None]] = {"paper": ("train", "200:400"), "test": ("test", None)}
"""Evaluation split -> (folder under the data root, subset): train/201-400, or the 106 test/ images."""
TRAIN_SUBSET = "0:200"

PRESETS: dict[str, dict[str, Any]] = {
    # The paper's setting: 256², unet_256, 70x70 PatchGAN, batch 1, labels → photos, 100 + 100 epochs.
    "paper": {
        "netG": "unet_256",
        "netD": "basic",
        "ngf": 64,
        "ndf": 64,
        "load_size": 286,
        "crop_size": 256,
        "batch_size": 1,
        "n_epochs": 100,
        "n_epochs_decay": 100,
    },
    # A real comparison at small scale that finishes on a 2-core CPU in under 30 minutes (3 configurations,
    # one seed): 128², a U-Net with 7 downsamplings at half width, 10 + 10 epochs (about 0.11 s per step
    # with IN, 0.12-0.13 s with ILM, measured here: 3 × 4,000 steps).
    "quick": {
        "netG": "unet_128",
        "netD": "basic",
        "ngf": 32,
        "ndf": 32,
        "load_size": 142,
        "crop_size": 128,
        "batch_size": 1,
        "n_epochs": 10,
        "n_epochs_decay": 10,
    },
}
COMMON = {
    "direction": "BtoA",
    "ilm_group_size": 1,
    "preprocess": "resize_and_crop",
    "gan_mode": "vanilla",
    "lambda_l1": 100.0,
    "subset": TRAIN_SUBSET,
    "phase": "train",
}


def add_table6_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        __doc__.split("\n\n")[0] + " Writes table6.md, table6.json, table6.png (with matplotlib) and sample "
        "grids to --out."
    )
    parser.add_argument(
        "--dataroot",
        default=None,
        help="facades folder with train/ and test/; default: $PIX2PIX_ILM_FACADES, else datasets/facades "
        "(downloaded when missing)",
    )
    parser.add_argument("--out", default="results/table6", help="output folder (default: results/table6)")
    parser.add_argument(
        "--preset", choices=sorted(PRESETS), default="quick", help="paper or quick (default: quick)"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (default: 0)")
    parser.add_argument(
        "--configs",
        nargs="+",
        default=list(DEFAULT_CONFIGS),
        choices=[c.slug for c in CONFIGURATIONS] + ["all"],
        metavar="CONFIG",
        help=f"rows to run: {', '.join(c.slug for c in CONFIGURATIONS)} or all "
        f"(default: {' '.join(DEFAULT_CONFIGS)})",
    )
    parser.add_argument(
        "--eval-split",
        choices=(*SPLITS, "both"),
        default="paper",
        help="paper: train/201-400 (default); test: the 106 test/ images; both: each trained run on both",
    )
    parser.add_argument(
        "--no-train",
        action="store_true",
        help="only test and score the runs already trained; list the others as missing",
    )
    parser.add_argument(
        "--lpips-backbone", default=None, help="local AlexNet weights for LPIPS (see 'eval --help')"
    )
    parser.add_argument(
        "--test-dropout",
        choices=("on", "off"),
        default="on",
        help="dropout at test time as in the pix2pix code (default: on)",
    )
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: auto)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a training option of the preset, e.g. --set n_epochs=2 --set precision=bf16 (repeatable)",
    )
    parser.add_argument("--eval-limit", type=int, default=None, help="evaluate only the first N images")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars or progress lines")
    parser.add_argument(
        "--progress-interval",
        type=float,
        default=30.0,
        help="when stderr is not a terminal: seconds between the progress lines of training and test",
    )


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["n_epochs=2", "precision=bf16"]`` → typed values of :class:`TrainConfig` fields."""
    hints = get_type_hints(TrainConfig)
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in fields:
            raise UsageError(f"--set expects KEY=VALUE with a training option as KEY, got {pair!r}")
        base, optional = field_type(hints[key])
        if optional and value.lower() in ("", "none", *(("auto",) if base is bool else ())):
            out[key] = None  # for channels_last: auto, train's choice for the device
        elif base is bool:
            if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise UsageError(f"--set {key}: expected true or false, got {value!r}")
            out[key] = value.lower() in ("1", "true", "yes")
        else:
            try:
                out[key] = base(value)
            except ValueError as err:
                raise UsageError(f"--set {key}: {err}") from err
    return out


def _resolve_dataroot(dataroot: str | None) -> Path:
    """A folder given by the user is used as it is; otherwise the facades set is found or fetched."""
    from pix2pix_ilm.data.facades import ensure_facades

    if dataroot and Path(dataroot).is_dir():
        return Path(dataroot)
    return Path(ensure_facades(Path("datasets"), local=dataroot))


def _run_finished(config: TrainConfig) -> bool:
    """Its last epoch's checkpoint exists, or the runner saw its training return (a run resumed from a
    ``latest.pt`` taken at the very end writes no epoch checkpoint again)."""
    timing = config.run_dir / "table6_timing.json"
    finished = timing.is_file() and json.loads(timing.read_text()).get("finished", False)
    return finished or (config.run_dir / f"epoch_{config.total_epochs}.pt").is_file()


def selected_configurations(names: list[str]) -> list[Configuration]:
    """The rows named (``all``: every row), in the table's order."""
    wanted = {c.slug for c in CONFIGURATIONS} if "all" in names else set(names)
    return [c for c in CONFIGURATIONS if c.slug in wanted]


def train_config(args: argparse.Namespace, config: Configuration, seed: int, dataroot: Path) -> TrainConfig:
    """The training options of one run: preset, common protocol options, the row's options, --set."""
    values = {**PRESETS[args.preset], **COMMON, **config.options, **parse_overrides(args.overrides)}
    return TrainConfig(
        dataroot=str(dataroot),
        name=f"{config.slug}_seed{seed}",
        checkpoints_dir=str(Path(args.out) / "checkpoints"),
        netG_norm=config.netG_norm,
        netD_norm=config.netD_norm,
        seed=seed,
        device=args.device,
        no_progress=args.no_progress,
        progress_interval=args.progress_interval,
        no_display=True,
        print_freq=50,
        display_freq=1000,
        **values,
    )


def train_run(config: TrainConfig) -> float:
    """Train (or resume) one run; returns its training seconds, accumulated over interruptions."""
    from pix2pix_ilm.training.loop import train

    timing_path = config.run_dir / "table6_timing.json"
    timing = json.loads(timing_path.read_text()) if timing_path.is_file() else {"train_seconds": 0.0}
    if _run_finished(config):
        print(f"[table6] {config.name}: trained already, skipping training", file=sys.stderr)
        return timing["train_seconds"]
    resume = (config.run_dir / "latest.pt").is_file()
    print(f"[table6] {config.name}: {'resuming' if resume else 'training'}", file=sys.stderr)
    stage = time.time()
    train(
        dataclasses.replace(config, continue_train=resume, overwrite=not resume and config.run_dir.exists())
    )
    timing["train_seconds"] = round(timing["train_seconds"] + time.time() - stage, 1)
    timing["finished"] = True
    atomic_write_text(timing_path, json.dumps(timing) + "\n")
    return timing["train_seconds"]


def score_run(args: argparse.Namespace, config: TrainConfig, split: str, dataroot: Path) -> dict[str, Any]:
    """Test one trained run on ``split`` and score it with ``eval``'s code path (same ``metrics.json``);
    kept when its scores are newer than the checkpoint and hold every metric."""
    from pix2pix_ilm.evaluation.evaluate import score_to_json
    from pix2pix_ilm.training.inference import run_test

    phase, subset = SPLITS[split]
    out = Path(args.out)
    result_dir = out / "results" / config.name / f"{phase}_latest"
    metrics_path = result_dir / "metrics.json"
    checkpoint = config.run_dir / "latest.pt"
    document = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    stale = not document or metrics_path.stat().st_mtime < checkpoint.stat().st_mtime
    if stale or not set(SCORED_METRICS) <= set(document.get("metrics", [])) or "settings" not in document:
        run_test(
            TestConfig(
                name=config.name,
                dataroot=str(dataroot),
                checkpoints_dir=str(out / "checkpoints"),
                phase=phase,
                subset=subset,
                num_test=args.eval_limit,
                results_dir=str(out / "results"),
                train_mode_dropout=args.test_dropout == "on",
                device=args.device,
                seed=config.seed,
                progress_interval=args.progress_interval,
            )
        )
        _, document, _ = score_to_json(
            result_dir, SCORED_METRICS, lpips_backbone=args.lpips_backbone, device=args.device
        )
    stems = "\n".join(document["per_image"]).encode()
    return {
        "n": document["n"],
        "mean": document["mean"],
        "images_digest": hashlib.sha256(stems).hexdigest()[:16],
        "result_dir": str(result_dir),
    }


def run_table6(args: argparse.Namespace) -> dict[str, Any]:
    """Train, test and score the chosen configurations for every seed on the chosen split(s); write
    table6.json, table6.md, table6.png and sample grids to ``--out``."""
    from pix2pix_ilm.evaluation.lpips_alexnet import build_lpips
    from pix2pix_ilm.evaluation.table6_report import summarize, write_outputs
    from pix2pix_ilm.training.run_dir import check_train_config

    dataroot = _resolve_dataroot(args.dataroot)
    build_lpips(args.lpips_backbone, "cpu")  # fail now, not after hours of training, if LPIPS cannot load
    splits = list(SPLITS) if args.eval_split == "both" else [args.eval_split]
    started = time.time()
    runs: list[dict[str, Any]] = []
    missing: list[str] = []
    for configuration in selected_configurations(args.configs):
        for seed in args.seeds:
            config = train_config(args, configuration, seed, dataroot)
            check_train_config(config)
            if args.no_train and not _run_finished(config):
                missing.append(config.name)
                continue
            run = {
                "config": configuration.slug,
                "label": configuration.label,
                "seed": seed,
                "name": config.name,
            }
            run["train_seconds"] = train_run(config)
            run["splits"] = {split: score_run(args, config, split, dataroot) for split in splits}
            runs.append(run)
    if not runs:
        raise UsageError(f"no trained run to score in {args.out} (missing: {', '.join(missing)})")
    summary = summarize(runs, missing, args, dataroot, time.time() - started)
    write_outputs(summary, Path(args.out))
    return summary


__all__ = [
    "CONFIGURATIONS",
    "PAPER_TABLE6",
    "PRESETS",
    "Configuration",
    "add_table6_arguments",
    "parse_overrides",
    "run_table6",
]
