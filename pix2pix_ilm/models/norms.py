"""Normalization layers: ILM Norm (Jia, Chen & Chen, CVPR 2019; docs/ilm.md) and the norm factory through
which every network gets its norm layers by name (:data:`~pix2pix_ilm.models.norm_specs.NORMS`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from pix2pix_ilm.device import autocast_dtype
from pix2pix_ilm.errors import UsageError
from pix2pix_ilm.models.ilm_fused import ILMInstanceK1
from pix2pix_ilm.models.norm_specs import ILM_HIDDEN_RULES, ILM_VARIANCES, NORM_NAMES, NORMS, ILMOptions

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "relu": torch.relu,
    "identity": lambda t: t,
}
STANDARDIZATIONS: tuple[str, ...] = ("instance", "group", "layer")


def ilm_hidden_size(
    num_key_groups: int, reduction: int = 16, min_hidden: int = 2, rule: str = "ours", group: bool = False
) -> int:
    """Width M of ILM's encoder. ``ours``: ``num_key_groups // reduction``, but at least ``min_hidden``;
    ``authors`` (their code): ``num_key_groups // reduction`` above ``reduction`` key groups (from ``reduction``
    on in their GN variant, ``group``), else ``min_hidden`` (so 17-31 key groups give 1)."""
    if rule == "authors":
        above = num_key_groups >= reduction if group else num_key_groups > reduction
        return num_key_groups // reduction if above else min_hidden
    if rule != "ours":
        raise ValueError(f"hidden_rule must be one of {ILM_HIDDEN_RULES}, got {rule!r}")
    return max(min_hidden, num_key_groups // reduction)


def _channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and biased variance over (H, W) in two passes, mean then centred sum of squares: as
    accurate as ``torch.var_mean`` and several times faster on CPU."""
    flat = x.flatten(2)
    mean = flat.mean(2, keepdim=True)
    centred = flat - mean
    return mean.squeeze(2), torch.linalg.vecdot(centred, centred) / flat.shape[2]


def _group_stats(
    channel_mean: torch.Tensor, channel_var: torch.Tensor, group_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and biased variance of groups of ``group_size`` consecutive channels from the per-channel ones (law
    of total variance), so the input is read once whatever grouping the caller needs."""
    if group_size == 1:
        return channel_mean, channel_var
    batch, channels = channel_mean.shape
    mean_c = channel_mean.reshape(batch, channels // group_size, group_size)
    var_c = channel_var.reshape(batch, channels // group_size, group_size)
    mean_g = mean_c.mean(dim=2)
    var_g = var_c.mean(dim=2) + (mean_c - mean_g.unsqueeze(2)).pow(2).mean(dim=2)
    return mean_g, var_g


class ILMNorm(nn.Module):
    """Instance-Level Meta Normalization on top of IN, GN or LN (paper §3, Eq. 3–6): key features μ, γ per
    group of ``K`` channels → shared encoder + ReLU → tanh / sigmoid decoders → ``ω · x_s + β``."""

    def __init__(
        self,
        num_channels: int,
        standardization: str = "instance",
        *,
        key_group_size: int = 16,
        num_groups: int = 32,
        reduction: int = 16,
        min_hidden: int = 2,
        eps: float = 1e-5,
        mean_activation: str = "tanh",
        var_activation: str = "sigmoid",
        variance: str = "biased",
        hidden_rule: str = "ours",
        fused: bool = True,
    ) -> None:
        super().__init__()
        if variance not in ILM_VARIANCES:
            raise ValueError(f"variance must be one of {ILM_VARIANCES}, got {variance!r}")
        if standardization not in STANDARDIZATIONS:
            raise ValueError(f"standardization must be one of {STANDARDIZATIONS}, got {standardization!r}")
        for label, act in (("mean_activation", mean_activation), ("var_activation", var_activation)):
            if act not in ACTIVATIONS:
                raise ValueError(f"{label} must be one of {sorted(ACTIVATIONS)}, got {act!r}")
        if num_channels < 1 or key_group_size < 1:
            raise ValueError(
                f"ILM needs num_channels >= 1 and key_group_size >= 1, got {num_channels} and {key_group_size}"
            )
        if num_channels % key_group_size:
            raise ValueError(
                f"ILM key group size K={key_group_size} must divide the number of channels C={num_channels}"
            )
        if reduction < 1 or min_hidden < 1:
            raise ValueError(f"ILM reduction and min_hidden must be >= 1, got {reduction} and {min_hidden}")
        groups = {"instance": num_channels, "layer": 1, "group": num_groups}[standardization]
        if groups < 1 or num_channels % groups:
            raise ValueError(
                f"number of groups G={groups} must divide the number of channels C={num_channels}"
            )
        self.num_channels = num_channels
        self.standardization = standardization
        self.key_group_size = key_group_size
        self.num_key_groups = num_channels // key_group_size
        self.num_groups = groups
        group = standardization == "group"
        self.hidden_size = ilm_hidden_size(self.num_key_groups, reduction, min_hidden, hidden_rule, group)
        self.eps = eps
        self.mean_activation = mean_activation
        self.var_activation = var_activation
        self.variance = variance
        self.encoder = nn.Linear(self.num_key_groups, self.hidden_size, bias=False)  # W1, shared
        self.mean_decoder = nn.Linear(self.hidden_size, self.num_key_groups, bias=False)  # W2
        self.var_decoder = nn.Linear(self.hidden_size, self.num_key_groups, bias=False)  # W3
        self.weight_bias = nn.Parameter(torch.ones(num_channels))  # B_ω
        self.bias_bias = nn.Parameter(torch.zeros(num_channels))  # B_β
        self.fused = fused  # ILMInstanceK1 where it applies (False: the general graph below, same numbers)

    def extra_repr(self) -> str:
        return (
            f"{self.num_channels}, standardization={self.standardization}, K={self.key_group_size}, "
            f"N_k={self.num_key_groups}, M={self.hidden_size}, G={self.num_groups}, eps={self.eps}, "
            f"activations=({self.mean_activation}, {self.var_activation}), variance={self.variance}"
        )

    def reset_meta_parameters(self) -> None:
        """PyTorch's default initialisation of W1–W3 (as the authors' code leaves them); B_ω = 1, B_β = 0."""
        for linear in (self.encoder, self.mean_decoder, self.var_decoder):
            linear.reset_parameters()
        nn.init.ones_(self.weight_bias)
        nn.init.zeros_(self.bias_bias)

    def _fused(self, x: torch.Tensor) -> bool:
        """The paper's pix2pix case (IN, K = 1, tanh / sigmoid) in full precision: one autograd node."""
        return (
            self.fused
            and self.standardization == "instance"
            and self.key_group_size == 1
            and (self.mean_activation, self.var_activation) == ("tanh", "sigmoid")
            and x.dtype == self.encoder.weight.dtype
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.num_channels:
            raise ValueError(f"ILMNorm expects (N, {self.num_channels}, H, W) input, got {tuple(x.shape)}")
        low = autocast_dtype(x.device.type)
        if low is not None:
            # Statistics, eps and the meta-network in fp32 (as InstanceNorm keeps them); only the output is
            # rounded to the autocast dtype.
            with torch.autocast(x.device.type, enabled=False):
                return self._forward(x.float()).to(low)
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._fused(x):
            weights = (self.encoder.weight, self.mean_decoder.weight, self.var_decoder.weight)
            unbiased = self.variance == "unbiased"
            return ILMInstanceK1.apply(x, *weights, self.weight_bias, self.bias_bias, self.eps, unbiased)
        batch, channels, height, width = x.shape
        pixels = height * width
        channel_mean, channel_var = _channel_stats(x)

        key_mean, key_var = _group_stats(channel_mean, channel_var, self.key_group_size)  # μ, γ (biased)
        key_count = self.key_group_size * pixels
        key_var = key_var * (key_count / max(key_count - 1, 1))  # unbiased γ, as in the authors' code

        encoded_mean = F.relu(self.encoder(key_mean.to(self.encoder.weight.dtype)))  # E_μ
        encoded_var = F.relu(self.encoder(key_var.to(self.encoder.weight.dtype)))  # E_γ
        decoded_mean = ACTIVATIONS[self.mean_activation](self.mean_decoder(encoded_mean))  # D_μ
        decoded_var = ACTIVATIONS[self.var_activation](self.var_decoder(encoded_var))  # D_γ
        # Alignment: repeat each key-group value K times (a view + broadcast, no copy of the activations).
        omega = decoded_var.unsqueeze(2) + self.weight_bias.view(self.num_key_groups, self.key_group_size)
        beta = decoded_mean.unsqueeze(2) + self.bias_bias.view(self.num_key_groups, self.key_group_size)
        omega = omega.reshape(batch, channels)
        beta = beta.reshape(batch, channels)

        group_size = channels // self.num_groups
        norm_mean, norm_var = _group_stats(channel_mean, channel_var, group_size)
        if self.variance == "unbiased":
            norm_count = group_size * pixels
            norm_var = norm_var * (norm_count / max(norm_count - 1, 1))
        rstd = torch.rsqrt(norm_var + self.eps)
        if group_size > 1:
            norm_mean = norm_mean.repeat_interleave(group_size, dim=1)
            rstd = rstd.repeat_interleave(group_size, dim=1)
        # ω·(x − m)·rstd + β as one multiply-add on x: scale = ω·rstd, shift = β − m·scale.
        scale = omega * rstd
        shift = beta - norm_mean * scale
        return torch.addcmul(shift.to(x.dtype)[:, :, None, None], x, scale.to(x.dtype)[:, :, None, None])


def _plain_norm(name: str, num_channels: int, groups: int, eps: float) -> nn.Module:
    if name == "batch":
        return nn.BatchNorm2d(num_channels, eps=eps, affine=True, track_running_stats=True)
    if name == "instance":  # as pix2pix: no affine parameters, no running statistics
        return nn.InstanceNorm2d(num_channels, eps=eps, affine=False, track_running_stats=False)
    if name in ("group", "layer"):  # layer norm over (C, H, W) with a per-channel affine: one group
        return nn.GroupNorm(groups if name == "group" else 1, num_channels, eps=eps)
    return nn.Identity()


def make_norm(
    name: str, num_channels: int, *, num_groups: int = 32, eps: float = 1e-5, ilm: ILMOptions | None = None
) -> nn.Module:
    """The norm layer called ``name`` for ``num_channels`` channels (``num_groups`` groups, fewer in narrower
    layers; ILM as ``ilm`` says); ``ValueError`` for an unknown name or channels the layer cannot divide."""
    if name not in NORMS:
        raise ValueError(f"unknown norm {name!r}; valid names: {', '.join(NORM_NAMES)}")
    if num_channels < 1:
        raise ValueError(f"num_channels must be >= 1, got {num_channels}")
    groups = min(num_groups, num_channels)
    if name in ("group", "ilm_gn") and num_channels % groups:
        raise ValueError(f"number of groups {groups} must divide the number of channels {num_channels}")
    standardization = NORMS[name].ilm_over
    if standardization is None:
        return _plain_norm(name, num_channels, groups, eps)
    ilm = ilm or ILMOptions()
    return ILMNorm(
        num_channels,
        standardization,
        key_group_size=ilm.group_size,
        num_groups=groups,
        reduction=ilm.reduction,
        min_hidden=ilm.min_hidden,
        hidden_rule=ilm.hidden_rule,
        eps=eps,
        mean_activation=ilm.mean_activation,
        var_activation=ilm.var_activation,
        variance=ilm.variance,
        fused=ilm.fused,
    )


@dataclass(frozen=True)
class NormFactory:
    """``channels -> norm layer`` for one norm name: what every network is given."""

    name: str
    num_groups: int = 32
    ilm: ILMOptions = field(default_factory=ILMOptions)

    def __post_init__(self) -> None:
        if self.name not in NORMS:
            raise UsageError(f"unknown norm {self.name!r}; valid names: {', '.join(NORM_NAMES)}")

    @property
    def has_shift(self) -> bool:
        return NORMS[self.name].has_shift

    def __call__(self, num_channels: int) -> nn.Module:
        return make_norm(self.name, num_channels, num_groups=self.num_groups, ilm=self.ilm)
