"""Scoring test outputs against their ground truth, and the ``eval`` command (writes ``metrics.json``)."""

from __future__ import annotations

import itertools
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pix2pix_ilm.data.images import is_grey, load_rgb, natural_key
from pix2pix_ilm.device import resolve_device
from pix2pix_ilm.errors import UsageError, first_line
from pix2pix_ilm.evaluation.lpips_alexnet import ALEXNET_OWT_URL, resolve_lpips_backbone
from pix2pix_ilm.evaluation.metrics import SSIM_SETTINGS, EvalOptions, get_metric, parse_metric_names
from pix2pix_ilm.evaluation.options import EvalConfig
from pix2pix_ilm.files import atomic_write_text, check_folder, check_output_files
from pix2pix_ilm.locks import results_folder
from pix2pix_ilm.viz.pages import TEST_INFO, write_test_page
from pix2pix_ilm.viz.plots import render_score_strips, save_png


def find_image_pairs(results_dir: str | Path) -> list[tuple[str, Path, Path]]:
    """``(stem, fake_path, real_path)`` for every ``images/<stem>_fake_B.png``: those a ``test`` folder's
    ``test.json`` lists (refusing a folder whose images disagree with it), else all, in natural order."""
    images_dir = Path(results_dir) / "images"
    if not Path(results_dir).is_dir():
        raise UsageError(f"results folder not found: {results_dir}")
    if not images_dir.is_dir():
        raise UsageError(
            f"no images/ folder in {results_dir} (expected {images_dir}; run 'pix2pix-ilm test')"
        )
    suffix = "_fake_B.png"
    found = [p.name[: -len(suffix)] for p in images_dir.iterdir() if p.name.endswith(suffix) and p.is_file()]
    if not found:
        raise UsageError(f"no *{suffix} images in {images_dir}")
    stems = sorted(found, key=natural_key)
    info = Path(results_dir) / TEST_INFO
    if info.is_file():
        listed = _listed_images(info)
        extra, missing = sorted(set(found) - set(listed)), sorted(set(listed) - set(found))
        if extra or missing:
            raise UsageError(
                f"the images in {images_dir} disagree with {info}: {len(extra)} not listed there "
                f"{extra[:3]}, {len(missing)} listed but missing {missing[:3]}; run 'pix2pix-ilm test' again"
            )
        stems = listed
    pairs = []
    for stem in stems:
        fake, real = images_dir / f"{stem}{suffix}", images_dir / f"{stem}_real_B.png"
        if not real.is_file():
            raise UsageError(f"{fake} has no ground truth: {real} is missing")
        pairs.append((stem, fake, real))
    return pairs


def _listed_images(info: Path) -> list[str]:
    """The stems a ``test`` folder's ``test.json`` lists, or a :class:`UsageError` naming it."""
    try:
        listed = _test_info(info)["images"]
    except (OSError, ValueError, KeyError, TypeError) as err:  # unreadable, not JSON, another document
        raise UsageError(
            f"{info} is unreadable or damaged ({first_line(err)}); run 'pix2pix-ilm test' again"
        ) from err
    if not isinstance(listed, list) or not all(isinstance(stem, str) for stem in listed):
        raise UsageError(f"{info} is damaged: 'images' is not a list of names; run 'pix2pix-ilm test' again")
    return listed


def _test_info(info: Path) -> dict[str, Any]:
    return json.loads(info.read_text(encoding="utf-8"))


GREY_NOTE = "every metric on the single channel (rmse_rgb then equals rmse), lpips on it replicated to RGB"


def image_channels(pairs: Sequence[tuple[str, Path, Path]]) -> int:
    """1 when every fake and real image is grey (a run with ``--output-nc 1``), else 3 (grey ones as RGB)."""
    return 1 if all(is_grey(path) for _, fake, real in pairs for path in (fake, real)) else 3


def _load_pair(fake_path: Path, real_path: Path, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """Both images as uint8 ``(H, W, channels)``."""
    fake, real = (np.asarray(load_rgb(path, channels)) for path in (fake_path, real_path))
    if channels == 1:
        fake, real = fake[..., None], real[..., None]
    if fake.shape != real.shape:
        raise UsageError(
            f"{fake_path} is {fake.shape[1]}x{fake.shape[0]} but {real_path} is {real.shape[1]}x{real.shape[0]}"
        )
    return fake, real


def evaluate_results_dir(
    results_dir: str | Path,
    metric_names: str | Sequence[str],
    lpips_backbone: str | Path | None = None,
    device: str = "cpu",
    batch_size: int = 16,
) -> dict[str, Any]:
    """Score each pair of :func:`find_image_pairs`, ``batch_size`` pairs read at a time.

    Returns ``{"n", "channels", "metrics", "mean", "std", "per_image"}`` (``channels``: see
    :func:`image_channels`; ``std`` over the images with ddof 0; ``per_image``: ``{stem: {metric: score}}``).
    """
    metric_list = parse_metric_names(metric_names)
    if int(batch_size) < 1:
        raise UsageError(f"--batch-size must be at least 1, got {batch_size}")
    pairs = find_image_pairs(results_dir)
    channels = image_channels(pairs)
    options = EvalOptions(lpips_backbone=lpips_backbone, device=device)
    scorers = {name: get_metric(name).make_scorer(options) for name in metric_list}
    columns: dict[str, list[float]] = {name: [] for name in metric_list}
    for i in range(0, len(pairs), int(batch_size)):
        loaded = [_load_pair(fake, real, channels) for _, fake, real in pairs[i : i + int(batch_size)]]
        # Equal-sized neighbours are stacked so that each scorer sees whole batches.
        for _, run in itertools.groupby(loaded, key=lambda pair: pair[0].shape):
            fake, real = (np.stack(images) for images in zip(*run, strict=True))
            for name, scorer in scorers.items():
                columns[name].extend(float(v) for v in scorer(fake, real))
    scores = {name: np.asarray(values, dtype=np.float64) for name, values in columns.items()}
    with np.errstate(invalid="ignore"):
        mean = {name: float(np.mean(values)) for name, values in scores.items()}
        std = {name: float(np.std(values)) for name, values in scores.items()}
    per_image = {
        stem: {name: columns[name][i] for name in metric_list} for i, (stem, _, _) in enumerate(pairs)
    }
    return {
        "n": len(pairs),
        "channels": channels,
        "metrics": metric_list,
        "mean": mean,
        "std": std,
        "per_image": per_image,
    }


def format_table(result: dict[str, Any]) -> str:
    """A plain-text table: metric, mean ± std, n, and which direction is better."""
    rows = [("metric", "mean ± std", "n", "better")]
    for name in result["metrics"]:
        mean, std = result["mean"][name], result["std"][name]
        rows.append((name, f"{mean:.4f} ± {std:.4f}", str(result["n"]), get_metric(name).direction))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [
        f"{row[0]:<{widths[0]}}  {row[1]:>{widths[1]}}  {row[2]:>{widths[2]}}  {row[3]:<{widths[3]}}".rstrip()
        for row in rows
    ]
    return "\n".join(lines)


def score_to_json(
    results_dir: str | Path,
    metrics: str | Sequence[str] = "rmse,rmse_rgb,ssim,lpips",
    lpips_backbone: str | Path | None = None,
    json_path: str | Path | None = None,
    device: str = "auto",
    batch_size: int = 16,
    overwrite: bool = False,
) -> tuple[dict[str, Any], dict[str, Any], Path]:
    """Score a test output folder, write its ``metrics.json`` (``null`` for non-finite scores), the score plot
    beside it and, in a ``test`` folder, its ``index.html``: the one code path of ``eval`` and ``table6``.
    The folder's own ``metrics.json`` and plot are replaced; another ``json_path`` only with ``overwrite``.
    Returns (result, the JSON document, its path). No ``test`` replaces the folder meanwhile (its lock)."""
    with results_folder(results_dir):
        return _score_to_json(results_dir, metrics, lpips_backbone, json_path, device, batch_size, overwrite)


def _score_to_json(
    results_dir: str | Path,
    metrics: str | Sequence[str],
    lpips_backbone: str | Path | None,
    json_path: str | Path | None,
    device: str,
    batch_size: int,
    overwrite: bool,
) -> tuple[dict[str, Any], dict[str, Any], Path]:
    metric_list = parse_metric_names(metrics)
    target = Path(json_path) if json_path else Path(results_dir) / "metrics.json"
    pairs = find_image_pairs(results_dir)
    inputs = [Path(results_dir) / TEST_INFO, *(path for _, fake, real in pairs for path in (fake, real))]
    own = overwrite or not json_path  # the folder's own scores are replaced by each eval
    check_output_files([target, target.with_suffix(".png")], "--json", inputs, overwrite=own)
    if target.suffix == ".png":
        raise UsageError(f"--json {target}: its plot would take the same name; give a .json name")
    info = Path(results_dir) / TEST_INFO
    is_test = info.is_file()  # a test's folder: its page gets the scores, and they name the test
    test_id = _test_info(info).get("test_id") if is_test else None
    if is_test:
        check_folder(results_dir, "--results-dir")
    device_name = str(resolve_device(device)) if "lpips" in metric_list else "cpu"
    result = evaluate_results_dir(results_dir, metric_list, lpips_backbone, device_name, batch_size)
    grey = result["channels"] == 1
    settings: dict[str, Any] = {
        "std": "population (ddof=0) over images",
        "pixel_range": [0, 255],
        "channels": result["channels"],
    } | ({"grey": GREY_NOTE} if grey else {})
    if "ssim" in metric_list:
        settings["ssim"] = {k: v for k, v in SSIM_SETTINGS.items() if k != "channel_axis"} | {
            "color": "grey" if grey else "rgb"
        }
    if "lpips" in metric_list:
        backbone = resolve_lpips_backbone(lpips_backbone)
        settings["lpips"] = {
            "net": "alex",
            "version": "0.1",
            "input_range": [-1, 1],
            "backbone": str(backbone) if backbone is not None else ALEXNET_OWT_URL,
            "device": device_name,
        } | ({"input": "the grey image replicated to RGB"} if grey else {})

    def finite(scores: dict[str, float]) -> dict[str, float | None]:
        return {k: v if math.isfinite(v) else None for k, v in scores.items()}

    document = {
        "results_dir": str(results_dir),
        **({"test_id": test_id} if is_test else {}),
        **{key: value for key, value in result.items() if key != "channels"},  # said in settings
        "mean": finite(result["mean"]),
        "std": finite(result["std"]),
        "per_image": {stem: finite(scores) for stem, scores in result["per_image"].items()},
        "higher_is_better": {name: get_metric(name).higher_is_better for name in metric_list},
        "settings": settings,
    }
    save_png(  # the plot first: a metrics.json means its plot was written too
        render_score_strips(document["per_image"], metric_list, document["higher_is_better"]),
        target.with_suffix(".png"),
    )
    atomic_write_text(target, json.dumps(document, indent=2, allow_nan=False) + "\n")
    if is_test:
        write_test_page(Path(results_dir), target)
    return result, document, target


def run_eval(config: EvalConfig) -> dict[str, Any]:
    """The ``pix2pix-ilm eval`` command: :func:`score_to_json`, then a table; returns the result."""
    started = time.perf_counter()
    result, _, target = score_to_json(
        config.results_dir,
        config.metrics,
        config.lpips_backbone,
        config.json,
        config.device,
        config.batch_size,
        config.overwrite,
    )
    print(format_table(result))
    listed = " (those test.json lists)" if (Path(config.results_dir) / TEST_INFO).is_file() else ""
    print(
        f"scored {result['n']} image pairs{listed} in {time.perf_counter() - started:.1f}s; "
        f"wrote {target} and {target.with_suffix('.png')}"
    )
    return result
