"""The eager baseline: the textbook pix2pix step and test loop, written as plainly as junyanz's code."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from pix2pix_ilm.config import TrainConfig
from pix2pix_ilm.cpu_speed import set_small_input_matmul
from pix2pix_ilm.models.networks import networks_from_config


class BaselinePix2Pix:
    """G, D and their Adam optimizers, as junyanz's ``Pix2PixModel.__init__`` sets them up."""

    def __init__(self, config: TrainConfig, device: torch.device) -> None:
        self.device = device
        self.generator, self.discriminator = networks_from_config(config)  # same architecture and init
        for net in (self.generator, self.discriminator):  # torch's own convolution kernels everywhere
            set_small_input_matmul(net, False)
        self.generator.to(device)
        self.discriminator.to(device)
        self.criterion_gan = nn.BCEWithLogitsLoss()
        self.criterion_l1 = nn.L1Loss()
        self.lambda_l1 = 100.0
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=2e-4, betas=(0.5, 0.999))
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=2e-4, betas=(0.5, 0.999))

    def gan_loss(self, prediction: torch.Tensor, target_is_real: bool) -> torch.Tensor:
        target = torch.tensor(1.0 if target_is_real else 0.0, device=prediction.device).expand_as(prediction)
        return self.criterion_gan(prediction, target)


def baseline_train_step(nets: BaselinePix2Pix, real_a: torch.Tensor, real_b: torch.Tensor) -> dict:
    """One textbook pix2pix step (junyanz ``optimize_parameters``); returns the detached losses."""
    real_a, real_b = real_a.to(nets.device), real_b.to(nets.device)
    fake_b = nets.generator(real_a)

    # update D
    for p in nets.discriminator.parameters():
        p.requires_grad = True
    nets.opt_d.zero_grad()
    fake_ab = torch.cat((real_a, fake_b), 1)
    loss_d_fake = nets.gan_loss(nets.discriminator(fake_ab.detach()), False)
    real_ab = torch.cat((real_a, real_b), 1)
    loss_d_real = nets.gan_loss(nets.discriminator(real_ab), True)
    loss_d = (loss_d_fake + loss_d_real) * 0.5
    loss_d.backward()
    nets.opt_d.step()

    # update G (D requires no gradients when optimizing G)
    for p in nets.discriminator.parameters():
        p.requires_grad = False
    nets.opt_g.zero_grad()
    fake_ab = torch.cat((real_a, fake_b), 1)
    loss_g_gan = nets.gan_loss(nets.discriminator(fake_ab), True)
    loss_g_l1 = nets.criterion_l1(fake_b, real_b) * nets.lambda_l1
    loss_g = loss_g_gan + loss_g_l1
    loss_g.backward()
    nets.opt_g.step()
    losses = {"G_GAN": loss_g_gan, "G_L1": loss_g_l1, "D_real": loss_d_real, "D_fake": loss_d_fake}
    return {name: value.detach() for name, value in losses.items()}


def baseline_test(
    checkpoint: Path, config: TrainConfig, files: list[Path], out_dir: Path, device: torch.device
) -> None:
    """Plain inference: load G, then per image PIL decode → tensor → G (eval) → uint8 → PNG (3 per image)."""
    state = torch.load(checkpoint, map_location=device, weights_only=True)
    generator, _ = networks_from_config(config)
    set_small_input_matmul(generator, False)
    generator.load_state_dict(state["generator"])
    generator.to(device).eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in files:
        image = Image.open(path).convert("RGB")
        width, height = image.size
        halves = image.crop((0, 0, width // 2, height)), image.crop((width // 2, 0, width, height))
        real_a, real_b = (
            torch.from_numpy(np.array(h)).permute(2, 0, 1).float() / 127.5 - 1.0 for h in halves
        )
        with torch.no_grad():
            fake_b = generator(real_a.unsqueeze(0).to(device))[0].cpu()
        for label, tensor in (("real_A", real_a), ("fake_B", fake_b), ("real_B", real_b)):
            array = ((tensor.clamp(-1, 1).permute(1, 2, 0).numpy() + 1) / 2 * 255).round().astype(np.uint8)
            Image.fromarray(array).save(out_dir / f"{path.stem}_{label}.png")
