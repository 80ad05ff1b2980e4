"""GAN objectives (vanilla, lsgan, wgangp) and the WGAN-GP gradient penalty."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pix2pix_ilm.errors import UsageError


class GANLoss(nn.Module):
    """Adversarial loss on discriminator logits: ``vanilla`` (BCE with logits, the pix2pix paper's), ``lsgan``
    (MSE to 1 / 0) or ``wgangp`` (−mean(D) for real, mean(D) for fake; add :func:`gradient_penalty` for D)."""

    def __init__(self, mode: str = "vanilla") -> None:
        super().__init__()
        if mode not in ("vanilla", "lsgan", "wgangp"):
            raise UsageError(f"unknown GAN mode {mode!r}; valid: vanilla, lsgan, wgangp")
        self.mode = mode

    def forward(self, logits: torch.Tensor, target_is_real: bool) -> torch.Tensor:
        logits = logits.float()
        if self.mode == "wgangp":
            return -logits.mean() if target_is_real else logits.mean()
        target = torch.ones_like(logits) if target_is_real else torch.zeros_like(logits)
        if self.mode == "vanilla":
            return F.binary_cross_entropy_with_logits(logits, target)
        return F.mse_loss(logits, target)


def gradient_penalty(
    discriminator: nn.Module,
    real: torch.Tensor,
    fake: torch.Tensor,
    generator: torch.Generator | None = None,
    alpha: torch.Tensor | None = None,
) -> torch.Tensor:
    """WGAN-GP penalty ``E[(‖∇D(x̂)‖₂ − 1)²]`` on ``x̂ = α·real + (1 − α)·fake``, one ``alpha`` per sample
    (default: uniform draws from ``generator``)."""
    if alpha is None:
        alpha = torch.rand(real.shape[0], generator=generator, device=real.device)
    # non_blocking: a blocking copy from the host would wait for the device at every step.
    alpha = alpha.to(device=real.device, dtype=real.dtype, non_blocking=True).reshape(-1, 1, 1, 1)
    mixed = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    scores = discriminator(mixed)
    (grads,) = torch.autograd.grad(scores.sum(), mixed, create_graph=True)
    return ((grads.flatten(1).norm(2, dim=1) - 1) ** 2).mean()
