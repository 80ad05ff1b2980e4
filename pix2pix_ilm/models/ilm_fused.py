"""ILM+IN with key groups of one channel (the paper's pix2pix setting) as one autograd function with a
hand-written backward, instead of ~40 small autograd nodes per layer (docs/ilm.md, "Fused backward")."""

from __future__ import annotations

from typing import Any

import torch
from torch.autograd.function import once_differentiable


def _channel_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Σ over (H, W) of a·b per (sample, channel), in any memory format (one fused kernel when contiguous)."""
    if a.is_contiguous() and b.is_contiguous():
        return torch.linalg.vecdot(a.flatten(2), b.flatten(2))
    return (a * b).sum((2, 3))


class ILMInstanceK1(torch.autograd.Function):
    """out = ω·(x − μ)·rsqrt(v + eps) + β per (sample, channel); ω, β from the meta-network on (μ, γ)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: torch.Tensor,
        w1: torch.Tensor,
        w2: torch.Tensor,
        w3: torch.Tensor,
        b_omega: torch.Tensor,
        b_beta: torch.Tensor,
        eps: float,
        unbiased: bool,
    ) -> torch.Tensor:
        n = x.shape[2] * x.shape[3]
        mean = x.mean((2, 3))  # μ
        centred = x - mean[:, :, None, None]  # in x's memory format (channels_last stays so)
        squares = _channel_dot(centred, centred)
        key_var = squares / max(n - 1, 1)  # γ: unbiased, as in the authors' code
        divisor = max(n - 1, 1) if unbiased else n
        hidden = torch.stack((mean, key_var)) @ w1.t()  # W1 shared by E_μ and E_γ
        encoded = hidden.clamp_min(0)
        d_mean = torch.tanh(encoded[0] @ w2.t())  # D_μ
        d_var = torch.sigmoid(encoded[1] @ w3.t())  # D_γ
        omega = d_var + b_omega
        rstd = torch.rsqrt(squares / divisor + eps)
        out = torch.addcmul((d_mean + b_beta)[:, :, None, None], centred, (omega * rstd)[:, :, None, None])
        ctx.save_for_backward(centred, mean, key_var, hidden, encoded, d_mean, d_var, omega, rstd, w1, w2, w3)
        ctx.n, ctx.divisor = n, divisor
        return out  # a new tensor, not a view: the next layer's in-place activation may modify it

    @staticmethod
    @once_differentiable  # the saved intermediates do not carry their own graph: no silent 2nd-order errors
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        centred, mean, key_var, hidden, encoded, d_mean, d_var, omega, rstd, w1, w2, w3 = ctx.saved_tensors
        n, divisor = ctx.n, ctx.divisor
        g = grad
        grad_beta = g.sum((2, 3))
        dot = _channel_dot(g, centred)  # Σ g·(x − μ)
        grad_omega = dot * rstd
        # meta-network: tanh / sigmoid decoders, ReLU, the shared encoder
        pre_mean = grad_beta * (1 - d_mean * d_mean)
        pre_var = grad_omega * d_var * (1 - d_var)
        grad_w2 = pre_mean.t() @ encoded[0]
        grad_w3 = pre_var.t() @ encoded[1]
        grad_hidden = torch.stack((pre_mean @ w2, pre_var @ w3)) * (hidden > 0)
        grad_w1 = grad_hidden[0].t() @ mean + grad_hidden[1].t() @ key_var
        grad_mean = grad_hidden[0] @ w1
        grad_key_var = grad_hidden[1] @ w1
        # input: through (x − μ) directly, through the sum of squares (v and γ), through μ
        scale = omega * rstd
        grad_squares = -0.5 * omega * dot * rstd.pow(3) / divisor + grad_key_var / max(n - 1, 1)
        shift = (grad_mean - scale * grad_beta) / n
        grad_x = torch.addcmul(shift[:, :, None, None], g, scale[:, :, None, None])
        grad_x.addcmul_(centred, 2 * grad_squares[:, :, None, None])
        grad_params = (grad_w1, grad_w2, grad_w3, grad_omega.sum(0), grad_beta.sum(0))
        return grad_x, *grad_params, None, None
