"""The paper's Table 6 protocol, a preset of ``compare``: its rows on CMP Facades, its splits and the paper's
values beside ours (docs/table6.md)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pix2pix_ilm.errors import UsageError
from pix2pix_ilm.evaluation.compare import check_options, run_study
from pix2pix_ilm.evaluation.options import Table6Config
from pix2pix_ilm.evaluation.study import PRESETS, Row, Study, parse_overrides

__all__ = ["CONFIGURATIONS", "PAPER_TABLE6", "PRESETS", "COMMON", "parse_overrides", "run_table6"]


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
        return {"netG_norm": self.netG_norm, "netD_norm": self.netD_norm} | (
            authors if self.authors_ilm else {}
        )

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


def table6_study(config: Table6Config) -> Study:
    """The chosen rows, paired with IN / IN, on the chosen splits, the paper's values beside them."""
    rows = [row for row in CONFIGURATIONS if row.slug in config.configs or "all" in config.configs]
    return Study(
        name="table6",
        title="Table 6 — pix2pix on CMP Facades",
        notes=(
            "Mean ± std over seeds (std with n − 1). The paper's RMSE is the per-pixel Euclidean colour distance,",
            "our RMSE_rgb (= √3 × RMSE; docs/metrics.md). Split `paper`: train/201–400; `test`: the test/ images.",
        ),
        rows=tuple(
            Row(row.slug, row.label, row.options, {"paper": PAPER_TABLE6.get(row.paper_row)}) for row in rows
        ),
        baseline="in_in",
        splits={s: SPLITS[s] for s in SPLITS if config.eval_split in (s, "both")},
        metrics=SCORED_METRICS,
        columns=("rmse", "rmse_rgb", "lpips", "ssim"),
        curve_metrics=("lpips", "rmse_rgb"),
        base={**PRESETS[config.preset], **COMMON},
        row_title="G / D",
        reference="paper",
        reference_metrics=("rmse_rgb", "lpips", "ssim"),
    )


def run_table6(config: Table6Config) -> dict[str, Any] | None:
    """Train, test and score the chosen rows for every seed; write the table to ``--out`` (or print the plan)."""
    check_options(config)
    if norm := next(
        (key for key in ("netG_norm", "netD_norm") if key in parse_overrides(config.overrides)), None
    ):
        raise UsageError(
            f"--set {norm}: table6's rows set the norms (--configs); compare takes rows of your own"
        )
    dataroot = _resolve_dataroot(config.dataroot, config.dry_run)
    return run_study(table6_study(config), config, dataroot)
