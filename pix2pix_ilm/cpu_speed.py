"""CPU-only speed tricks, both opt-in per call: matrix-product convolutions and heap retention.

* :class:`Conv2d` / :class:`ConvTranspose2d`: drop-in subclasses (same parameters and state-dict keys) that
  run a weight-heavy convolution on a small input as ``unfold`` / matrix product / ``fold`` on CPU, because
  oneDNN copies the weights into its blocked layout at every call (and the input gradient of a thin product
  is taken in the layout MKL runs fast, ``THIN_COLUMNS``). Results agree with the native kernels to float32
  rounding. :func:`set_small_input_matmul` turns the route on or off for a network (``--native-conv``).
* :func:`retain_freed_memory`: glibc ``mallopt`` so big freed buffers stay in the heap instead of being
  unmapped and page-faulted in again at every step. It changes the whole process, so the library never
  calls it: the command line opts in (unless ``PIX2PIX_ILM_RETAIN_MEMORY=0``), a Python caller chooses.

Measurements and the reasoning behind both: docs/cpu_speed.md.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pix2pix_ilm.device import autocast_dtype

# Measured per layer of unet_256 + basic PatchGAN (forward + backward, fp32, 2 cores): the matrix product
# wins from a weight/input size ratio of about 16 (e.g. 512→512 conv at 16×16: 20 → 9 ms) and loses below
# about 8 (256→512 conv at 32×32: 13 → 15 ms).
MATMUL_WEIGHT_RATIO = 16


# Below this many columns, the fp32 product of a transposed weight matrix with a thin matrix ran 6-7x slower
# (MKL, AVX2) than the transpose of the product the other way round, which reads the weights in their stored
# layout: weightᵀ (8192×512) @ 4 columns 14.4 ms, (4 rows @ weight)ᵀ 2.1 ms; from 16 columns on, equal. In
# unet_256 that is the 512→512 convolution at 4×4: backward 17.4 → 6.3 ms (bench --profile's layer table).
THIN_COLUMNS = 16


class _WeightColumns(torch.autograd.Function):
    """``weight @ columns`` (the convolution route), its input gradient weightᵀ @ g computed as (gᵀ @ weight)ᵀ
    when g is thin. Under CPU autocast both run in its dtype, as the plain product would."""

    @staticmethod
    def forward(ctx: Any, weight: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        dtype = autocast_dtype("cpu")
        if dtype is not None:  # cast once here and save the cast copies, as autocast's own product does
            weight, columns = weight.to(dtype), columns.to(dtype)
        ctx.save_for_backward(weight, columns)
        return torch.mm(weight, columns)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        weight, columns = ctx.saved_tensors
        grad = grad.to(weight.dtype)  # autograd casts the returned gradients back to each input's dtype
        grad_weight = grad @ columns.t() if ctx.needs_input_grad[0] else None
        grad_columns = None
        if ctx.needs_input_grad[1]:
            grad_columns = (grad.t() @ weight).t() if grad.shape[1] < THIN_COLUMNS else weight.t() @ grad
        return grad_weight, grad_columns


def _pair(value: int | tuple[int, ...]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


class _SmallInputMatmul:
    """Shared dispatch rule of the two layer types below."""

    small_input_matmul: bool = True

    def _matmul_route(self, x: torch.Tensor) -> bool:
        return (
            self.small_input_matmul
            and x.device.type == "cpu"
            and x.dim() == 4
            and self.groups == 1
            and self.padding_mode == "zeros"
            and not isinstance(self.padding, str)
            and self.weight.numel() >= MATMUL_WEIGHT_RATIO * x.numel()
        )


class Conv2d(_SmallInputMatmul, nn.Conv2d):
    """``nn.Conv2d`` that runs small inputs with large weights as unfold + one matrix product on CPU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._matmul_route(x):
            return nn.Conv2d.forward(self, x)
        n, _, height, width = x.shape
        out_c, _, kh, kw = self.weight.shape
        (sh, sw), (ph, pw), (dh, dw) = _pair(self.stride), _pair(self.padding), _pair(self.dilation)
        out_h = (height + 2 * ph - dh * (kh - 1) - 1) // sh + 1
        out_w = (width + 2 * pw - dw * (kw - 1) - 1) // sw + 1
        cols = F.unfold(x, (kh, kw), dilation=(dh, dw), padding=(ph, pw), stride=(sh, sw))  # N, C·kh·kw, L
        # One product for the whole batch: (out_c, C·kh·kw) @ (C·kh·kw, N·L).
        cols = cols.transpose(0, 1).reshape(cols.shape[1], n * out_h * out_w)
        out = _WeightColumns.apply(self.weight.reshape(out_c, -1), cols)
        if self.bias is not None:
            out = out + self.bias.to(out.dtype).unsqueeze(1)
        return out.reshape(out_c, n, out_h, out_w).transpose(0, 1)


class ConvTranspose2d(_SmallInputMatmul, nn.ConvTranspose2d):
    """``nn.ConvTranspose2d`` that runs small inputs with large weights as one matrix product + fold on CPU."""

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        if output_size is not None or not self._matmul_route(x):
            return nn.ConvTranspose2d.forward(self, x, output_size)
        n, in_c, height, width = x.shape
        _, out_c, kh, kw = self.weight.shape
        (sh, sw), (ph, pw), (dh, dw) = _pair(self.stride), _pair(self.padding), _pair(self.dilation)
        oph, opw = _pair(self.output_padding)
        out_h = (height - 1) * sh - 2 * ph + dh * (kh - 1) + oph + 1
        out_w = (width - 1) * sw - 2 * pw + dw * (kw - 1) + opw + 1
        # (N·H·W, in_c) @ (in_c, out_c·kh·kw): every input pixel's contribution to its kh×kw output patch.
        pixels = x.transpose(0, 1).reshape(in_c, n * height * width).t()
        cols = pixels @ self.weight.reshape(in_c, -1)
        cols = cols.t().reshape(out_c * kh * kw, n, height * width).transpose(0, 1)
        out = F.fold(cols, (out_h, out_w), (kh, kw), dilation=(dh, dw), padding=(ph, pw), stride=(sh, sw))
        if self.bias is not None:
            out = out + self.bias.to(out.dtype).view(1, -1, 1, 1)
        return out


def set_small_input_matmul(module: nn.Module, enabled: bool) -> int:
    """Turn the matrix-product route of every :class:`Conv2d` / :class:`ConvTranspose2d` in ``module``
    on or off; returns how many layers were set."""
    count = 0
    for layer in module.modules():
        if isinstance(layer, _SmallInputMatmul):
            layer.small_input_matmul = enabled
            count += 1
    return count


# ---------------------------------------------------------------------------------- heap retention
RETAIN_MEMORY_ENV = "PIX2PIX_ILM_RETAIN_MEMORY"
_M_TRIM_THRESHOLD = -1  # glibc mallopt parameters (malloc.h)
_M_MMAP_MAX = -4
_applied = False


def retain_freed_memory() -> bool:
    """Serve big allocations from the heap and never trim it (glibc only); True if the setting is in effect."""
    global _applied
    if _applied:
        return True
    if os.environ.get(RETAIN_MEMORY_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    name = ctypes.util.find_library("c") or "libc.so.6"
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _applied = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    return _applied
