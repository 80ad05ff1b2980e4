"""The fused ILM+IN (K = 1) gives ILMNorm's general graph's numbers, forward and every gradient."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from pix2pix_ilm.models.ilm_fused import ILMInstanceK1
from pix2pix_ilm.models.norms import ILMNorm

SHAPES = [(2, 8, 4, 4), (1, 8, 1, 1), (2, 16, 3, 5)]


def _layer(channels: int, variance: str) -> ILMNorm:
    torch.manual_seed(0)
    layer = ILMNorm(channels, key_group_size=1, variance=variance).double()
    layer.reset_meta_parameters()  # PyTorch's init: a meta-network whose output depends on the input
    with torch.no_grad():
        layer.weight_bias.add_(0.1 * torch.randn(channels, dtype=torch.double))
        layer.bias_bias.add_(0.1 * torch.randn(channels, dtype=torch.double))
    return layer


def _run(layer: ILMNorm, x: torch.Tensor, grad: torch.Tensor, fused: bool) -> list[torch.Tensor]:
    layer.fused = fused
    layer.zero_grad()
    x.grad = None
    out = layer(x)
    (out * grad).sum().backward()
    return [out.detach(), x.grad.clone(), *(p.grad.clone() for p in layer.parameters())]


LAYOUTS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("variance", ["biased", "unbiased"])
@pytest.mark.parametrize("shape", SHAPES)
def test_fused_equals_the_general_graph(shape, variance, layout):
    layer = _layer(shape[1], variance)
    x = torch.randn(shape, dtype=torch.double).to(memory_format=LAYOUTS[layout]).requires_grad_()
    grad = torch.randn(shape, dtype=torch.double).to(memory_format=LAYOUTS[layout])
    for fused, general in zip(_run(layer, x, grad, True), _run(layer, x, grad, False), strict=True):
        torch.testing.assert_close(fused, general, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("variance", ["biased", "unbiased"])
def test_fused_backward_passes_gradcheck(variance, layout):
    layer = _layer(6, variance)
    x = torch.randn(2, 6, 3, 3, dtype=torch.double).to(memory_format=LAYOUTS[layout]).requires_grad_()
    assert x.is_contiguous(memory_format=LAYOUTS[layout])
    params = (layer.encoder.weight, layer.mean_decoder.weight, layer.var_decoder.weight)
    params += (layer.weight_bias, layer.bias_bias)
    unbiased = variance == "unbiased"
    assert torch.autograd.gradcheck(lambda *t: ILMInstanceK1.apply(*t, layer.eps, unbiased), (x, *params))


def test_the_fused_path_is_taken_only_where_it_applies():
    x = torch.randn(1, 8, 4, 4)
    assert ILMNorm(8, key_group_size=1)._fused(x)
    assert not ILMNorm(8, key_group_size=2)._fused(x)  # key groups of several channels
    assert not ILMNorm(8, "group", key_group_size=1, num_groups=4)._fused(x)
    assert not ILMNorm(8, key_group_size=1, mean_activation="identity")._fused(x)
    # The GPU defaults, bf16 autocast and channels_last: fp32 inside the layer, fused, layout kept.
    x_cl = x.bfloat16().to(memory_format=torch.channels_last).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = ILMNorm(8, key_group_size=1)(x_cl)
    assert out.dtype == torch.bfloat16 and out.is_contiguous(memory_format=torch.channels_last)
    assert type(out.grad_fn.next_functions[0][0]).__name__ == "ILMInstanceK1Backward"
    out.sum().backward()
    assert x_cl.grad.is_contiguous(memory_format=torch.channels_last)
    out = ILMNorm(8, key_group_size=1)(x)
    out.relu_()  # a new tensor: the next layer's in-place activation is allowed


def test_a_second_derivative_is_refused_not_wrong():
    layer = _layer(4, "biased")
    x = torch.randn(1, 4, 3, 3, dtype=torch.double, requires_grad=True)
    (grad_x,) = torch.autograd.grad(layer(x).pow(2).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        grad_x.sum().backward()


def test_wgangp_keeps_the_general_graph_in_d_and_its_penalty_matches():
    """The gradient penalty differentiates D twice, so D's ILM layers use the general graph there."""
    import dataclasses

    from pix2pix_ilm.config import TrainConfig
    from pix2pix_ilm.models.pix2pix import Pix2PixModel

    config = TrainConfig(
        name="w", dataroot="d", netG="unet_32", ngf=4, ndf=4, load_size=36, crop_size=32, device="cpu",
        netG_norm="ilm_in", netD_norm="ilm_in", gan_mode="wgangp", no_dropout=True,
    )  # fmt: skip
    gen = torch.Generator().manual_seed(0)
    real_a, real_b = (torch.rand(1, 3, 32, 32, generator=gen) * 2 - 1 for _ in range(2))
    torch.manual_seed(1)
    model = Pix2PixModel(config, torch.device("cpu"))
    d_layers = [m for m in model.discriminator.modules() if isinstance(m, ILMNorm)]
    assert d_layers and not any(m.fused for m in d_layers)
    assert all(m.fused for m in model.generator.modules() if isinstance(m, ILMNorm))
    losses = model.optimize_parameters(real_a, real_b)
    torch.manual_seed(1)
    reference = Pix2PixModel(dataclasses.replace(config), torch.device("cpu"))
    for m in reference.generator.modules():
        if isinstance(m, ILMNorm):
            m.fused = False  # the general graph throughout, as the reference numbers
    expected = reference.optimize_parameters(real_a, real_b)
    for name, value in expected.items():
        torch.testing.assert_close(losses[name], value, rtol=1e-5, atol=1e-6)
    for ours, theirs in zip(
        model.discriminator.parameters(), reference.discriminator.parameters(), strict=True
    ):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)  # the penalty's second-order gradients


class _OpCount(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


def test_a_pix2pix_step_under_bf16_and_channels_last_dispatches_the_fused_ops():
    """A generator forward and backward with ILM+IN everywhere, bf16 autocast, channels_last: the fused
    function replaces ~40 small ops per layer, so the step dispatches far fewer ops than the general graph."""
    from pix2pix_ilm.models.networks import UnetGenerator
    from pix2pix_ilm.models.norms import NormFactory

    def ops(fused: bool) -> int:
        torch.manual_seed(0)
        net = UnetGenerator(3, 3, 5, ngf=8, norm=NormFactory("ilm_in")).to(memory_format=torch.channels_last)
        for layer in net.modules():
            if isinstance(layer, ILMNorm):
                layer.fused = fused
        x = torch.randn(2, 3, 32, 32).to(memory_format=torch.channels_last)
        with _OpCount() as counter, torch.autocast("cpu", dtype=torch.bfloat16):
            net(x).float().square().mean().backward()
        return counter.count

    layers = sum(
        isinstance(m, ILMNorm) for m in UnetGenerator(3, 3, 5, ngf=8, norm=NormFactory("ilm_in")).modules()
    )
    fused, general = ops(True), ops(False)
    assert general - fused >= 20 * layers, (fused, general, layers)
