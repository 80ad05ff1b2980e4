"""ILM Norm against the paper's equations computed by hand, and the norm factory."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from pix2pix_ilm.models.norm_specs import NORM_NAMES, ILMOptions
from pix2pix_ilm.models.norms import ILMNorm, ilm_hidden_size, make_norm


def _randomize(layer: ILMNorm, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(
                torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.7
                + (1.0 if p is layer.weight_bias else 0)
            )


def ilm_by_hand(x, w1, w2, w3, b_omega, b_beta, key_size, groups, eps, mean_act=math.tanh, var_act=None):
    """Eq. 3–6 with explicit loops in float64 (independent of the implementation's vectorization)."""
    var_act = var_act or (lambda v: 1.0 / (1.0 + math.exp(-v)))
    x, w1, w2, w3 = (t.detach().double() for t in (x, w1, w2, w3))
    b_omega, b_beta = b_omega.detach(), b_beta.detach()
    n, c, h, w = x.shape
    nk = c // key_size
    out = torch.empty_like(x)
    for i in range(n):
        mu = []
        gamma = []
        for g in range(nk):
            vals = x[i, g * key_size : (g + 1) * key_size].reshape(-1).tolist()
            m = sum(vals) / len(vals)
            denom = max(len(vals) - 1, 1)
            mu.append(m)
            gamma.append(sum((v - m) ** 2 for v in vals) / denom)  # unbiased, as the authors' x.var()
        mu_t = torch.tensor(mu, dtype=torch.float64)
        gamma_t = torch.tensor(gamma, dtype=torch.float64)
        e_mu = torch.relu(w1.double() @ mu_t)
        e_gamma = torch.relu(w1.double() @ gamma_t)
        d_mu = [mean_act(v) for v in (w2.double() @ e_mu).tolist()]
        d_gamma = [var_act(v) for v in (w3.double() @ e_gamma).tolist()]
        gsize = c // groups
        for ch in range(c):
            omega = d_gamma[ch // key_size] + float(b_omega[ch])
            beta = d_mu[ch // key_size] + float(b_beta[ch])
            g = ch // gsize
            block = x[i, g * gsize : (g + 1) * gsize]
            m = block.mean().item()
            v = ((block - m) ** 2).mean().item()  # biased, as torch's IN/GN/LN
            out[i, ch] = omega * (x[i, ch] - m) / math.sqrt(v + eps) + beta
    return out


@pytest.mark.parametrize(
    "standardization,channels,key_size,groups",
    [
        ("instance", 32, 1, 32),
        ("instance", 64, 16, 64),
        ("group", 32, 4, 8),
        ("layer", 48, 16, 1),
    ],
)
def test_ilm_matches_equations(standardization, channels, key_size, groups):
    torch.manual_seed(1)
    layer = ILMNorm(channels, standardization, key_group_size=key_size, num_groups=groups).double()
    _randomize(layer)
    x = torch.randn(3, channels, 5, 6, dtype=torch.float64) * 2 + 0.5
    expected = ilm_by_hand(
        x,
        layer.encoder.weight,
        layer.mean_decoder.weight,
        layer.var_decoder.weight,
        layer.weight_bias,
        layer.bias_bias,
        key_size,
        layer.num_groups,
        layer.eps,
    )
    assert torch.allclose(layer(x), expected, atol=1e-10, rtol=1e-10)


def test_ilm_float32_close_to_float64():
    layer = ILMNorm(64, "instance", key_group_size=1)
    _randomize(layer)
    x = torch.randn(2, 64, 8, 8)
    ref = layer.double()(x.double())
    out = layer.float()(x)
    assert torch.allclose(out.double(), ref, atol=1e-4)


@pytest.mark.parametrize("mean_act,var_act", [("identity", "relu"), ("sigmoid", "tanh")])
def test_ilm_decoder_activations(mean_act, var_act):
    acts = {
        "identity": lambda v: v,
        "relu": lambda v: max(v, 0.0),
        "sigmoid": lambda v: 1 / (1 + math.exp(-v)),
    }
    acts["tanh"] = math.tanh
    layer = ILMNorm(
        16, "instance", key_group_size=4, mean_activation=mean_act, var_activation=var_act
    ).double()
    _randomize(layer, seed=3)
    x = torch.randn(2, 16, 4, 4, dtype=torch.float64)
    w = (layer.encoder.weight, layer.mean_decoder.weight, layer.var_decoder.weight)
    expected = ilm_by_hand(
        x, *w, layer.weight_bias, layer.bias_bias, 4, 16, layer.eps, acts[mean_act], acts[var_act]
    )
    assert torch.allclose(layer(x), expected, atol=1e-10)


def test_ilm_at_identity_affine_equals_instance_norm():
    layer = ILMNorm(32, "instance", key_group_size=1)
    with torch.no_grad():
        layer.var_decoder.weight.zero_()  # sigmoid(0) = 0.5, so ω = 0.5 + B_ω = 1
        layer.mean_decoder.weight.zero_()  # tanh(0) = 0 → β = 0
        layer.weight_bias.fill_(0.5)
    x = torch.randn(4, 32, 7, 7)
    assert torch.allclose(layer(x), nn.functional.instance_norm(x, eps=1e-5), atol=1e-5)


@pytest.mark.parametrize("name", ["ilm_in", "ilm_gn", "ilm_ln"])
def test_batch_independence_and_batch_size_one(name):
    layer = make_norm(name, 64, num_groups=8, ilm=ILMOptions(group_size=4))
    _randomize(layer)
    x = torch.randn(5, 64, 6, 6)
    full = layer(x)
    for i in range(5):
        single = layer(x[i : i + 1])
        assert single.shape == (1, 64, 6, 6)
        assert torch.allclose(single, full[i : i + 1], atol=1e-6)
    other = torch.cat([x[:1], torch.randn(3, 64, 6, 6) * 10])
    assert torch.allclose(layer(other)[0], full[0], atol=1e-6)


def test_gradients_reach_every_parameter_gradcheck():
    layer = ILMNorm(4, "instance", key_group_size=2, min_hidden=2).double()
    _randomize(layer, seed=5)
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    params = [layer.encoder.weight, layer.mean_decoder.weight, layer.var_decoder.weight]
    params += [layer.weight_bias, layer.bias_bias]

    def fn(inp, w1, w2, w3, bw, bb):
        with torch.no_grad():
            for p, v in zip(params, (w1, w2, w3, bw, bb), strict=False):
                p.data = v.detach()
        out = torch.func.functional_call(
            layer,
            {
                "encoder.weight": w1,
                "mean_decoder.weight": w2,
                "var_decoder.weight": w3,
                "weight_bias": bw,
                "bias_bias": bb,
            },
            (inp,),
        )
        return out

    inputs = (x, *[p.detach().clone().requires_grad_(True) for p in params])
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-5)
    layer(x).pow(2).sum().backward()
    for p in params:
        assert p.grad is not None and p.grad.abs().sum() > 0


@pytest.mark.parametrize("channels,key_size", [(64, 1), (64, 16), (128, 4), (512, 1), (48, 3), (32, 32)])
def test_parameter_count(channels, key_size):
    layer = make_norm("ilm_in", channels, ilm=ILMOptions(group_size=key_size))
    nk = channels // key_size
    m = max(2, nk // 16)
    assert layer.hidden_size == m == ilm_hidden_size(nk)
    assert sum(p.numel() for p in layer.parameters()) == 3 * nk * m + 2 * channels


def test_single_element_groups_do_not_produce_nan():
    layer = make_norm("ilm_in", 8)
    out = layer(torch.randn(1, 8, 1, 1))
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", NORM_NAMES)
def test_factory_builds_layers_that_train(name):
    layer = make_norm(name, 64)
    x = torch.randn(2, 64, 8, 8, requires_grad=True)
    out = layer(x)
    assert out.shape == x.shape
    out.square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_factory_matches_pix2pix_instance_norm():
    layer = make_norm("instance", 16)
    assert isinstance(layer, nn.InstanceNorm2d) and not layer.affine and not layer.track_running_stats
    assert isinstance(make_norm("batch", 16), nn.BatchNorm2d)
    layer_norm = make_norm("layer", 16)
    assert isinstance(layer_norm, nn.GroupNorm) and layer_norm.num_groups == 1
    assert make_norm("group", 16, num_groups=32).num_groups == 16  # narrower than 32 groups: one per channel


def test_factory_options_flow_through():
    layer = make_norm("ilm_gn", 64, num_groups=4, ilm=ILMOptions(group_size=8, reduction=2, min_hidden=3))
    assert (layer.key_group_size, layer.num_key_groups, layer.num_groups, layer.hidden_size) == (8, 8, 4, 4)
    assert make_norm("ilm_ln", 64, ilm=ILMOptions(group_size=2)).num_groups == 1


def test_bad_arguments():
    with pytest.raises(ValueError, match="valid names: none, batch, instance"):
        make_norm("ilm_bn", 64)
    with pytest.raises(ValueError, match="K=3 must divide the number of channels C=64"):
        make_norm("ilm_in", 64, ilm=ILMOptions(group_size=3))
    with pytest.raises(ValueError, match="G=5 must divide"):
        ILMNorm(64, "group", num_groups=5, key_group_size=1)
    with pytest.raises(ValueError, match="groups 24 must divide"):
        make_norm("group", 64, num_groups=24)
    with pytest.raises(ValueError, match="mean_activation"):
        make_norm("ilm_in", 64, ilm=ILMOptions(mean_activation="gelu"))
    with pytest.raises(ValueError, match="standardization"):
        ILMNorm(64, "batch")
    with pytest.raises(ValueError, match="expects"):
        make_norm("ilm_in", 64)(torch.randn(2, 32, 4, 4))


def ilm_authors_float64(x, w1, w2, w3, b_omega, b_beta, key_size, eps=1e-5):
    """Our float64 transcription of the authors' ILM+IN forward pass (github.com/Gasoonjia/ILM-Norm,
    lib/nn/ilm_in.py), written from the paper's Eq. 3-6 and what that code does differently: every
    statistic, the key features' γ *and* the standardisation's variance, is the unbiased ``var()``
    (divisor n - 1), and eps sits inside the square root. One shared encoder W1, no biases."""
    x = x.detach().double()
    n, c, h, w = x.shape
    groups = c // key_size
    keys = x.reshape(n, groups, key_size * h * w)
    mu, gamma = keys.mean(-1), keys.var(-1, unbiased=True)
    w1, w2, w3 = (t.detach().double() for t in (w1, w2, w3))
    d_mu = torch.tanh(torch.relu(mu @ w1.T) @ w2.T)
    d_gamma = torch.sigmoid(torch.relu(gamma @ w1.T) @ w3.T)
    omega = d_gamma.repeat_interleave(key_size, dim=1) + b_omega.detach().double()
    beta = d_mu.repeat_interleave(key_size, dim=1) + b_beta.detach().double()
    per_channel = x.reshape(n, c, h * w)
    centred = per_channel - per_channel.mean(-1, keepdim=True)
    standardised = centred / (per_channel.var(-1, unbiased=True, keepdim=True) + eps).sqrt()
    return standardised.reshape(n, c, h, w) * omega[:, :, None, None] + beta[:, :, None, None]


@pytest.mark.parametrize("channels,key_size,size", [(8, 1, 2), (16, 1, 4), (32, 2, 3), (64, 16, 8)])
def test_unbiased_variance_is_the_authors_layer(channels, key_size, size):
    torch.manual_seed(3)
    x = torch.randn(3, channels, size, size, dtype=torch.float64) * 2 + 0.5
    outputs = {}
    for variance in ("biased", "unbiased"):
        layer = make_norm("ilm_in", channels, ilm=ILMOptions(group_size=key_size, variance=variance)).double()
        _randomize(layer)
        assert layer.variance == variance
        outputs[variance] = layer(x)
    weights = (layer.encoder.weight, layer.mean_decoder.weight, layer.var_decoder.weight)
    authors = ilm_authors_float64(x, *weights, layer.weight_bias, layer.bias_bias, key_size)
    torch.testing.assert_close(outputs["unbiased"], authors, rtol=0, atol=1e-12)
    # Today's default differs from the authors' code only in the standardisation's divisor: by
    # sqrt(n / (n - 1)) on the centred part, which is large on the U-Net's 2×2 maps (n = 4).
    gap = (outputs["biased"] - authors).abs().max().item()
    assert gap > (0.05 if size <= 4 else 1e-3)
    scale = math.sqrt(size * size / (size * size - 1))
    beta = outputs["unbiased"].mean(dim=(2, 3), keepdim=True)  # the centred parts average to zero
    torch.testing.assert_close(outputs["biased"] - beta, (authors - beta) * scale, rtol=1e-4, atol=1e-6)


def test_variance_option_is_checked():
    with pytest.raises(ValueError, match="variance must be one of"):
        make_norm("ilm_in", 8, ilm=ILMOptions(variance="population"))


@pytest.mark.parametrize("name", ["ilm_in", "ilm_gn", "ilm_ln"])
@pytest.mark.parametrize("key_size", [1, 16])
def test_under_bf16_autocast_only_the_output_is_rounded(name, key_size):
    """Statistics, eps and the meta-network stay fp32 under autocast, as InstanceNorm's do: ILM's error
    against fp32 is that of rounding its output to bf16, however the layer is set up."""
    torch.manual_seed(0)
    layer = make_norm(name, 64, num_groups=8, ilm=ILMOptions(group_size=key_size))
    _randomize(layer)
    x = (torch.randn(2, 64, 8, 8) * 3 + 1).bfloat16()  # what a bf16 convolution hands the layer
    reference = layer(x.float())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x)
    assert out.dtype == torch.bfloat16
    rounding = (reference.bfloat16().float() - reference).abs().max()
    assert (out.float() - reference).abs().max() <= 1.2 * rounding


def test_the_authors_hidden_width_rule_differs_from_ours_only_where_documented():
    for key_groups, ours, authors_in, authors_gn in [
        (8, 2, 2, 2),
        (16, 2, 2, 1),  # GN: ">=" in their code
        (17, 2, 1, 1),
        (31, 2, 1, 1),
        (32, 2, 2, 2),
        (256, 16, 16, 16),
    ]:
        assert ilm_hidden_size(key_groups) == ours
        assert ilm_hidden_size(key_groups, rule="authors") == authors_in
        assert ilm_hidden_size(key_groups, rule="authors", group=True) == authors_gn
    # Through the option: GN with K = 16 over 256 channels has 16 key groups.
    layer = ILMNorm(256, "group", key_group_size=16, num_groups=32, hidden_rule="authors")
    assert layer.hidden_size == 1 and layer.encoder.weight.shape == (1, 16)
    assert ILMNorm(256, "group", key_group_size=16, num_groups=32).hidden_size == 2
