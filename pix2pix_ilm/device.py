"""Which torch device a run uses, and the speed settings that follow from it (``--precision auto`` and
``--channels-last`` left unset). Why these defaults: docs/gpu.md."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import TypeVar

import torch

from pix2pix_ilm.errors import UsageError

Config = TypeVar("Config")


def resolve_device(name: str) -> torch.device:
    """``auto`` → the first CUDA device when available, else the CPU; other names are checked."""
    name = (name or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise UsageError(f"--device {name!r} is not a device name (cpu, cuda, cuda:N, auto)") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name} requested but CUDA is not available on this machine")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise UsageError(
            f"--device {name}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}"
        )
    return device


def torch_at_least(major: int, minor: int) -> bool:
    parts = torch.__version__.split("+")[0].split(".")
    return (int(parts[0]), int(parts[1])) >= (major, minor)


def autocast_dtype(device_type: str) -> torch.dtype | None:
    """The dtype autocast computes in on ``device_type`` right now, or None where it is off (torch 2.1+)."""
    if torch_at_least(2, 4):
        return torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None
    if device_type == "cpu":
        return torch.get_autocast_cpu_dtype() if torch.is_autocast_cpu_enabled() else None
    return torch.get_autocast_gpu_dtype() if torch.is_autocast_enabled() else None


def has_fast_bf16(device: torch.device) -> bool:
    """Whether ``device`` is a CUDA GPU with bf16 (and TF32) tensor cores: compute capability 8.0 or newer.

    Not ``torch.cuda.is_bf16_supported()``: by default it also says yes where bf16 is only emulated (slowly).
    """
    if device.type != "cuda":
        return False
    major, _ = torch.cuda.get_device_capability(device)
    return major >= 8


def with_device_defaults(config: Config, device: torch.device) -> Config:
    """``config`` (a dataclass with ``precision`` and ``channels_last``, e.g. a ``TrainConfig``) with its
    automatic speed settings made concrete for ``device``; explicit values are kept.

    ``precision="auto"`` → ``bf16`` on a CUDA GPU with fast bf16 (:func:`has_fast_bf16`), ``fp32`` elsewhere;
    ``channels_last=None`` → ``False`` everywhere: the instance norms return contiguous tensors, so every
    layer after one would convert back (docs/gpu.md counts the copies). A resolved config comes back unchanged.
    """
    if config.precision != "auto" and config.channels_last is not None:
        return config
    precision = (
        ("bf16" if has_fast_bf16(device) else "fp32") if config.precision == "auto" else config.precision
    )
    channels_last = bool(config.channels_last)
    return dataclasses.replace(config, precision=precision, channels_last=channels_last)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device`` for ``--precision bf16``; for fp32 nothing, and on CUDA no TF32 either
    (cuDNN's convolutions use it by default, so fp32 would not be strict). ``auto`` must be resolved.
    Without autocast's cache of cast weights: a captured CUDA graph would replay casts of stale weights."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16, cache_enabled=False)
    if precision == "fp32":
        return _no_tf32() if device.type == "cuda" else contextlib.nullcontext()
    raise ValueError(f"precision {precision!r} is not resolved for a device (see with_device_defaults)")


@contextlib.contextmanager
def _no_tf32() -> Iterator[None]:
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
