"""Scoring test outputs against their ground truth, and the ``eval`` command (writes ``metrics.json``)."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pix2pix_ilm.config import EvalConfig
from pix2pix_ilm.data.images import load_rgb, natural_key
from pix2pix_ilm.device import resolve_device
from pix2pix_ilm.errors import UsageError
from pix2pix_ilm.evaluation.lpips_alexnet import ALEXNET_OWT_URL, resolve_lpips_backbone
from pix2pix_ilm.evaluation.metrics import SSIM_SETTINGS, EvalOptions, get_metric, parse_metric_names
from pix2pix_ilm.files import atomic_write_text
from pix2pix_ilm.viz.pages import TEST_INFO, write_test_page
from pix2pix_ilm.viz.plots import render_score_strips, save_png


def _as_rgb_uint8(image: np.ndarray, name: str) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise UsageError(
            f"image {name} must be 8-bit RGB of shape (H, W, 3), got {image.dtype} {image.shape}"
        )
    return image


def _summarise(names: list[str], metric_names: list[str], columns: dict[str, list[float]]) -> dict[str, Any]:
    scores = {name: np.asarray(columns[name], dtype=np.float64) for name in metric_names}
    with np.errstate(invalid="ignore"):
        mean = {name: float(np.mean(values)) for name, values in scores.items()}
        std = {name: float(np.std(values, ddof=0)) for name, values in scores.items()}
    per_image = {
        stem: {name: float(scores[name][i]) for name in metric_names} for i, stem in enumerate(names)
    }
    return {"n": len(names), "metrics": list(metric_names), "mean": mean, "std": std, "per_image": per_image}


def _evaluate_batches(
    batches: Any, metric_names: list[str], options: EvalOptions
) -> tuple[list[str], dict[str, list[float]]]:
    scorers = {name: get_metric(name).make_scorer(options) for name in metric_names}
    names: list[str] = []
    columns: dict[str, list[float]] = {name: [] for name in metric_names}
    for batch_names, fakes, reals in batches:
        # Stack runs of equal-sized pairs so that each scorer sees whole batches.
        start = 0
        while start < len(fakes):
            stop = start + 1
            while stop < len(fakes) and fakes[stop].shape == fakes[start].shape:
                stop += 1
            fake = np.stack(fakes[start:stop])
            real = np.stack(reals[start:stop])
            for name, scorer in scorers.items():
                columns[name].extend(float(v) for v in scorer(fake, real))
            start = stop
        names.extend(batch_names)
    return names, columns


def _check_batch_size(batch_size: int) -> int:
    if int(batch_size) < 1:
        raise UsageError(f"--batch-size must be at least 1, got {batch_size}")
    return int(batch_size)


def evaluate_images(
    fakes: Sequence[np.ndarray] | np.ndarray,
    reals: Sequence[np.ndarray] | np.ndarray,
    metric_names: str | Sequence[str],
    lpips_backbone: str | Path | None = None,
    device: str = "cpu",
    batch_size: int = 16,
    names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Score in-memory images: ``fakes[i]`` against ``reals[i]``, each 8-bit RGB ``(H, W, 3)``.

    Returns the same structure as :func:`evaluate_results_dir`; ``names`` label the pairs (default
    ``"0"``, ``"1"``, ...).
    """
    metric_list = parse_metric_names(metric_names)
    batch_size = _check_batch_size(batch_size)
    if len(fakes) != len(reals):
        raise UsageError(f"{len(fakes)} generated images but {len(reals)} ground-truth images")
    if len(fakes) == 0:
        raise UsageError("no images to evaluate")
    labels = [str(i) for i in range(len(fakes))] if names is None else [str(n) for n in names]
    if len(labels) != len(fakes):
        raise UsageError(f"{len(labels)} names for {len(fakes)} image pairs")
    pairs = []
    for label, fake, real in zip(labels, fakes, reals, strict=False):
        fake = _as_rgb_uint8(fake, f"{label} (generated)")
        real = _as_rgb_uint8(real, f"{label} (ground truth)")
        if fake.shape != real.shape:
            raise UsageError(
                f"image pair {label}: generated {fake.shape[:2]} vs ground truth {real.shape[:2]}"
            )
        pairs.append((label, fake, real))
    batches = (
        (
            [p[0] for p in pairs[i : i + batch_size]],
            [p[1] for p in pairs[i : i + batch_size]],
            [p[2] for p in pairs[i : i + batch_size]],
        )
        for i in range(0, len(pairs), batch_size)
    )
    options = EvalOptions(lpips_backbone=lpips_backbone, device=device)
    done_names, columns = _evaluate_batches(batches, metric_list, options)
    return _summarise(done_names, metric_list, columns)


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
        listed = json.loads(info.read_text())["images"]
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


def evaluate_results_dir(
    results_dir: str | Path,
    metric_names: str | Sequence[str],
    lpips_backbone: str | Path | None = None,
    device: str = "cpu",
    batch_size: int = 16,
) -> dict[str, Any]:
    """Score every ``images/<stem>_fake_B.png`` of a test output folder against ``<stem>_real_B.png``.

    Returns ``{"n", "metrics", "mean", "std", "per_image"}`` (``std``: population standard deviation over
    the images; ``per_image``: ``{stem: {metric: score}}`` in natural order of stem). Images are read and
    scored ``batch_size`` pairs at a time, so memory does not grow with the number of images.
    """
    metric_list = parse_metric_names(metric_names)
    batch_size = _check_batch_size(batch_size)
    pairs = find_image_pairs(results_dir)

    def batches() -> Any:
        for i in range(0, len(pairs), batch_size):
            chunk = pairs[i : i + batch_size]
            fakes, reals = [], []
            for _, fake_path, real_path in chunk:
                fake, real = np.asarray(load_rgb(fake_path)), np.asarray(load_rgb(real_path))
                if fake.shape != real.shape:
                    raise UsageError(
                        f"{fake_path} is {fake.shape[1]}x{fake.shape[0]} but {real_path} is "
                        f"{real.shape[1]}x{real.shape[0]}"
                    )
                fakes.append(fake)
                reals.append(real)
            yield [stem for stem, _, _ in chunk], fakes, reals

    options = EvalOptions(lpips_backbone=lpips_backbone, device=device)
    names, columns = _evaluate_batches(batches(), metric_list, options)
    return _summarise(names, metric_list, columns)


# --------------------------------------------------------------------------------------- eval command


def _json_number(value: float) -> float | None:
    return value if math.isfinite(value) else None


def json_safe(result: dict[str, Any]) -> dict[str, Any]:
    """A copy of an evaluation result with non-finite scores (PSNR of identical images) as ``None``, so
    that ``json.dumps(..., allow_nan=False)`` writes standard JSON (``null``) instead of ``Infinity``."""
    out = dict(result)
    out["mean"] = {k: _json_number(v) for k, v in result["mean"].items()}
    out["std"] = {k: _json_number(v) for k, v in result["std"].items()}
    out["per_image"] = {
        stem: {k: _json_number(v) for k, v in scores.items()} for stem, scores in result["per_image"].items()
    }
    return out


def format_table(result: dict[str, Any]) -> str:
    """A plain-text table: metric, mean ± std, n, and which direction is better."""
    rows = [("metric", "mean ± std", "n", "better")]
    for name in result["metrics"]:
        mean, std = result["mean"][name], result["std"][name]
        rows.append((name, f"{mean:.4f} ± {std:.4f}", str(result["n"]), f"{get_metric(name).direction}"))
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
) -> tuple[dict[str, Any], dict[str, Any], Path]:
    """Score a test output folder and write its ``metrics.json``: the one code path of ``eval`` and ``table6``.

    The JSON (default ``<results_dir>/metrics.json``, written atomically) holds the result of
    :func:`evaluate_results_dir` plus ``results_dir``, ``higher_is_better`` and ``settings``; non-finite
    scores (PSNR of identical images) are written as ``null``. LPIPS runs on ``device`` (``auto``: CUDA
    when available). Returns (result, the JSON document, its path).
    """
    metric_list = parse_metric_names(metrics)
    device_name = str(resolve_device(device)) if "lpips" in metric_list else "cpu"
    result = evaluate_results_dir(results_dir, metric_list, lpips_backbone, device_name, batch_size)
    settings: dict[str, Any] = {"std": "population (ddof=0) over images", "pixel_range": [0, 255]}
    if "ssim" in metric_list:
        settings["ssim"] = {k: v for k, v in SSIM_SETTINGS.items() if k != "channel_axis"} | {"color": "rgb"}
    if "lpips" in metric_list:
        backbone = resolve_lpips_backbone(lpips_backbone)
        settings["lpips"] = {
            "net": "alex",
            "version": "0.1",
            "input_range": [-1, 1],
            "backbone": str(backbone) if backbone is not None else ALEXNET_OWT_URL,
            "device": device_name,
        }
    document = {"results_dir": str(results_dir), **json_safe(result)}
    document["higher_is_better"] = {name: get_metric(name).higher_is_better for name in metric_list}
    document["settings"] = settings
    target = Path(json_path) if json_path else Path(results_dir) / "metrics.json"
    atomic_write_text(target, json.dumps(document, indent=2, allow_nan=False) + "\n")
    publish_scores(results_dir, document, target)
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
    )
    print(format_table(result))
    listed = " (those test.json lists)" if (Path(config.results_dir) / TEST_INFO).is_file() else ""
    print(
        f"scored {result['n']} image pairs{listed} in {time.perf_counter() - started:.1f}s; "
        f"wrote {target} and {target.with_suffix('.png')}"
    )
    return result


def publish_scores(results_dir: str | Path, document: dict[str, Any], json_path: Path) -> list[Path]:
    """Show written scores: the per-image score plot beside the JSON (``metrics.png``) and, in a ``test``
    output folder, its ``index.html`` with the metrics table and each image's scores. Returns the files."""
    names = list(document["metrics"])
    better = document.get("higher_is_better") or {n: get_metric(n).higher_is_better for n in names}
    plot = Path(json_path).with_suffix(".png")
    save_png(render_score_strips(document["per_image"], names, better), plot)
    written = [plot]
    if (Path(results_dir) / TEST_INFO).is_file():
        write_test_page(Path(results_dir), Path(json_path))
        written.append(Path(results_dir) / "index.html")
    return written
