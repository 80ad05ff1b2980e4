"""The pix2pix model's step: --compile under torchrun, also with the WGAN-GP penalty."""

from __future__ import annotations

import dataclasses

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from pix2pix_ilm.config import TrainConfig
from pix2pix_ilm.models.pix2pix import Pix2PixModel


def test_compile_under_torchrun_and_with_the_gradient_penalty(tmp_path, monkeypatch):
    """--compile under DDP compiles the DDP-wrapped G and D (torch's recommended order) and the frozen D; the
    penalty, which differentiates D twice, goes through D uncompiled. The step equals the plain eager one.

    A process group of one gloo process; torch.compile runs its "aot_eager" backend: the same tracing and
    autograd as the default one (which refuses double backward alike), without generating kernels.
    """
    compiled = []
    real_compile = torch.compile

    def compile_aot_eager(module, **kwargs):
        compiled.append(module)
        return real_compile(module, backend="aot_eager")

    monkeypatch.setattr(torch, "compile", compile_aot_eager)
    config = TrainConfig(
        name="c",
        dataroot="d",
        netG="unet_32",
        ngf=4,
        ndf=4,
        load_size=36,
        crop_size=32,
        no_dropout=True,
        device="cpu",
        gan_mode="wgangp",
        compile=True,
    )
    gen = torch.Generator().manual_seed(0)
    real_a, real_b = (torch.rand(2, 3, 32, 32, generator=gen) * 2 - 1 for _ in range(2))
    torch.manual_seed(1)
    plain = Pix2PixModel(dataclasses.replace(config, compile=False), torch.device("cpu"))
    expected = plain.optimize_parameters(real_a, real_b)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'group'}", rank=0, world_size=1)
    try:
        torch.manual_seed(1)
        model = Pix2PixModel(config, torch.device("cpu"))
        compiled.clear()
        model.wrap_distributed()
        assert [type(m) for m in compiled] == [
            DistributedDataParallel,
            DistributedDataParallel,
            type(model.discriminator),
        ]
        assert compiled[0].module is model.generator and compiled[1].module is model.discriminator
        assert compiled[2] is model.discriminator
        assert [f._orig_mod for f in (model.g_forward, model.d_forward, model.d_frozen_forward)] == compiled
        losses = model.optimize_parameters(real_a, real_b)
    finally:
        dist.destroy_process_group()
    assert losses.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.allclose(losses[key], value, rtol=1e-5, atol=1e-6), key
    for part in ("generator", "discriminator"):
        for key, value in getattr(plain, part).state_dict().items():
            assert torch.allclose(getattr(model, part).state_dict()[key], value, rtol=1e-5, atol=1e-6), key
