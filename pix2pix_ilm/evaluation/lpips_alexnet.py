"""LPIPS v0.1 with the AlexNet trunk: where the ImageNet weights come from, how they are checked, the scorer."""

from __future__ import annotations

import math
import os
import socket
import urllib.request
import warnings
from pathlib import Path
from typing import Any

import torch

from pix2pix_ilm.errors import UsageError, first_line

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


def _hub_cached_alexnet() -> Path | None:
    """torch hub's cached ``alexnet-owt-*.pth``, the one of :data:`ALEXNET_OWT_URL` first."""
    cached = Path(torch.hub.get_dir()).joinpath("checkpoints").glob("alexnet-owt-*.pth")
    found = sorted(cached, key=lambda p: (p.name != Path(ALEXNET_OWT_URL).name, p.name))
    return found[0] if found else None


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
    """The ten ``features.{0,3,6,8,10}.{weight,bias}`` tensors (float32) of an ImageNet AlexNet state dict
    (torchvision's full one or ``features.*`` only); :class:`UsageError` naming ``source`` otherwise."""
    if not isinstance(state, dict) or not all(isinstance(key, str) for key in state):
        raise UsageError(f"LPIPS backbone {source} does not hold a state dictionary of named tensors")
    expected = {
        f"features.{i}.{kind}": shape if kind == "weight" else shape[:1]
        for i, (_, shape) in _ALEXNET_CONVS.items()
        for kind in ("weight", "bias")
    }
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
        raise UsageError(
            f"LPIPS backbone {path} cannot be loaded as plain tensors: {first_line(err)}"
        ) from err
    return check_alexnet_features(state, str(path))


def _download_alexnet_features() -> dict[str, torch.Tensor]:
    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        # Reach the server first: torch hub announces "Downloading: ..." before it knows whether it can.
        urllib.request.urlopen(urllib.request.Request(ALEXNET_OWT_URL, method="HEAD")).close()
        state = torch.hub.load_state_dict_from_url(
            ALEXNET_OWT_URL, map_location="cpu", progress=True, check_hash=True, weights_only=True
        )
    except Exception as err:  # no network, DNS failure, timeout, HTTP error, hash mismatch
        raise UsageError(
            f"LPIPS needs ImageNet AlexNet weights and they could not be downloaded from {ALEXNET_OWT_URL} "
            f"({first_line(err)}); give a local copy with --lpips-backbone PATH or ${LPIPS_BACKBONE_ENV}=PATH "
            "(torchvision's alexnet-owt-*.pth or a features-only file such as alexnet_owt_features.pth)"
        ) from err
    finally:
        socket.setdefaulttimeout(previous_timeout)
    return check_alexnet_features(state, ALEXNET_OWT_URL)


def _lpips_linear_weights() -> dict[str, torch.Tensor]:
    """LPIPS v0.1's calibration weights for AlexNet, shipped with the lpips package, checked."""
    import lpips

    path = Path(lpips.__file__).resolve().parent / "weights" / "v0.1" / "alex.pth"
    if not path.is_file():
        raise UsageError(f"the lpips package has no calibration weights at {path}; reinstall lpips")
    state = torch.load(path, map_location="cpu", weights_only=True)
    expected = {f"lin{i}.model.1.weight": (1, s[0], 1, 1) for i, (_, s) in enumerate(_ALEXNET_CONVS.values())}
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
    """LPIPS v0.1 (AlexNet) in eval mode on ``device`` with checked ImageNet and calibration weights: the
    backbone of :func:`resolve_lpips_backbone`, else downloaded; else one :class:`UsageError` saying how."""
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
    model.load_state_dict(_lpips_linear_weights(), strict=False)  # the lin layers; the trunk is set above
    model.eval().requires_grad_(False)
    return model.to(device)
