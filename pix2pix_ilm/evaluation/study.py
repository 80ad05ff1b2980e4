"""What a comparison of training settings is: its rows, baseline, evaluation splits, metrics and the options every
run shares; ``--set`` / ``--row`` options typed as ``train``'s (docs/table6.md). No torch."""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pix2pix_ilm.config import TrainConfig, parse_subset
from pix2pix_ilm.errors import UsageError
from pix2pix_ilm.flags import parse_field_value

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
# Set by the command for every run (--dataroot, --out, --seeds, --device, ...), never by --set or --row.
COMMAND_OPTIONS = frozenset(
    {"name", "checkpoints_dir", "dataroot", "seed", "device", "continue_train", "overwrite", "no_progress"}
    | {"progress_interval"}
)


@dataclass(frozen=True)
class Row:
    """One row: its runs ``<slug>_seed<seed>`` train with the study's options and ``options`` on top."""

    slug: str
    label: str
    options: dict[str, Any]
    record: dict[str, Any] = field(
        default_factory=dict
    )  # written into each run's record (the paper's values)


@dataclass(frozen=True)
class Study:
    """Rows compared over seeds, each paired with ``baseline`` on the same images of every split."""

    name: str  # the output files <name>.md / .json / .png, the plan's first word
    title: str  # the Markdown's heading, before the preset and seeds
    notes: tuple[str, ...]  # the lines under it
    rows: tuple[Row, ...]
    baseline: str
    splits: dict[str, tuple[str, str | None]]  # split -> (phase folder, subset START:END or None)
    metrics: tuple[str, ...]  # scored and recorded for every run
    columns: tuple[str, ...]  # shown in the tables and the figure
    curve_metrics: tuple[str, ...]  # shown along training (--score-epochs)
    base: dict[str, Any]  # every run's training options, before --set
    row_title: str = "row"
    reference: str | None = None  # the record key of reference values per metric, shown beside ours
    reference_metrics: tuple[str, ...] = ()  # the metrics it has values of
    describe: dict[str, Any] = field(default_factory=dict)  # more keys of the summary

    @property
    def baseline_label(self) -> str:
        return next((row.label for row in self.rows if row.slug == self.baseline), self.baseline)


def option_key(pair: str) -> str:
    """The option a ``KEY=VALUE`` pair sets: ``" netG-norm = x"`` → ``"netG_norm"``."""
    return pair.partition("=")[0].strip().replace("-", "_")


def parse_overrides(pairs: tuple[str, ...], flag: str = "--set") -> dict[str, Any]:
    """``("n_epochs=2", "precision=bf16")`` → typed values of :class:`TrainConfig` fields; a key once."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    keys = [option_key(pair) for pair in pairs]
    if twice := sorted({key for key in keys if keys.count(key) > 1}):
        raise UsageError(f"{flag}: {', '.join(twice)} given twice")
    out: dict[str, Any] = {}
    for pair, key in zip(pairs, keys, strict=True):
        if "=" not in pair or key not in names:
            close = [] if key in names else difflib.get_close_matches(key, names - COMMAND_OPTIONS, 1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise UsageError(f"{flag} expects KEY=VALUE with a training option as KEY, got {pair!r}{hint}")
        if key in COMMAND_OPTIONS:
            raise UsageError(f"{flag} {pair!r}: {key} is the command's own option, the same for every run")
        try:
            out[key] = parse_field_value(TrainConfig, key, pair.partition("=")[2].strip())
        except UsageError as err:
            raise UsageError(f"{flag} {err}") from err
    return out


def count_images(
    dataroot: Path, phase: str, subset: str | None, paired: bool, limit: int | None = None
) -> int:
    """How many items of ``<phase>/`` (or ``<phase>_A/`` and ``_B/``) the slice ``subset`` holds."""
    return len(_positions(_count(dataroot, phase, paired), subset, limit))


def _count(dataroot: Path, phase: str, paired: bool) -> int:
    from pix2pix_ilm.data.paired import phase_items

    return len(phase_items(dataroot, phase, paired)[1])


def _positions(count: int, subset: str | None, limit: int | None) -> list[int]:
    """The positions among ``count`` naturally sorted items that ``subset`` and ``limit`` select."""
    from pix2pix_ilm.data.images import select_files

    return select_files(list(range(count)), parse_subset(subset), limit)


def not_held_out(study: Study, runs: list[TrainConfig], limit: int | None) -> list[str]:
    """A warning per split whose images some run trains on, with the ``--set subset`` that holds them out."""
    warnings = []
    for split, (phase, subset) in study.splits.items():
        trained = [run for run in runs if run.phase == phase]
        if not trained:
            continue
        count = _count(Path(trained[0].dataroot), phase, trained[0].dataset_mode == "paired")
        scored = _positions(count, subset, limit)
        slices = {(run.subset, run.max_dataset_size) for run in trained}
        if not (overlap := max(len(set(_positions(count, *s)).intersection(scored)) for s in slices)):
            continue
        start, end = scored[0], scored[-1] + 1
        advice = "score on a slice that --set subset=START:END leaves out, or on another folder"
        if start or end < count:
            advice = f"hold it out with --set subset={f'0:{start}' if start else f'{end}:'}"
        warnings.append(
            f"warning: {overlap} of the {len(scored)} images of split {split} are training images, so the "
            f"split is not held out: {advice}"
        )
    return warnings
