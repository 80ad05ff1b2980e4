"""The GAN objectives and the WGAN-GP gradient penalty, against hand computations."""

from __future__ import annotations

import torch

from pix2pix_ilm.models.losses import GANLoss, gradient_penalty


def _square_d(weights: torch.Tensor):
    """D(x) = Σ w·x² per sample, so that ∇ₓD = 2·w·x by hand."""
    return lambda x: (weights * x * x).sum(dim=(1, 2, 3))


def test_gradient_penalty_equals_the_hand_computation():
    gen = torch.Generator().manual_seed(0)
    w, real, fake = (
        torch.randn(shape, generator=gen, dtype=torch.float64)
        for shape in ((2, 3, 3), (4, 2, 3, 3), (4, 2, 3, 3))
    )
    alpha = torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=torch.float64)
    expected = (
        sum(
            (torch.linalg.vector_norm(2 * w * (a * r + (1 - a) * f)) - 1) ** 2
            for a, r, f in zip(alpha, real, fake, strict=True)
        )
        / 4
    )
    assert torch.allclose(
        gradient_penalty(_square_d(w), real, fake, alpha=alpha), expected, rtol=1e-12, atol=0
    )
    # Without alpha, one weight per sample is drawn from the given generator.
    drawn = gradient_penalty(_square_d(w), real, fake, generator=torch.Generator().manual_seed(7))
    alpha7 = torch.rand(4, generator=torch.Generator().manual_seed(7))
    assert torch.equal(drawn, gradient_penalty(_square_d(w), real, fake, alpha=alpha7))
    # It is part of D's loss, so it must be differentiable in D's weights: autograd matches finite differences.
    weights = w.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda p: gradient_penalty(_square_d(p), real, fake, alpha=alpha), (weights,)
    )


def test_gan_objectives_on_known_logits():
    logits = torch.tensor([[1.0, -3.0], [2.0, 4.0]])
    assert GANLoss("wgangp")(logits, True).item() == -1.0 and GANLoss("wgangp")(logits, False).item() == 1.0
    assert GANLoss("lsgan")(logits, True).item() == (0 + 16 + 1 + 9) / 4
    expected = torch.nn.functional.softplus(-logits).mean()  # -log(sigmoid(x)) for real targets
    assert torch.allclose(GANLoss("vanilla")(logits, True), expected)
