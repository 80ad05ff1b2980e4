"""The norm names a network can be given, what each one is, and ILM's options: plain data, no torch, so the
command line can list and check them without loading the models."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NormSpec:
    has_shift: bool
    """The norm adds its own per-channel shift, so a convolution right before it needs no bias."""
    ilm_over: str | None = None
    """For ILM: the standardization it modulates (instance, group or layer)."""


NORMS: dict[str, NormSpec] = {
    "none": NormSpec(has_shift=False),
    "batch": NormSpec(has_shift=True),
    "instance": NormSpec(has_shift=False),
    "group": NormSpec(has_shift=True),
    "layer": NormSpec(has_shift=True),
    "ilm_in": NormSpec(has_shift=True, ilm_over="instance"),
    "ilm_gn": NormSpec(has_shift=True, ilm_over="group"),
    "ilm_ln": NormSpec(has_shift=True, ilm_over="layer"),
}
NORM_NAMES: tuple[str, ...] = tuple(NORMS)
ILM_ACTIVATIONS: tuple[str, ...] = ("tanh", "sigmoid", "relu", "identity")
ILM_VARIANCES: tuple[str, ...] = ("biased", "unbiased")
ILM_INITS: tuple[str, ...] = ("pix2pix", "pytorch")
ILM_HIDDEN_RULES: tuple[str, ...] = ("ours", "authors")


@dataclass(frozen=True)
class ILMOptions:
    """How every ILM layer of a network is built (the paper's pix2pix setting by default)."""

    group_size: int = 1
    """Key-group size K."""
    mean_activation: str = "tanh"
    var_activation: str = "sigmoid"
    variance: str = "biased"
    """Of the standardization: biased (as InstanceNorm2d) or unbiased (as the authors' code)."""
    reduction: int = 16
    min_hidden: int = 2
    hidden_rule: str = "ours"
    """Encoder width M: ours max(min_hidden, N_k // reduction); authors as their code (docs/ilm.md)."""
    fused: bool = True
    """ILM+IN with K = 1 as one autograd function; off where a network is differentiated twice."""
