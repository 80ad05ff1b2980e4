"""Generators and discriminators built through the norm factory."""

from __future__ import annotations

import math

import pytest
import torch

from pix2pix_ilm.config import TrainConfig
from pix2pix_ilm.errors import UsageError
from pix2pix_ilm.models.networks import (
    Dropout,
    build_discriminator,
    build_generator,
    count_ilm_layers,
    count_parameters,
    networks_from_config,
    unet_depth,
)
from pix2pix_ilm.models.norm_specs import NORM_NAMES
from pix2pix_ilm.models.norms import ILMNorm, NormFactory
from pix2pix_ilm.models.pix2pix import Pix2PixModel


def test_unet_depth_from_name():
    assert unet_depth("unet_256") == 8
    assert unet_depth("unet_128") == 7
    assert unet_depth("unet_1024") == 10
    assert unet_depth("resnet_9blocks") is None
    with pytest.raises(UsageError, match="power of two"):
        unet_depth("unet_100")


def test_pix2pix_reference_sizes():
    # The published pix2pix sizes with batch norm: G 54.414 M parameters, D 2.769 M.
    g = build_generator("unet_256", 3, 3, 64, NormFactory("batch"))
    d = build_discriminator("basic", 6, 64, NormFactory("batch"))
    assert round(count_parameters(g) / 1e6, 3) == 54.414
    assert round(count_parameters(d) / 1e6, 3) == 2.769


def test_unet_dropout_and_receptive_field():
    g = build_generator("unet_256", 3, 3, 8, NormFactory("instance"))
    assert sum(isinstance(m, torch.nn.Dropout) for m in g.modules()) == 3
    d = build_discriminator("basic", 6, 8, NormFactory("instance"))
    assert d(torch.randn(1, 6, 256, 256)).shape == (1, 1, 30, 30)  # 70x70 PatchGAN on 256x256
    assert build_discriminator("pixel", 6, 8, NormFactory("instance"))(torch.randn(1, 6, 16, 16)).shape == (
        1,
        1,
        16,
        16,
    )


def test_ilm_layers_from_the_factory():
    g = build_generator("unet_64", 3, 3, 8, NormFactory("ilm_in"))
    layers = [m for m in g.modules() if isinstance(m, ILMNorm)]
    assert layers and all(layer.key_group_size == 1 for layer in layers)
    assert count_ilm_layers(g) == len(layers)


@pytest.mark.parametrize("net_g", ["unet_32", "resnet_6blocks"])
@pytest.mark.parametrize("net_d", ["basic", "n_layers", "pixel"])
@pytest.mark.parametrize("norm", NORM_NAMES)
def test_every_combination_trains_one_step(net_g, net_d, norm):
    config = TrainConfig(
        dataroot="unused",
        name="t",
        netG=net_g,
        netD=net_d,
        n_layers_D=2,
        ngf=4,
        ndf=4,
        netG_norm=norm,
        netD_norm=norm,
        crop_size=32,
        num_groups=4,
        device="cpu",
    )
    torch.manual_seed(0)
    model = Pix2PixModel(config)
    nets = (model.generator, model.discriminator)
    before = [[p.detach().clone() for p in net.parameters()] for net in nets]
    real_a, real_b = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    losses = {k: float(v) for k, v in model.optimize_parameters(real_a, real_b).items()}
    # At N(0, 0.02) init D's logits are near 0, so each BCE term is near log 2, and G's output is near 0, so
    # G_L1 = 100 * mean |G(A) - B| is near 100 * mean |B| (about 50 for B uniform in [-1, 1]).
    assert set(losses) == {"G_GAN", "G_L1", "D_real", "D_fake"}
    for name in ("G_GAN", "D_real", "D_fake"):
        assert abs(losses[name] - math.log(2)) < 0.25, (name, losses[name])
    assert losses["G_L1"] == pytest.approx(100 * float(real_b.abs().mean()), rel=0.1)
    # Adam's first step moves each weight by lr * g / (|g| + eps): at most lr = 2e-4, the full lr where the
    # gradient is not tiny; both networks take it.
    for net, old in zip(nets, before, strict=True):
        moved = torch.cat(
            [(p.detach() - q).abs().flatten() for p, q in zip(net.parameters(), old, strict=True)]
        )
        assert float(moved.max()) == pytest.approx(2e-4, rel=1e-3)


def test_init_types_and_errors():
    for init in ("normal", "xavier", "kaiming", "orthogonal"):
        config = TrainConfig(dataroot="x", name="t", netG="unet_32", ngf=4, ndf=4, init_type=init)
        g, _ = networks_from_config(config)
        assert torch.isfinite(next(g.parameters())).all()
    with pytest.raises(UsageError, match="unknown generator"):
        networks_from_config(TrainConfig(dataroot="x", name="t", netG="vgg"))
    with pytest.raises(UsageError, match="unknown discriminator"):
        networks_from_config(TrainConfig(dataroot="x", name="t", netD="huge"))
    with pytest.raises(UsageError, match="unknown norm"):
        NormFactory("spectral")
    with pytest.raises(UsageError, match="must divide"):
        networks_from_config(
            TrainConfig(dataroot="x", name="t", netG="unet_32", ngf=6, netG_norm="ilm_in", ilm_group_size=4)
        )


def test_ilm_init_pix2pix_or_pytorch():
    """pix2pix's N(0, 0.02) makes the meta-network almost constant (ω ≈ 1.5, β ≈ 0 for every input);
    ``ilm_init="pytorch"`` keeps PyTorch's default U(±1/sqrt(fan_in)) as the authors' code does."""
    spreads = {}
    for ilm_init in ("pix2pix", "pytorch"):
        torch.manual_seed(0)
        config = TrainConfig(
            dataroot="x", name="t", netG="unet_32", ngf=8, ndf=8, netG_norm="ilm_in", ilm_init=ilm_init
        )
        generator, _ = networks_from_config(config)
        layers = [m for m in generator.modules() if isinstance(m, ILMNorm)]
        weights = [lin.weight for m in layers for lin in (m.encoder, m.mean_decoder, m.var_decoder)]
        for w in weights:
            assert w.abs().max() <= 1 / w.shape[1] ** 0.5
        std = torch.cat([w.detach().flatten() for w in weights]).std().item()
        layer = layers[0]
        stats = torch.rand(64, layer.num_key_groups) * 4  # key-group variances of 64 inputs
        omega = torch.sigmoid(layer.var_decoder(torch.relu(layer.encoder(stats)))) + 1
        spreads[ilm_init] = (std, omega.min().item(), omega.max().item())
        assert all(float(m.weight_bias.min()) == 1 == float(m.weight_bias.max()) for m in layers)
    std, low, high = spreads["pix2pix"]
    assert 0.01 < std < 0.03 and 1.45 < low <= high < 1.55
    std, low, high = spreads["pytorch"]
    assert std > 0.1 and high - low > 0.1


def test_the_pixel_discriminator_has_the_reference_parameter_count():
    # The reference drops both biases after the first layer with batch norm: 448 + 8192 + 256 + 128.
    assert count_parameters(build_discriminator("pixel", 6, 64, NormFactory("batch"))) == 9_024
    # With instance norm (no affine) it keeps them: 448 + 8320 + 129.
    assert count_parameters(build_discriminator("pixel", 6, 64, NormFactory("instance"))) == 8_897


def test_dropout_masks_do_not_depend_on_the_memory_layout():
    x = torch.randn(2, 16, 8, 8)
    layer = Dropout(0.5).train()
    outputs = []
    for memory_format in (torch.contiguous_format, torch.channels_last):
        torch.manual_seed(3)
        outputs.append(layer(x.contiguous(memory_format=memory_format)))
    assert torch.equal(outputs[0], outputs[1])
    kept = outputs[0] != 0
    assert 0.3 < kept.float().mean() < 0.7 and torch.equal(outputs[0][kept], 2 * x[kept])
    torch.manual_seed(3)  # on a contiguous CPU tensor, the very mask of torch's own dropout
    assert torch.equal(torch.nn.Dropout(0.5)(x), outputs[0])
    assert torch.equal(layer.eval()(x), x)
    # A U-Net whose norm keeps channels_last (instance norm returns contiguous tensors): torch's dropout would
    # make these differ by about 0.5.
    g = build_generator("unet_64", 3, 3, 4, NormFactory("batch")).train()
    x = torch.randn(2, 3, 64, 64)
    results = []
    for memory_format in (torch.contiguous_format, torch.channels_last):
        torch.manual_seed(5)
        net = g.to(memory_format=memory_format)
        results.append(net(x.contiguous(memory_format=memory_format)).detach())
    assert torch.allclose(results[0], results[1], atol=1e-5)
