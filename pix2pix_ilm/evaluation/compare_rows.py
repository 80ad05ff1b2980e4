"""``compare``'s flags as a study: ``--row NAME:KEY=VALUE,...`` rows, ``--eval-phase`` splits, ``--metrics``,
each checked against the data before any work (docs/table6.md)."""

from __future__ import annotations

import re
from pathlib import Path

from pix2pix_ilm.config import parse_subset
from pix2pix_ilm.errors import UsageError
from pix2pix_ilm.evaluation.options import CompareConfig
from pix2pix_ilm.evaluation.study import PRESETS, Row, Study, count_images, parse_overrides

ROW_EXAMPLE = "e.g. --row gn:netG_norm=group,num_groups=8"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")


def parse_row(text: str) -> Row:
    """``"gn:netG_norm=group,num_groups=8"`` → the row ``gn`` with its typed training options."""
    name, sep, rest = text.partition(":")
    if not sep:
        raise UsageError(f"--row expects NAME:KEY=VALUE,... ({ROW_EXAMPLE}), got {text!r}")
    if not _NAME.fullmatch(name):
        raise UsageError(f"--row {text!r}: the name must be letters, digits and _ . + - ({ROW_EXAMPLE})")
    options = parse_overrides(tuple(pair for pair in rest.split(",") if pair.strip()), flag=f"--row {name}")
    return Row(name, name, options, {"options": options})


def parse_split(text: str) -> tuple[str, str | None]:
    """``"test"`` → ("test", None); ``"train:200:400"`` → ("train", "200:400")."""
    phase, _, subset = text.partition(":")
    if not phase or any(c in phase for c in "/\\") or phase in (".", ".."):
        raise UsageError(f"--eval-phase expects a folder name of --dataroot or PHASE:START:END, got {text!r}")
    try:
        parse_subset(subset)
    except UsageError:
        raise UsageError(f"--eval-phase {text!r}: a slice is PHASE:START:END, e.g. train:200:400") from None
    return phase, subset or None


def _images(dataroot: Path, flag: str, phase: str, subset: str | None, paired: bool) -> int:
    """The images ``flag`` names; one line saying what is missing when there are none."""
    try:
        count = count_images(dataroot, phase, subset, paired)
    except UsageError as err:
        raise UsageError(f"{flag}: {err}") from None
    if not count:
        where = f"{dataroot / phase}{'_A/' if paired else '/'}"
        raise UsageError(f"{flag}: no images in {where}" + (f" in the slice {subset}" if subset else ""))
    return count


def compare_study(config: CompareConfig) -> Study:
    """The rows, baseline, splits and metrics of ``compare``'s flags, checked against ``--dataroot``."""
    from pix2pix_ilm.evaluation.metrics import parse_metric_names

    rows = [parse_row(text) for text in config.rows]
    names = [row.slug for row in rows]
    if not rows:
        raise UsageError(f"give the rows to compare with --row NAME:KEY=VALUE,... ({ROW_EXAMPLE})")
    if twice := sorted({name for name in names if names.count(name) > 1}):
        raise UsageError(f"--row {', '.join(twice)}: two rows of the same name")
    baseline = config.baseline or names[0]
    if baseline not in names:
        raise UsageError(f"--baseline {baseline} is not a row; the rows: {', '.join(names)}")
    splits = {text: parse_split(text) for text in dict.fromkeys(config.eval_phases)}
    base = PRESETS.get(config.preset, {})
    shared = {**base, **parse_overrides(config.overrides)}
    dataroot = Path(config.dataroot or "")
    if not dataroot.is_dir():
        raise UsageError(f"--dataroot {dataroot} is not a folder")
    for row in rows:  # the training images of every row, and where each row's runs are scored
        options = {**shared, **row.options}
        paired = options.get("dataset_mode") == "paired"
        _images(dataroot, f"--row {row.slug}", options.get("phase", "train"), options.get("subset"), paired)
        for text, (phase, subset) in splits.items():
            _images(dataroot, f"--eval-phase {text}", phase, subset, paired)
    metrics = tuple(parse_metric_names(config.metrics))
    return Study(
        name="compare",
        title=f"Comparison on `{dataroot}`",
        notes=(
            "Mean ± std over seeds (std with n − 1); every row paired with the baseline per seed.",
            "Rows (training options beyond every run's): "
            + "; ".join(f"`{row.slug}`: {_options_text(row.options)}" for row in rows)
            + ". Splits: "
            + "; ".join(
                f"`{text}`: {_folders(phase, shared)}" + (f" [{s}]" if s else "")
                for text, (phase, s) in splits.items()
            )
            + ".",
        ),
        rows=tuple(rows),
        baseline=baseline,
        splits=splits,
        metrics=metrics,
        columns=metrics,
        curve_metrics=metrics,
        base=base,
        describe={
            "baseline": baseline,
            "rows": {row.slug: row.options for row in rows},
            "metrics": list(metrics),
        },
    )


def _options_text(options: dict) -> str:
    return ", ".join(f"{key}={value}" for key, value in options.items()) or "none"


def _folders(phase: str, options: dict) -> str:
    """Where a phase's images are: ``test/``, or ``test_A/ and test_B/`` with ``dataset_mode=paired``."""
    return f"{phase}_A/ and {phase}_B/" if options.get("dataset_mode") == "paired" else f"{phase}/"
