"""Scores of test outputs against their ground truth: a registry of named metrics and the ``eval`` command.

Every metric compares a generated image ``fake_B`` with its ground truth ``real_B``, both 8-bit RGB. Scores
are computed per image and then averaged over the images; ``std`` is the **population** standard deviation
(``ddof=0``) of the per-image scores, i.e. the spread over exactly the images evaluated, not an estimate for
some larger set. A metric is added in one place: a factory decorated with :func:`register_metric`, which
returns a batched scorer ``(fake[N,H,W,3] uint8, real[N,H,W,3] uint8) -> scores[N] float64``; the factory
runs once per evaluation, so expensive set-up (the LPIPS network) is done once, not once per image.

Metrics
-------
``rmse``, ``mae``, ``psnr``
    On pixel values 0–255 with float64 arithmetic, over all pixels and the three channels of one image:
    ``rmse = sqrt(mean((f - r)^2))``, ``mae = mean(|f - r|)``, ``psnr = 10 log10(255^2 / mean((f - r)^2))``
    (``inf`` for identical images; written as ``null`` in JSON).

    A caveat for comparing with the ILM paper (Table 6, IN/IN: RMSE 108.17): by our own measurement on
    the offline facades copy, the RMSE of this definition between the photos of *unrelated* facades
    (train/i against train/i+1, i = 1..200) is about 79, and between unrelated label maps about 110. An
    RMSE of 108 for label→photo outputs is therefore worse than guessing another facade; we do not know
    how the authors computed it (e.g. over the Euclidean colour distance of a pixel, which is √3 times
    this value, over uint8 values that wrap around, or for the photo→label direction). We do not try to
    imitate any of these guesses: compare relative differences between the rows, not absolute values.

``ssim``
    :func:`skimage.metrics.structural_similarity` on the RGB images with ``channel_axis=-1`` (SSIM of each
    channel, averaged) and ``data_range=255``, and otherwise scikit-image's defaults: a **7×7 uniform
    window** (``gaussian_weights=False``), sample covariance (``use_sample_covariance=True``),
    ``K1=0.01``, ``K2=0.03``.

    What we believe the ILM authors used, and why. Their public code (github.com/Gasoonjia/ILM-Norm) is
    PyTorch but holds only the classification experiments, and we could not check the paper's text for
    SSIM settings, so this is an inference, not a documented fact: in 2019 the usual SSIM in Python was
    scikit-image's ``compare_ssim``, whose defaults were the same 7×7 uniform window and sample
    covariance, and nothing we know of points to Gaussian weighting; the plain defaults are the most
    likely choice. Two details of their call remain unknown and do matter: (1) whether they passed
    ``multichannel=True`` (RGB, as here) or compared grey images; (2) the data range: for uint8 images
    ``compare_ssim`` inferred 255 (as here), for float images in [-1, 1] it inferred 2. For scale, the
    "Wang et al. 2004" setting (``gaussian_weights=True, sigma=1.5, use_sample_covariance=False``)
    differs by a few hundredths on facades: on 20 real photos against a copy blurred with a radius-2
    Gaussian we measured 0.616 with our setting, 0.592 with Wang's, and 0.618 for grey-level SSIM.

``lpips``
    LPIPS v0.1 with the AlexNet trunk (``lpips.LPIPS(net='alex', version='0.1')``), inputs scaled to
    [-1, 1], evaluated in batches. The linear calibration layers come with the ``lpips`` package; the
    ImageNet AlexNet convolutions are loaded from, in this order: the ``lpips_backbone`` argument, the
    ``PIX2PIX_ILM_LPIPS_BACKBONE`` environment variable, torch hub's cache (``alexnet-owt-*.pth``), or a
    download of torchvision's ``alexnet-owt-7be5be79.pth`` with a short network timeout. A local file may be
    torchvision's full state dict or one holding only the ``features.*`` tensors. The weights are checked
    (names, shapes, and that they cannot come from PyTorch's random initialisation): LPIPS is never
    computed with a random backbone.
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from pix2pix_ilm.checkpoint import atomic_write_text
from pix2pix_ilm.errors import UsageError
from pix2pix_ilm.model import resolve_device

Scorer = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""A batched metric: ``(fake[N,H,W,3] uint8, real[N,H,W,3] uint8) -> scores[N] float64``."""

LPIPS_BACKBONE_ENV = "PIX2PIX_ILM_LPIPS_BACKBONE"
ALEXNET_OWT_URL = "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"
"""torchvision's ImageNet AlexNet (``IMAGENET1K_V1``), the trunk LPIPS v0.1 was calibrated on."""
DOWNLOAD_TIMEOUT_S = 10.0

# torchvision AlexNet ``features.<i>`` convolution -> (LPIPS slice number, shape of its weight).
_ALEXNET_CONVS: dict[int, tuple[int, tuple[int, ...]]] = {
    0: (1, (64, 3, 11, 11)),
    3: (2, (192, 64, 5, 5)),
    6: (3, (384, 192, 3, 3)),
    8: (4, (256, 384, 3, 3)),
    10: (5, (256, 256, 3, 3)),
}
_LPIPS_LIN_CHANNELS = (64, 192, 384, 256, 256)


# --------------------------------------------------------------------------------------------- registry


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


# ------------------------------------------------------------------------------------ pixel metrics


def _squared_error(fake: np.ndarray, real: np.ndarray) -> np.ndarray:
    diff = fake.astype(np.float64) - real.astype(np.float64)
    return np.mean(diff * diff, axis=(1, 2, 3))


def rmse(fake: np.ndarray, real: np.ndarray) -> np.ndarray:
    """Root-mean-square error per image on 0–255 values; ``fake``/``real`` are ``[N,H,W,3]``."""
    return np.sqrt(_squared_error(fake, real))


def mae(fake: np.ndarray, real: np.ndarray) -> np.ndarray:
    """Mean absolute error per image on 0–255 values."""
    return np.mean(np.abs(fake.astype(np.float64) - real.astype(np.float64)), axis=(1, 2, 3))


def psnr(fake: np.ndarray, real: np.ndarray) -> np.ndarray:
    """Peak signal-to-noise ratio per image in dB (peak 255); ``inf`` where the images are identical."""
    mse = _squared_error(fake, real)
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(255.0**2 / mse)


SSIM_SETTINGS: dict[str, Any] = {
    "channel_axis": -1,
    "data_range": 255,
    "win_size": 7,
    "gaussian_weights": False,
    "use_sample_covariance": True,
    "K1": 0.01,
    "K2": 0.03,
}
"""Keyword arguments of every SSIM call (scikit-image's defaults, written out; see the module docstring)."""


def ssim(fake: np.ndarray, real: np.ndarray) -> np.ndarray:
    """Structural similarity per image (RGB, 7×7 uniform window, data range 255)."""
    from skimage.metrics import structural_similarity

    if min(fake.shape[1:3]) < SSIM_SETTINGS["win_size"]:
        raise UsageError(f"SSIM needs images of at least 7x7 pixels, got {fake.shape[2]}x{fake.shape[1]}")
    return np.array(
        [structural_similarity(f, r, **SSIM_SETTINGS) for f, r in zip(fake, real, strict=False)],
        dtype=np.float64,
    )


@register_metric("rmse", higher_is_better=False, description="root-mean-square error, 0-255 scale")
def _make_rmse(options: EvalOptions) -> Scorer:
    return rmse


@register_metric("psnr", higher_is_better=True, description="peak signal-to-noise ratio in dB, peak 255")
def _make_psnr(options: EvalOptions) -> Scorer:
    return psnr


@register_metric("mae", higher_is_better=False, description="mean absolute error, 0-255 scale")
def _make_mae(options: EvalOptions) -> Scorer:
    return mae


@register_metric(
    "ssim", higher_is_better=True, description="SSIM, RGB, 7x7 uniform window (skimage defaults)"
)
def _make_ssim(options: EvalOptions) -> Scorer:
    return ssim


# ------------------------------------------------------------------------------------------- LPIPS


def _hub_cached_alexnet() -> Path | None:
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    exact = checkpoints / Path(ALEXNET_OWT_URL).name
    if exact.is_file():
        return exact
    others = sorted(checkpoints.glob("alexnet-owt-*.pth")) if checkpoints.is_dir() else []
    return others[0] if others else None


def resolve_lpips_backbone(lpips_backbone: str | Path | None = None) -> Path | None:
    """The local backbone file to use: the argument, else ``$PIX2PIX_ILM_LPIPS_BACKBONE``, else torch hub's
    cached ``alexnet-owt-*.pth``; ``None`` when there is none (then :func:`build_lpips` downloads it)."""
    for candidate in (lpips_backbone, os.environ.get(LPIPS_BACKBONE_ENV)):
        if candidate is not None and str(candidate).strip():
            path = Path(candidate).expanduser()
            if not path.is_file():
                raise UsageError(f"LPIPS backbone file not found: {path}")
            return path
    return _hub_cached_alexnet()


def _looks_randomly_initialised(weight: torch.Tensor) -> bool:
    # PyTorch's default Conv2d init (kaiming_uniform, a=sqrt(5)) keeps every |w| <= 1/sqrt(fan_in);
    # ImageNet-trained AlexNet exceeds that bound by 10-90x in every layer.
    bound = 1.0 / math.sqrt(weight[0].numel())
    return float(weight.abs().max()) <= 1.5 * bound or not bool(torch.isfinite(weight).all())


def check_alexnet_features(state: Any, source: str) -> dict[str, torch.Tensor]:
    """Validate an AlexNet state dict (full torchvision format or ``features.*`` only) and return its ten
    ``features.{0,3,6,8,10}.{weight,bias}`` tensors as float32. :class:`UsageError` naming ``source``."""
    if not isinstance(state, dict) or not all(isinstance(key, str) for key in state):
        raise UsageError(f"LPIPS backbone {source} does not hold a state dictionary of named tensors")
    expected: dict[str, tuple[int, ...]] = {}
    for index, (_, shape) in _ALEXNET_CONVS.items():
        expected[f"features.{index}.weight"] = shape
        expected[f"features.{index}.bias"] = shape[:1]
    missing = [key for key in expected if key not in state]
    if missing:
        raise UsageError(
            f"LPIPS backbone {source} is not an ImageNet AlexNet (torchvision alexnet-owt): missing "
            f"{', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}"
        )
    unexpected = [key for key in state if key not in expected and not key.startswith("classifier.")]
    if unexpected:
        raise UsageError(
            f"LPIPS backbone {source} has keys an AlexNet state dict does not have: "
            f"{', '.join(unexpected[:3])}"
        )
    features: dict[str, torch.Tensor] = {}
    for key, shape in expected.items():
        value = state[key]
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != shape:
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise UsageError(f"LPIPS backbone {source}: {key} has shape {got}, expected {shape}")
        features[key] = value.detach().to(torch.float32)
    random_layers = [
        key for key in features if key.endswith(".weight") and _looks_randomly_initialised(features[key])
    ]
    if random_layers:
        raise UsageError(
            f"LPIPS backbone {source} does not hold ImageNet-trained weights ({', '.join(random_layers)} "
            "look like a random initialisation); use torchvision's alexnet-owt-7be5be79.pth"
        )
    return features


def load_alexnet_features(path: str | Path) -> dict[str, torch.Tensor]:
    """Load and validate a local AlexNet backbone file with ``torch.load(..., weights_only=True)``."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling errors, truncated zips, not a torch file at all
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UsageError(f"LPIPS backbone {path} cannot be loaded as plain tensors: {first_line}") from err
    return check_alexnet_features(state, str(path))


def _download_alexnet_features() -> dict[str, torch.Tensor]:
    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        state = torch.hub.load_state_dict_from_url(
            ALEXNET_OWT_URL, map_location="cpu", progress=True, check_hash=True, weights_only=True
        )
    except Exception as err:  # no network, DNS failure, timeout, HTTP error, hash mismatch
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UsageError(
            f"LPIPS needs ImageNet AlexNet weights and they could not be downloaded from {ALEXNET_OWT_URL} "
            f"({reason}); give a local copy with --lpips-backbone PATH or ${LPIPS_BACKBONE_ENV}=PATH "
            "(torchvision's alexnet-owt-*.pth or a features-only file such as alexnet_owt_features.pth)"
        ) from err
    finally:
        socket.setdefaulttimeout(previous_timeout)
    return check_alexnet_features(state, ALEXNET_OWT_URL)


def _lpips_linear_weights(version: str) -> dict[str, torch.Tensor]:
    import lpips

    path = Path(lpips.__file__).resolve().parent / "weights" / f"v{version}" / "alex.pth"
    if not path.is_file():
        raise UsageError(f"the lpips package has no calibration weights at {path}; reinstall lpips")
    state = torch.load(path, map_location="cpu", weights_only=True)
    expected = {f"lin{i}.model.1.weight": (1, c, 1, 1) for i, c in enumerate(_LPIPS_LIN_CHANNELS)}
    if not isinstance(state, dict) or set(state) != set(expected):
        found = sorted(state)[:5] if isinstance(state, dict) else type(state).__name__
        raise UsageError(f"unexpected LPIPS calibration file {path}: {found}")
    for key, shape in expected.items():
        if tuple(state[key].shape) != shape or bool((state[key] < 0).any()):
            raise UsageError(f"unexpected LPIPS calibration file {path}: {key} is not a valid linear layer")
    return state


def build_lpips(
    lpips_backbone: str | Path | None = None, device: str | torch.device = "cpu"
) -> torch.nn.Module:
    """LPIPS v0.1 (AlexNet) in eval mode on ``device`` with verified ImageNet and calibration weights.

    The backbone comes from :func:`resolve_lpips_backbone`, or is downloaded (torch hub cache, timeout
    ``DOWNLOAD_TIMEOUT_S``) when there is no local file; failing that, one :class:`UsageError` says how to
    provide the file. Never returns a network with random weights.
    """
    import lpips

    path = resolve_lpips_backbone(lpips_backbone)
    features = load_alexnet_features(path) if path is not None else _download_alexnet_features()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torchvision's "pretrained is deprecated"
        model = lpips.LPIPS(net="alex", version="0.1", pretrained=False, pnet_rand=True, verbose=False)
    trunk = {
        f"slice{slice_number}.{index}.{kind}": features[f"features.{index}.{kind}"]
        for index, (slice_number, _) in _ALEXNET_CONVS.items()
        for kind in ("weight", "bias")
    }
    model.net.load_state_dict(trunk, strict=True)
    linear = _lpips_linear_weights("0.1")
    with torch.no_grad():
        for i in range(len(_LPIPS_LIN_CHANNELS)):
            getattr(model, f"lin{i}").model[1].weight.copy_(linear[f"lin{i}.model.1.weight"])
    for name, param in model.net.named_parameters():
        if name.endswith("weight") and _looks_randomly_initialised(param.detach()):
            raise RuntimeError(f"LPIPS trunk layer {name} kept its random initialisation")  # a bug, not usage
    model.eval().requires_grad_(False)
    return model.to(device)


def lpips_scorer(model: torch.nn.Module, device: str | torch.device = "cpu") -> Scorer:
    """A batched LPIPS scorer around an already built model (see :func:`build_lpips`)."""
    device = torch.device(device)

    def score(fake: np.ndarray, real: np.ndarray) -> np.ndarray:
        def to_tensor(images: np.ndarray) -> torch.Tensor:
            tensor = torch.from_numpy(np.ascontiguousarray(images)).to(device)
            return tensor.permute(0, 3, 1, 2).to(torch.float32) / 127.5 - 1.0

        with torch.inference_mode():
            distance = model(to_tensor(fake), to_tensor(real))
        return distance.reshape(-1).double().cpu().numpy()

    return score


@register_metric(
    "lpips", higher_is_better=False, description="LPIPS v0.1, AlexNet trunk (perceptual distance)"
)
def _make_lpips(options: EvalOptions) -> Scorer:
    device = resolve_device(options.device)
    return lpips_scorer(build_lpips(options.lpips_backbone, device), device)


# -------------------------------------------------------------------------------------- evaluation


def _natural_key(text: str) -> list[Any]:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


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
    """``(stem, fake_path, real_path)`` for every ``images/<stem>_fake_B.png``, in natural order of stem."""
    images_dir = Path(results_dir) / "images"
    if not Path(results_dir).is_dir():
        raise UsageError(f"results folder not found: {results_dir}")
    if not images_dir.is_dir():
        raise UsageError(
            f"no images/ folder in {results_dir} (expected {images_dir}; run 'pix2pix-ilm test')"
        )
    suffix = "_fake_B.png"
    fakes = [path for path in images_dir.iterdir() if path.name.endswith(suffix) and path.is_file()]
    if not fakes:
        raise UsageError(f"no *{suffix} images in {images_dir}")
    pairs = []
    for fake in sorted(fakes, key=lambda p: _natural_key(p.name[: -len(suffix)])):
        stem = fake.name[: -len(suffix)]
        real = images_dir / f"{stem}_real_B.png"
        if not real.is_file():
            raise UsageError(f"{fake} has no ground truth: {real} is missing")
        pairs.append((stem, fake, real))
    return pairs


def _read_rgb(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as err:
        raise UsageError(f"cannot read image {path}: {err}") from err


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
                fake, real = _read_rgb(fake_path), _read_rgb(real_path)
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


def run_eval_command(
    results_dir: str | Path,
    metrics: str | Sequence[str] = "rmse,ssim,lpips",
    lpips_backbone: str | Path | None = None,
    json_path: str | Path | None = None,
    device: str = "auto",
    batch_size: int = 16,
) -> dict[str, Any]:
    """The ``pix2pix-ilm eval`` command: score a test output folder, print a table, write the JSON.

    The JSON (default ``<results_dir>/metrics.json``, written atomically) holds the result of
    :func:`evaluate_results_dir` plus ``results_dir``, ``higher_is_better`` and ``settings``; non-finite
    scores (PSNR of identical images) are written as ``null``. Returns the result dictionary.
    """
    metric_list = parse_metric_names(metrics)
    device_name = str(resolve_device(device)) if "lpips" in metric_list else "cpu"
    started = time.perf_counter()
    result = evaluate_results_dir(results_dir, metric_list, lpips_backbone, device_name, batch_size)
    elapsed = time.perf_counter() - started
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
    print(format_table(result))
    print(f"scored {result['n']} image pairs in {elapsed:.1f}s; wrote {target}")
    return result


__all__ = [
    "ALEXNET_OWT_URL",
    "LPIPS_BACKBONE_ENV",
    "SSIM_SETTINGS",
    "EvalOptions",
    "Metric",
    "build_lpips",
    "check_alexnet_features",
    "evaluate_images",
    "evaluate_results_dir",
    "find_image_pairs",
    "format_table",
    "get_metric",
    "json_safe",
    "list_metrics",
    "load_alexnet_features",
    "lpips_scorer",
    "mae",
    "parse_metric_names",
    "psnr",
    "register_metric",
    "resolve_device",
    "resolve_lpips_backbone",
    "rmse",
    "run_eval_command",
    "ssim",
]
