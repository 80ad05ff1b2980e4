"""The pix2pix model: G, D, their optimizers, the training step, and the whole run's state.

One training step (``Pix2PixModel.optimize_parameters``):

1. ``fake_B = G(real_A)``
2. D step: ``loss_D = ½·[GAN(D(A, fake_B.detach()), fake) + GAN(D(A, real_B), real)]`` (+ λ_gp·GP for wgangp)
3. G step: ``loss_G = GAN(D(A, fake_B), real) + λ_L1·|fake_B − real_B|₁`` with D frozen
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn

from pix2pix_ilm.config import TrainConfig
from pix2pix_ilm.device import autocast, resolve_device, torch_at_least, with_device_defaults
from pix2pix_ilm.errors import UsageError, first_line
from pix2pix_ilm.models.losses import GANLoss, gradient_penalty
from pix2pix_ilm.models.networks import networks_from_config

# The wgangp interpolation weights come from their own random stream, the same in every torchrun process
# (each takes its slice of the global batch's weights), so N processes match one process on the whole batch.
GP_STREAM_SEED_OFFSET = 7_777


def learning_rate_factor(epoch: int, n_epochs: int, n_epochs_decay: int, schedule: str = "pix2pix") -> float:
    """The learning-rate factor of 1-based ``epoch`` (``--lr-schedule``). ``pix2pix``: the pix2pix code's
    ``LambdaLR``, stepped at the start of every epoch, so epoch e gets ``1 - max(0, e + 1 - n) / (d + 1)`` and
    the last epoch 0; ``delayed``: the same one epoch later."""
    shift = {"pix2pix": 1, "delayed": 0}[schedule]
    return 1.0 - max(0, epoch + shift - n_epochs) / float(n_epochs_decay + 1)


class Pix2PixModel:
    """G and D with Adam optimizers, the pix2pix step, and ``state_dict`` / ``load_state_dict`` of both."""

    def __init__(self, config: TrainConfig, device: torch.device | None = None) -> None:
        self.device = device or resolve_device(config.device)
        # train() resolves (and saves) these already; a config built in code may still say auto.
        self.config = config = with_device_defaults(config, self.device)
        self.generator, self.discriminator = networks_from_config(config)
        self.generator.to(self.device)
        self.discriminator.to(self.device)
        self.memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
        if config.channels_last:
            self.generator.to(memory_format=torch.channels_last)
            self.discriminator.to(memory_format=torch.channels_last)
        self.gan_loss = GANLoss(config.gan_mode)
        # The fused Adam kernel updates all tensors in one pass; torch has it for CPU and CUDA since 2.4. Fused,
        # it is capturable (its step counts on the device) and the learning rate is one tensor on the device,
        # set in place, so a captured CUDA graph reads it there: float64 on the CPU, the value a float gives;
        # float32 on CUDA, which its kernel reads.
        fused = self.device.type in ("cpu", "cuda") and torch_at_least(2, 4)
        lr_dtype = torch.float64 if self.device.type == "cpu" else torch.float32
        self.lr: float | torch.Tensor = (
            torch.tensor(config.lr, dtype=lr_dtype, device=self.device) if fused else config.lr
        )
        adam = {"lr": self.lr, "betas": (config.beta1, 0.999)}
        adam |= {"fused": True, "capturable": True} if fused else {}
        self.opt_g = torch.optim.Adam(self.generator.parameters(), **adam)
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), **adam)
        self.d_has_batch_norm = any(
            isinstance(m, nn.modules.batchnorm._BatchNorm) for m in self.discriminator.modules()
        )
        # Under torchrun the distributed wrappers replace these (see wrap_distributed); the raw modules above
        # own the weights and are what checkpoints store.
        self.g_forward: nn.Module = self._compiled(self.generator)
        self.d_forward: nn.Module = self._compiled(self.discriminator)
        self.d_frozen_forward: nn.Module = self.d_forward
        self.rank, self.world_size = 0, 1
        self.gp_generator = torch.Generator().manual_seed(config.seed + GP_STREAM_SEED_OFFSET)
        self.last_visuals: dict[str, torch.Tensor] = {}  # real_A / fake_B / real_B of the latest step

    def _compiled(self, module: nn.Module) -> nn.Module:
        """``module`` itself, or with ``--compile`` its ``torch.compile`` wrapper (which shares its weights)."""
        return torch.compile(module) if self.config.compile else module

    def wrap_distributed(self) -> None:
        """Wrap G and D in DistributedDataParallel (torchrun); gradients are averaged over processes."""
        import torch.distributed as dist
        from torch.nn.parallel import DistributedDataParallel as DDP

        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        ids = [self.device.index] if self.device.type == "cuda" else None
        if self.config.sync_batch:
            if self.device.type != "cuda":
                raise UsageError(
                    "--sync-batch needs CUDA devices (torch's SyncBatchNorm does not run on CPU)"
                )
            self.generator = nn.SyncBatchNorm.convert_sync_batchnorm(self.generator)
            self.discriminator = nn.SyncBatchNorm.convert_sync_batchnorm(self.discriminator)
        self.g_forward = self._compiled(DDP(self.generator, device_ids=ids))
        self.d_forward = self._compiled(DDP(self.discriminator, device_ids=ids))
        # In the G step D's weights are frozen: call the raw module so DDP expects no D gradients.
        self.d_frozen_forward = self._compiled(self.discriminator)

    def prepare(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)

    def set_learning_rate(self, epoch: int) -> float:
        """Set both optimizers' learning rate for 1-based ``epoch``; returns it."""
        config = self.config
        lr = config.lr * learning_rate_factor(
            epoch, config.n_epochs, config.n_epochs_decay, config.lr_schedule
        )
        if isinstance(self.lr, torch.Tensor):
            self.lr.fill_(lr)
        else:
            self.lr = lr
        for opt in (self.opt_g, self.opt_d):
            for group in opt.param_groups:
                group["lr"] = self.lr
        return lr

    def _set_d_requires_grad(self, requires_grad: bool) -> None:
        for p in self.discriminator.parameters():
            p.requires_grad_(requires_grad)

    def backward_D(self, real_pair: torch.Tensor, fake_pair: torch.Tensor) -> dict[str, torch.Tensor]:
        """D's loss ½·[GAN(D(A, fake_B), fake) + GAN(D(A, real_B), real)] (+ λ_gp·GP), back-propagated."""
        with self.autocast():
            if self.d_has_batch_norm:  # batch statistics would mix the pairs; other norms: one batch of two
                pred_fake = self.d_forward(fake_pair.detach())
                pred_real = self.d_forward(real_pair)
            else:
                pred_fake, pred_real = self.d_forward(torch.cat([fake_pair.detach(), real_pair], 0)).chunk(2)
        loss_d_fake = self.gan_loss(pred_fake, False)
        loss_d_real = self.gan_loss(pred_real, True)
        loss_d = (loss_d_fake + loss_d_real) * 0.5
        losses = {"D_real": loss_d_real.detach(), "D_fake": loss_d_fake.detach()}
        if self.config.gan_mode == "wgangp":
            local = real_pair.shape[0]
            alpha = torch.rand(local * self.world_size, generator=self.gp_generator)
            alpha = alpha[self.rank * local : (self.rank + 1) * local]
            with self.autocast():
                # Through D's uncompiled forward: torch.compile cannot differentiate twice.
                d_eager = getattr(self.d_forward, "_orig_mod", self.d_forward)
                penalty = gradient_penalty(d_eager, real_pair, fake_pair.detach(), alpha=alpha)
            loss_d = loss_d + self.config.lambda_gp * penalty
            losses["D_gp"] = penalty.detach()
        loss_d.backward()
        return losses

    def backward_G(
        self, fake_pair: torch.Tensor, fake_b: torch.Tensor, real_b: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """G's loss GAN(D(A, fake_B), real) + λ_L1·|fake_B − real_B|₁ with D frozen, back-propagated."""
        with self.autocast():
            pred_fake = self.d_frozen_forward(fake_pair)
        loss_g_gan = self.gan_loss(pred_fake, True)
        loss_g_l1 = torch.nn.functional.l1_loss(fake_b.float(), real_b.float()) * self.config.lambda_l1
        (loss_g_gan + loss_g_l1).backward()
        return {"G_GAN": loss_g_gan.detach(), "G_L1": loss_g_l1.detach()}

    def optimize_parameters(self, real_a: torch.Tensor, real_b: torch.Tensor) -> dict[str, torch.Tensor]:
        """One step: fake_B = G(real_A), one D update, one G update; returns the detached losses."""
        real_a, real_b = self.prepare(real_a), self.prepare(real_b)
        self.generator.train()
        self.discriminator.train()
        with self.autocast():
            fake_b = self.g_forward(real_a)
        fake_pair = torch.cat([real_a, fake_b], 1)
        real_pair = torch.cat([real_a, real_b], 1)

        self._set_d_requires_grad(True)
        self.opt_d.zero_grad(set_to_none=True)
        losses = self.backward_D(real_pair, fake_pair)
        self.opt_d.step()

        self._set_d_requires_grad(False)  # D's weight gradients are not needed for G's step
        self.opt_g.zero_grad(set_to_none=True)
        losses.update(self.backward_G(fake_pair, fake_b, real_b))
        self.opt_g.step()
        self._set_d_requires_grad(True)
        self.last_visuals = {"real_A": real_a.detach(), "fake_B": fake_b.detach(), "real_B": real_b.detach()}
        return losses

    def autocast(self) -> contextlib.AbstractContextManager:
        return autocast(self.device, self.config.precision)

    def state_dict(self) -> dict[str, Any]:
        state = {
            "generator": self.generator.state_dict(),
            "discriminator": self.discriminator.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
        }
        if self.config.gan_mode == "wgangp":
            state["rng_gp"] = self.gp_generator.get_state()
        return state

    def load_state_dict(self, state: dict[str, Any], *, with_optimizers: bool = True) -> None:
        try:
            self.generator.load_state_dict(state["generator"])
            if "discriminator" in state:
                self.discriminator.load_state_dict(state["discriminator"])
            if with_optimizers:
                for optimizer, key in ((self.opt_g, "opt_g"), (self.opt_d, "opt_d")):
                    optimizer.load_state_dict(state[key])
                    _state_like_parameters(optimizer)
                    for group in optimizer.param_groups:  # the one learning-rate tensor again
                        group["lr"] = self.lr
                if "rng_gp" in state:
                    self.gp_generator.set_state(state["rng_gp"])
        except (KeyError, RuntimeError, ValueError) as err:
            raise UsageError(f"checkpoint does not fit the configured networks: {first_line(err)}") from err


def _state_like_parameters(optimizer: torch.optim.Optimizer) -> None:
    """Give each moment its parameter's device and memory layout. A checkpoint saved in another layout
    (channels_last vs contiguous) keeps its strides through ``load_state_dict``, and the fused Adam kernel
    then pairs the wrong elements."""
    for group in optimizer.param_groups:
        for param in group["params"]:
            for key, value in optimizer.state.get(param, {}).items():
                if isinstance(value, torch.Tensor) and value.shape == param.shape:
                    optimizer.state[param][key] = torch.empty_like(param, dtype=value.dtype).copy_(value)
