"""Device-dependent defaults: ``--precision auto`` and an unset ``--channels-last`` resolved per device.

CUDA is faked by its reported compute capability only: the resolution is pure logic, nothing runs there.
"""

from __future__ import annotations

import pytest
import torch

from pix2pix_ilm.config import TrainConfig
from pix2pix_ilm.device import autocast, has_fast_bf16, resolve_device, with_device_defaults
from pix2pix_ilm.errors import UsageError

CUDA, CPU = torch.device("cuda"), torch.device("cpu")


def _config(**options) -> TrainConfig:
    return TrainConfig(dataroot="d", name="n", **options)


@pytest.fixture
def gpu_capability(monkeypatch):
    """Set the compute capability the (absent) CUDA device reports."""

    def set_capability(major: int, minor: int = 0) -> None:
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (major, minor))

    return set_capability


def test_defaults_are_automatic_until_resolved():
    config = _config()
    assert (config.precision, config.channels_last, config.compile) == ("auto", None, False)


def test_cpu_resolves_to_the_eager_settings():
    config = with_device_defaults(_config(), CPU)
    assert (config.precision, config.channels_last, config.compile) == ("fp32", False, False)


@pytest.mark.parametrize(
    ("capability", "expected"),
    [
        ((9, 0), ("bf16", False)),
        ((8, 0), ("bf16", False)),
        ((7, 5), ("fp32", False)),
        ((6, 1), ("fp32", False)),
    ],
)
def test_cuda_resolves_by_compute_capability(gpu_capability, capability, expected):
    gpu_capability(*capability)
    assert has_fast_bf16(CUDA) == (expected[0] == "bf16")
    config = with_device_defaults(_config(), CUDA)
    assert (config.precision, config.channels_last, config.compile) == (*expected, False)


def test_explicit_values_win(gpu_capability):
    gpu_capability(9)
    config = with_device_defaults(_config(precision="fp32", channels_last=False), CUDA)
    assert (config.precision, config.channels_last) == ("fp32", False)
    config = with_device_defaults(_config(channels_last=True), CUDA)  # the other one still follows the device
    assert (config.precision, config.channels_last) == ("bf16", True)
    config = with_device_defaults(_config(precision="bf16", channels_last=True), CPU)  # opt-in on CPU
    assert (config.precision, config.channels_last) == ("bf16", True)


def test_a_resolved_config_is_returned_as_it_is(monkeypatch):
    config = _config(precision="fp32", channels_last=True)

    def no_query(device=None):
        raise AssertionError("nothing to resolve: the device must not be asked")

    monkeypatch.setattr(torch.cuda, "get_device_capability", no_query)
    assert with_device_defaults(config, CUDA) is config


def test_autocast_refuses_an_unresolved_precision():
    assert not torch.is_autocast_enabled("cpu")
    with autocast(CPU, "bf16"):
        assert torch.is_autocast_enabled("cpu")
    with autocast(CPU, "fp32"):
        assert not torch.is_autocast_enabled("cpu")
    with pytest.raises(ValueError, match="not resolved"):
        autocast(CPU, "auto")


def test_fp32_on_cuda_is_strict_and_restores_the_tf32_settings():
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    with autocast(torch.device("cuda"), "fp32"):
        assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == (False, False)
    assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == before


def test_a_cuda_index_beyond_the_machine_is_one_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(
        UsageError, match=r"--device cuda:7: this machine has 1 CUDA device\(s\), cuda:0 to cuda:0"
    ):
        resolve_device("cuda:7")
    assert resolve_device("cuda:0") == torch.device("cuda:0")
