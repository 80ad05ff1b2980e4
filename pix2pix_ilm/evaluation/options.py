"""Options of the eval, table6 and compare commands (see :mod:`pix2pix_ilm.config` for how options become flags);
no torch."""

from __future__ import annotations

from dataclasses import dataclass

from pix2pix_ilm.config import PROGRESS_HELP
from pix2pix_ilm.flags import opt

TABLE6_PRESETS = ("quick", "paper")
TABLE6_ROWS = ("in_in", "ilmin_in", "ilmin_ilmin", "ilmin_in_authors", "ilmin_ilmin_authors", "in_ilmin")


@dataclass
class StudyOptions:
    """What ``table6`` and ``compare`` share: seeds, where the runs go, how they train and are scored."""

    dataroot: str | None = opt(None, "data folder")
    out: str = opt("results", "output folder")
    preset: str = opt("quick", "training setting", choices=TABLE6_PRESETS)
    seeds: tuple[int, ...] = opt((0,), "training seeds", metavar="SEED")
    no_train: bool = opt(
        False,
        "only test and score the runs already trained; runs whose folders are gone are taken from the "
        "command's JSON in --out (table6.json, compare.json) when trained with the same options; list the "
        "others as missing",
    )
    retrain: bool = opt(False, "train again the runs in --out that were trained with other options")
    jobs: int = opt(1, "training runs at a time, child processes sharing the CPU threads or the GPU")
    dry_run: bool = opt(False, "print the plan (runs, options, commands) and write nothing")
    lpips_backbone: str | None = opt(None, "local AlexNet weights for LPIPS (see 'eval --help')")
    test_dropout: str = opt("on", "dropout at test time, as in the pix2pix code", choices=("on", "off"))
    device: str = opt("auto", "cpu, cuda, cuda:N or auto")
    overrides: tuple[str, ...] = opt(
        (),
        "training option of every run, e.g. n_epochs=2 (repeatable)",
        flag="--set",
        metavar="KEY=VALUE",
        append=True,
    )
    eval_limit: int | None = opt(None, "evaluate only the first N images")
    score_epochs: tuple[int, ...] = opt(
        (),
        "also score each run's checkpoints of these epochs (kept while training) and report every metric along "
        "training: mean +- std per epoch, paired differences to the baseline row with intervals, "
        "<name>_epochs.png",
        metavar="EPOCH",
    )
    budget_min: float = opt(
        0.0,
        "finish within M minutes: after the first runs' first minute (a tenth of M, between 10 s and 1 min) the "
        "whole table is projected from their speed and a measured scoring time; it is kept, fitted with fewer "
        "epochs (the same for every run, said in the table's header), or refused with the projection; 0: no "
        "budget",
        metavar="M",
    )
    no_progress: bool = opt(False, "no progress bars or progress lines")
    progress_interval: float = opt(30.0, PROGRESS_HELP)


@dataclass
class Table6Config(StudyOptions):
    """Options of ``pix2pix-ilm table6``; the protocol and its presets: docs/table6.md."""

    dataroot: str | None = opt(
        None, "facades folder (train/, test/); default: $PIX2PIX_ILM_FACADES, else datasets/facades, fetched"
    )
    out: str = opt("results/table6", "output folder")
    preset: str = opt("quick", "training setting: quick (small, for a CPU) or paper", choices=TABLE6_PRESETS)
    configs: tuple[str, ...] = opt(
        TABLE6_ROWS[:3],
        "rows: " + ", ".join(TABLE6_ROWS) + " or all",
        choices=(*TABLE6_ROWS, "all"),
        metavar="ROW",
    )
    eval_split: str = opt(
        "paper",
        "paper: train/201-400; test: test/; both: each run on both",
        choices=("paper", "test", "both"),
    )


@dataclass
class CompareConfig(StudyOptions):
    """Options of ``pix2pix-ilm compare``: rows of training options over seeds, on any paired data."""

    dataroot: str | None = opt(
        None,
        "data folder in any layout train reads (<phase>/ of A|B images, or --set dataset_mode=paired)",
        required=True,
    )
    out: str = opt("results/compare", "output folder")
    preset: str = opt(
        "none",
        "every run's options before --set: none (train's defaults), quick (128², unet_128, ngf = ndf = 32, "
        "10 + 10 epochs) or paper (256², unet_256, 64 / 64, 100 + 100)",
        choices=("none", *TABLE6_PRESETS),
    )
    rows: tuple[str, ...] = opt(
        (),
        "a row: its name, then the training options that differ from every run's, e.g. "
        "in:netG_norm=instance or ilm_gn16:netG_norm=ilm_gn,ilm_group_size=16 (repeatable; NAME: alone is the "
        "shared options)",
        flag="--row",
        metavar="NAME:KEY=VALUE,...",
        append=True,
        required=True,
    )
    baseline: str | None = opt(None, "the row every other row is paired with (default: the first --row)")
    eval_phases: tuple[str, ...] = opt(
        ("test",),
        "where every run is scored: a folder of --dataroot (test, val, ...), or a slice of one as "
        "PHASE:START:END, e.g. train:200:400 for images 201-400 of train/ (held out with --set subset=0:200)",
        flag="--eval-phase",
        metavar="PHASE",
    )
    metrics: str = opt("rmse,rmse_rgb,lpips,ssim", "comma-separated metrics (see 'eval --help')")


@dataclass
class EvalConfig:
    """Options of ``pix2pix-ilm eval``."""

    results_dir: str = opt("", "a test output folder, e.g. results/RUN/test_latest", required=True)
    metrics: str = opt("rmse,rmse_rgb,ssim,lpips", "comma-separated metric names")
    lpips_backbone: str | None = opt(
        None,
        "local ImageNet AlexNet weights for LPIPS (torchvision's alexnet-owt-*.pth or a features-only file); "
        "default: $PIX2PIX_ILM_LPIPS_BACKBONE, else lpips' own download",
    )
    json: str | None = opt(
        None,
        "where to write the scores, and their plot with the suffix .png (default: <results-dir>/metrics.json, "
        "replaced by each eval)",
    )
    device: str = opt("auto", "device for LPIPS: cpu, cuda, cuda:N or auto")
    batch_size: int = opt(16, "images per LPIPS batch")
    overwrite: bool = opt(False, "replace the --json file and its plot if they exist")
