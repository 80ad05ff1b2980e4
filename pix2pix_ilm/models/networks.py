"""Generators (U-Net, ResNet) and discriminators (PatchGAN, pixel), weight init, and builders.

A network receives a :class:`~pix2pix_ilm.models.norms.NormFactory` (``channels -> norm layer``), so it never
needs to know which norm it is given. Layers whose norm has its own affine shift (batch, group, layer, ILM)
use convolutions without bias, as pix2pix does for batch norm.
"""

from __future__ import annotations

import dataclasses
import re

import torch
from torch import nn

from pix2pix_ilm.errors import UsageError
from pix2pix_ilm.models.norm_specs import NORM_NAMES, NORMS, ILMOptions
from pix2pix_ilm.models.norms import ILMNorm, NormFactory

GENERATOR_HELP = "unet_<2^k> (unet_256, unet_128, ...), resnet_6blocks, resnet_9blocks"
DISCRIMINATOR_HELP = "basic, n_layers, pixel"


class Dropout(nn.Dropout):
    """``nn.Dropout`` whose mask is drawn in the contiguous layout, so one RNG state drops the same elements
    whatever the input's memory format (a channels_last run and its contiguous continuation take the same
    steps); on a contiguous CPU tensor the mask is ``nn.Dropout``'s."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        keep = torch.empty(x.shape, dtype=x.dtype, device=x.device).bernoulli_(1 - self.p)
        return x * keep.div_(1 - self.p)


class UnetBlock(nn.Module):
    """One level of the U-Net: down → (inner levels) → up, with the input concatenated to the output."""

    def __init__(
        self,
        outer_nc: int,
        inner_nc: int,
        norm: NormFactory,
        *,
        input_nc: int | None = None,
        submodule: nn.Module | None = None,
        outermost: bool = False,
        innermost: bool = False,
        dropout: bool = False,
    ) -> None:
        super().__init__()
        self.outermost = outermost
        input_nc = outer_nc if input_nc is None else input_nc
        bias = not norm.has_shift
        down_conv = nn.Conv2d(input_nc, inner_nc, kernel_size=4, stride=2, padding=1, bias=bias)
        if outermost:
            up_conv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1)
            layers: list[nn.Module] = [down_conv, submodule, nn.ReLU(True), up_conv, nn.Tanh()]
        elif innermost:
            up_conv = nn.ConvTranspose2d(inner_nc, outer_nc, kernel_size=4, stride=2, padding=1, bias=bias)
            layers = [nn.LeakyReLU(0.2, True), down_conv, nn.ReLU(True), up_conv, norm(outer_nc)]
        else:
            up_conv = nn.ConvTranspose2d(
                inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1, bias=bias
            )
            layers = [nn.LeakyReLU(0.2, True), down_conv, norm(inner_nc), submodule, nn.ReLU(True), up_conv]
            layers.append(norm(outer_nc))
            if dropout:
                layers.append(Dropout(0.5))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.outermost:
            return self.model(x)
        return torch.cat([x, self.model(x)], 1)


class UnetGenerator(nn.Module):
    """pix2pix U-Net with ``num_downs`` downsamplings (input size must be divisible by ``2**num_downs``).

    Dropout 0.5 sits in the ``num_downs - 5`` innermost decoder blocks at the widest width (3 for unet_256).
    """

    def __init__(
        self, input_nc: int, output_nc: int, num_downs: int, ngf: int, norm: NormFactory, dropout: bool = True
    ) -> None:
        super().__init__()
        if num_downs < 5:
            raise UsageError(f"a U-Net needs at least 5 downsamplings (unet_32), got {num_downs}")
        self.num_downs = num_downs
        block = UnetBlock(ngf * 8, ngf * 8, norm, innermost=True)
        for _ in range(num_downs - 5):
            block = UnetBlock(ngf * 8, ngf * 8, norm, submodule=block, dropout=dropout)
        block = UnetBlock(ngf * 4, ngf * 8, norm, submodule=block)
        block = UnetBlock(ngf * 2, ngf * 4, norm, submodule=block)
        block = UnetBlock(ngf, ngf * 2, norm, submodule=block)
        self.model = UnetBlock(output_nc, ngf, norm, input_nc=input_nc, submodule=block, outermost=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def _padded_conv_norm_relu(
    in_ch: int, out_ch: int, kernel: int, norm: NormFactory, bias: bool
) -> list[nn.Module]:
    """Reflection padding that keeps the size, a ``kernel``×``kernel`` convolution, norm, ReLU."""
    return [
        nn.ReflectionPad2d(kernel // 2),
        nn.Conv2d(in_ch, out_ch, kernel_size=kernel, bias=bias),
        norm(out_ch),
        nn.ReLU(True),
    ]


class ResnetBlock(nn.Module):
    """Residual block: reflect-pad conv → norm → ReLU (→ dropout) → reflect-pad conv → norm, plus the input."""

    def __init__(self, dim: int, norm: NormFactory, dropout: bool) -> None:
        super().__init__()
        bias = not norm.has_shift
        layers = _padded_conv_norm_relu(dim, dim, 3, norm, bias)
        if dropout:
            layers.append(Dropout(0.5))
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, kernel_size=3, bias=bias), norm(dim)]
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class ResnetGenerator(nn.Module):
    """Johnson-style ResNet generator: 2 downsamplings, ``n_blocks`` residual blocks, 2 upsamplings."""

    def __init__(
        self, input_nc: int, output_nc: int, ngf: int, norm: NormFactory, n_blocks: int, dropout: bool = False
    ) -> None:
        super().__init__()
        bias = not norm.has_shift
        layers = _padded_conv_norm_relu(input_nc, ngf, 7, norm, bias)
        for i in range(2):
            mult = 2**i
            layers += [
                nn.Conv2d(ngf * mult, ngf * mult * 2, kernel_size=3, stride=2, padding=1, bias=bias),
                norm(ngf * mult * 2),
                nn.ReLU(True),
            ]
        layers += [ResnetBlock(ngf * 4, norm, dropout) for _ in range(n_blocks)]
        for i in range(2):
            mult = 2 ** (2 - i)
            layers += [
                nn.ConvTranspose2d(
                    ngf * mult,
                    ngf * mult // 2,
                    kernel_size=3,
                    stride=2,
                    padding=1,
                    output_padding=1,
                    bias=bias,
                ),
                norm(ngf * mult // 2),
                nn.ReLU(True),
            ]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, kernel_size=7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class NLayerDiscriminator(nn.Module):
    """PatchGAN with ``n_layers`` strided convolutions (3 → 70×70 receptive field); outputs logits."""

    def __init__(self, input_nc: int, ndf: int, norm: NormFactory, n_layers: int = 3) -> None:
        super().__init__()
        bias = not norm.has_shift
        layers: list[nn.Module] = [
            nn.Conv2d(input_nc, ndf, kernel_size=4, stride=2, padding=1),
            nn.LeakyReLU(0.2, True),
        ]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < n_layers else 1
            layers += [
                nn.Conv2d(ndf * prev, ndf * mult, kernel_size=4, stride=stride, padding=1, bias=bias),
                norm(ndf * mult),
                nn.LeakyReLU(0.2, True),
            ]
        layers.append(nn.Conv2d(ndf * mult, 1, kernel_size=4, stride=1, padding=1))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class PixelDiscriminator(nn.Module):
    """1×1 PatchGAN: classifies every pixel independently."""

    def __init__(self, input_nc: int, ndf: int, norm: NormFactory) -> None:
        super().__init__()
        self.model = nn.Sequential(
            nn.Conv2d(input_nc, ndf, kernel_size=1),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf, ndf * 2, kernel_size=1, bias=not norm.has_shift),
            norm(ndf * 2),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * 2, 1, kernel_size=1, bias=not norm.has_shift),  # as the reference's
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def unet_depth(net_g: str) -> int | None:
    """Number of downsamplings of ``unet_<2^k>`` (k), or None if ``net_g`` is not a U-Net name."""
    match = re.fullmatch(r"unet_(\d+)", net_g)
    if not match:
        return None
    size = int(match.group(1))
    if size < 32 or size & (size - 1):
        raise UsageError(
            f"U-Net name {net_g!r}: the size must be a power of two >= 32 (unet_32 ... unet_256 ...)"
        )
    return size.bit_length() - 1


def build_generator(
    net_g: str, input_nc: int, output_nc: int, ngf: int, norm: NormFactory, dropout: bool = True
) -> nn.Module:
    """Generator by name: ``unet_<2^k>``, ``resnet_6blocks`` or ``resnet_9blocks``."""
    depth = unet_depth(net_g)
    if depth is not None:
        return UnetGenerator(input_nc, output_nc, depth, ngf, norm, dropout=dropout)
    match = re.fullmatch(r"resnet_(\d+)blocks", net_g)
    if match:
        return ResnetGenerator(input_nc, output_nc, ngf, norm, int(match.group(1)), dropout=dropout)
    raise UsageError(f"unknown generator {net_g!r}; valid: {GENERATOR_HELP}")


def build_discriminator(
    net_d: str, input_nc: int, ndf: int, norm: NormFactory, n_layers: int = 3
) -> nn.Module:
    """Discriminator by name: ``basic`` (3-layer PatchGAN), ``n_layers`` or ``pixel``."""
    if net_d == "basic":
        return NLayerDiscriminator(input_nc, ndf, norm, n_layers=3)
    if net_d == "n_layers":
        if n_layers < 1:
            raise UsageError(f"--n-layers-D must be >= 1, got {n_layers}")
        return NLayerDiscriminator(input_nc, ndf, norm, n_layers=n_layers)
    if net_d == "pixel":
        return PixelDiscriminator(input_nc, ndf, norm)
    raise UsageError(f"unknown discriminator {net_d!r}; valid: {DISCRIMINATOR_HELP}")


def init_weights(
    net: nn.Module, init_type: str = "normal", gain: float = 0.02, ilm_init: str = "pix2pix"
) -> nn.Module:
    """pix2pix initialization: conv and linear weights (ILM's W1–W3 included) from ``init_type``,
    biases 0; batch/group norm scales N(1, gain), shifts 0. ILM's B_ω, B_β keep their 1 / 0 init.
    ``ilm_init="pytorch"`` gives ILM's W1–W3 PyTorch's default initialisation instead."""

    def init(module: nn.Module) -> None:
        if isinstance(module, ILMNorm):  # visited after its linears (apply is post-order)
            if ilm_init == "pytorch":
                module.reset_meta_parameters()
        elif isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            if init_type == "normal":
                nn.init.normal_(module.weight, 0.0, gain)
            elif init_type == "xavier":
                nn.init.xavier_normal_(module.weight, gain=gain)
            elif init_type == "kaiming":
                nn.init.kaiming_normal_(module.weight, a=0, mode="fan_in")
            elif init_type == "orthogonal":
                nn.init.orthogonal_(module.weight, gain=gain)
            else:
                raise UsageError(
                    f"unknown init type {init_type!r}; valid: normal, xavier, kaiming, orthogonal"
                )
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)) and module.weight is not None:
            nn.init.normal_(module.weight, 1.0, gain)
            nn.init.zeros_(module.bias)

    net.apply(init)
    return net


def norms_from_config(config) -> tuple[NormFactory, NormFactory]:
    """G's and D's norm factories from a :class:`~pix2pix_ilm.config.TrainConfig`."""
    ilm = ILMOptions(
        group_size=config.ilm_group_size,
        mean_activation=config.ilm_mean_activation,
        var_activation=config.ilm_var_activation,
        variance=config.ilm_variance,
        hidden_rule=config.ilm_hidden,
    )
    # wgangp's penalty differentiates D twice, which the fused ILM function refuses: D keeps the general graph.
    ilm_d = dataclasses.replace(ilm, fused=config.gan_mode != "wgangp")
    return NormFactory(config.netG_norm, config.num_groups, ilm), NormFactory(
        config.netD_norm, config.num_groups, ilm_d
    )


def generator_from_config(config) -> nn.Module:
    """The generator of a :class:`~pix2pix_ilm.config.TrainConfig`, not initialized (weights as torch
    creates them); build it under ``torch.device("meta")`` to load a checkpoint without any init work."""
    try:
        return build_generator(
            config.netG,
            config.input_nc,
            config.output_nc,
            config.ngf,
            norms_from_config(config)[0],
            dropout=not config.no_dropout,
        )
    except ValueError as err:  # channel counts a norm cannot divide, e.g. ILM K that does not divide ngf
        raise UsageError(str(err)) from err


def discriminator_from_config(config) -> nn.Module:
    """The discriminator of a :class:`~pix2pix_ilm.config.TrainConfig`, not initialized. It sees the input and
    output images concatenated, so it has ``input_nc + output_nc`` input channels."""
    try:
        return build_discriminator(
            config.netD,
            config.input_nc + config.output_nc,
            config.ndf,
            norms_from_config(config)[1],
            n_layers=config.n_layers_D,
        )
    except ValueError as err:
        raise UsageError(str(err)) from err


def networks_from_config(config) -> tuple[nn.Module, nn.Module]:
    """Build and initialize (G, D) from a :class:`~pix2pix_ilm.config.TrainConfig`."""
    generator, discriminator = generator_from_config(config), discriminator_from_config(config)
    init_weights(generator, config.init_type, config.init_gain, config.ilm_init)
    init_weights(discriminator, config.init_type, config.init_gain, config.ilm_init)
    return generator, discriminator


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def count_ilm_layers(module: nn.Module) -> int:
    """Number of ILM layers in a network."""
    return sum(isinstance(m, ILMNorm) for m in module.modules())


def parameter_table(
    net_g: str = "unet_256", net_d: str = "basic", *, ngf: int = 64, ndf: int = 64, ilm_group_size: int = 1
) -> str:
    """Markdown table of G and D parameter counts for every norm, with the ILM increment over its base."""
    counts: dict[str, tuple[int, int]] = {}
    for name in NORM_NAMES:
        norm = NormFactory(name, ilm=ILMOptions(group_size=ilm_group_size))
        g = build_generator(net_g, 3, 3, ngf, norm)
        d = build_discriminator(net_d, 6, ndf, norm)
        counts[name] = (count_parameters(g), count_parameters(d))
    lines = [
        f"Parameters of G = {net_g} (ngf {ngf}) and D = {net_d} (ndf {ndf}), ILM key-group size {ilm_group_size}",
        "",
        "| norm | G params | D params | ILM increment G | ILM increment D |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, (g, d) in counts.items():
        base = NORMS[name].ilm_over
        if base is not None:
            bg, bd = counts[base]
            inc = f"+{g - bg:,} (+{100 * (g - bg) / bg:.2f}%) | +{d - bd:,} (+{100 * (d - bd) / bd:.2f}%)"
        else:
            inc = "– | –"
        lines.append(f"| {name} | {g:,} | {d:,} | {inc} |")
    return "\n".join(lines)
