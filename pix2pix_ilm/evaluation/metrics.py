"""A registry of named image metrics, each added by one :func:`register_metric` factory (docs/metrics.md).

The factory runs once per evaluation (the LPIPS network is built once) and returns a batched scorer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pix2pix_ilm.device import resolve_device
from pix2pix_ilm.errors import UsageError
from pix2pix_ilm.evaluation.lpips_alexnet import build_lpips

# (fake[N,H,W,C] uint8, real[N,H,W,C] uint8) -> scores[N] float64, C = 3 (RGB) or 1 (grey)
Scorer = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class EvalOptions:
    """What a metric factory may need: where LPIPS gets its backbone, and the torch device."""

    lpips_backbone: str | Path | None = None
    device: str = "cpu"


@dataclass(frozen=True)
class Metric:
    """A named metric: whether higher is better, a one-line description, and its scorer factory."""

    name: str
    higher_is_better: bool
    description: str
    make_scorer: Callable[[EvalOptions], Scorer]

    @property
    def direction(self) -> str:
        return "higher" if self.higher_is_better else "lower"


_METRICS: dict[str, Metric] = {}


def register_metric(
    name: str, *, higher_is_better: bool, description: str
) -> Callable[[Callable[[EvalOptions], Scorer]], Callable[[EvalOptions], Scorer]]:
    """Decorator: register ``factory(options) -> scorer`` under ``name``."""

    def decorate(factory: Callable[[EvalOptions], Scorer]) -> Callable[[EvalOptions], Scorer]:
        if name in _METRICS:
            raise ValueError(f"metric {name!r} is already registered")
        _METRICS[name] = Metric(name, higher_is_better, description, factory)
        return factory

    return decorate


def list_metrics() -> list[str]:
    """Names of all registered metrics, in registration order."""
    return list(_METRICS)


def get_metric(name: str) -> Metric:
    """The registered metric ``name``; :class:`UsageError` listing the valid names otherwise."""
    try:
        return _METRICS[name]
    except KeyError:
        raise UsageError(f"unknown metric {name!r}; choose from: {', '.join(list_metrics())}") from None


def parse_metric_names(metrics: str | Sequence[str]) -> list[str]:
    """``"rmse, ssim,lpips"`` or a list of names -> validated, de-duplicated list of names."""
    items = metrics.split(",") if isinstance(metrics, str) else list(metrics)
    names: list[str] = []
    for item in items:
        name = item.strip().lower()
        if not name:
            continue
        get_metric(name)
        if name not in names:
            names.append(name)
    if not names:
        raise UsageError(f"no metric given; choose from: {', '.join(list_metrics())}")
    return names


def _squared_error(fake: np.ndarray, real: np.ndarray) -> np.ndarray:
    diff = fake.astype(np.float64) - real.astype(np.float64)
    return np.mean(diff * diff, axis=(1, 2, 3))


def rmse(fake: np.ndarray, real: np.ndarray) -> np.ndarray:
    """Root-mean-square error per image on 0–255 values; ``fake``/``real`` are ``[N,H,W,C]``."""
    return np.sqrt(_squared_error(fake, real))


def rmse_rgb(fake: np.ndarray, real: np.ndarray) -> np.ndarray:
    """Root-mean-square Euclidean colour distance per pixel, = √C × :func:`rmse` (docs/metrics.md)."""
    diff = fake.astype(np.float64) - real.astype(np.float64)
    return np.sqrt(np.sum(diff * diff, axis=(1, 2, 3)) / (fake.shape[1] * fake.shape[2]))


def mae(fake: np.ndarray, real: np.ndarray) -> np.ndarray:
    """Mean absolute error per image on 0–255 values."""
    return np.mean(np.abs(fake.astype(np.float64) - real.astype(np.float64)), axis=(1, 2, 3))


def psnr(fake: np.ndarray, real: np.ndarray) -> np.ndarray:
    """Peak signal-to-noise ratio per image in dB (peak 255); ``inf`` where the images are identical."""
    mse = _squared_error(fake, real)
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(255.0**2 / mse)


# Keyword arguments of every SSIM call: scikit-image's defaults, written out.
SSIM_SETTINGS: dict[str, Any] = {
    "channel_axis": -1,
    "data_range": 255,
    "win_size": 7,
    "gaussian_weights": False,
    "use_sample_covariance": True,
    "K1": 0.01,
    "K2": 0.03,
}


def ssim(fake: np.ndarray, real: np.ndarray) -> np.ndarray:
    """Structural similarity per image (each channel's, averaged; 7×7 uniform window, data range 255)."""
    from skimage.metrics import structural_similarity

    if min(fake.shape[1:3]) < SSIM_SETTINGS["win_size"]:
        raise UsageError(f"SSIM needs images of at least 7x7 pixels, got {fake.shape[2]}x{fake.shape[1]}")
    return np.array(
        [structural_similarity(f, r, **SSIM_SETTINGS) for f, r in zip(fake, real, strict=False)],
        dtype=np.float64,
    )


# Metrics that need no set-up: the scorer is the function itself (registration order = listing order).
_PLAIN_METRICS: tuple[tuple[str, Scorer, bool, str], ...] = (
    ("rmse", rmse, False, "root-mean-square error, 0-255 scale"),
    ("rmse_rgb", rmse_rgb, False, "RMS Euclidean RGB distance per pixel, = sqrt(3) x rmse"),
    ("psnr", psnr, True, "peak signal-to-noise ratio in dB, peak 255"),
    ("mae", mae, False, "mean absolute error, 0-255 scale"),
    ("ssim", ssim, True, "SSIM, RGB, 7x7 uniform window (skimage defaults)"),
)
for _name, _scorer, _higher, _description in _PLAIN_METRICS:
    register_metric(_name, higher_is_better=_higher, description=_description)(lambda options, s=_scorer: s)


@register_metric(
    "lpips", higher_is_better=False, description="LPIPS v0.1, AlexNet trunk (perceptual distance)"
)
def _make_lpips(options: EvalOptions) -> Scorer:
    device = resolve_device(options.device)
    return lpips_scorer(build_lpips(options.lpips_backbone, device), device)


def lpips_scorer(model: torch.nn.Module, device: str | torch.device = "cpu") -> Scorer:
    """A batched LPIPS scorer around an already built model (see :func:`build_lpips`), moved to ``device``
    with its inputs; grey images are replicated to RGB."""
    device = torch.device(device)
    model = model.to(device)

    def score(fake: np.ndarray, real: np.ndarray) -> np.ndarray:
        def to_tensor(images: np.ndarray) -> torch.Tensor:
            tensor = torch.from_numpy(np.ascontiguousarray(images)).to(device)
            tensor = tensor.permute(0, 3, 1, 2).to(torch.float32) / 127.5 - 1.0
            return tensor.expand(-1, 3, -1, -1) if tensor.shape[1] == 1 else tensor

        with torch.inference_mode():
            distance = model(to_tensor(fake), to_tensor(real))
        return distance.reshape(-1).double().cpu().numpy()

    return score
