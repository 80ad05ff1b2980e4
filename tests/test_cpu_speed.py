"""The matrix-product route of ``cpu_speed.Conv2d`` / ``cpu_speed.ConvTranspose2d`` computes torch's convolutions.

Every case is checked against torch's own kernel on the same weights: outputs, input / weight / bias
gradients, and the second derivative that the WGAN-GP penalty takes through D.
"""

from __future__ import annotations

import copy
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn

from pix2pix_ilm import cpu_speed
from pix2pix_ilm.config import TrainConfig
from pix2pix_ilm.cpu_speed import (
    MATMUL_WEIGHT_RATIO,
    RETAIN_MEMORY_ENV,
    Conv2d,
    ConvTranspose2d,
    set_small_input_matmul,
)
from pix2pix_ilm.models.networks import networks_from_config
from pix2pix_ilm.models.pix2pix import Pix2PixModel

# (layer, constructor arguments after in/out channels, batch, input size)
CASES = [
    (Conv2d, dict(kernel_size=4, stride=2, padding=1), 1, 4),  # the U-Net's down convolution
    (Conv2d, dict(kernel_size=4, stride=2, padding=1, bias=False), 3, 2),
    (Conv2d, dict(kernel_size=3, stride=1, padding=1), 2, 5),
    (Conv2d, dict(kernel_size=3, padding=0, dilation=2), 1, 6),
    (Conv2d, dict(kernel_size=(3, 2), stride=(1, 2), padding=(2, 0)), 2, 5),
    (Conv2d, dict(kernel_size=1, bias=False), 2, 3),
    (ConvTranspose2d, dict(kernel_size=4, stride=2, padding=1), 1, 2),  # the U-Net's up convolution
    (ConvTranspose2d, dict(kernel_size=4, stride=2, padding=1, bias=False), 3, 1),
    (ConvTranspose2d, dict(kernel_size=3, stride=2, padding=1, output_padding=1), 2, 3),
    (ConvTranspose2d, dict(kernel_size=3, dilation=2), 1, 4),
    (ConvTranspose2d, dict(kernel_size=(3, 4), stride=(2, 1), padding=(0, 1), output_padding=(1, 0)), 2, 3),
]


@pytest.fixture
def any_size(monkeypatch):
    """Take the route whatever the weight/input ratio, so that the cases can cover every geometry."""
    monkeypatch.setattr(cpu_speed, "MATMUL_WEIGHT_RATIO", 0)


def _twin(layer: nn.Module) -> nn.Module:
    """The same layer with the route turned off (torch's kernel), sharing nothing."""
    twin = copy.deepcopy(layer)
    set_small_input_matmul(twin, False)
    return twin


def _make(cls, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    return cls(**kwargs)


def _check_same(layer: nn.Module, x: torch.Tensor, *, double: bool = True) -> None:
    reference = _twin(layer)
    assert layer._matmul_route(x), "the case must take the matrix-product route"
    assert not reference._matmul_route(x)
    results = []
    for net in (layer, reference):
        inp = x.clone().requires_grad_(True)
        out = net(inp)
        weights = torch.linspace(-1, 1, out.numel()).reshape(out.shape)
        params = list(net.parameters())
        grad_x, *grads = torch.autograd.grad((out * weights).sum(), [inp, *params], create_graph=double)
        # the penalty's path: d(|dy/dx|²)/dW (a convolution is linear in x, so only W matters)
        second = torch.autograd.grad(grad_x.square().sum(), [net.weight]) if double else ()
        results.append((out, grad_x, *grads, *second))
    for ours, theirs in zip(*results, strict=True):
        assert ours.shape == theirs.shape
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("cls", "options", "batch", "size"), CASES)
def test_route_matches_torch(cls, options, batch, size, any_size):
    layer = _make(cls, in_channels=24, out_channels=16, **options)
    x = torch.randn(batch, 24, size, size, generator=torch.Generator().manual_seed(1))
    _check_same(layer, x)


@pytest.mark.parametrize("thin_columns", [0, 10**9])
def test_both_layouts_of_the_input_gradient_match_torch(monkeypatch, thin_columns):
    """The input gradient of the product, as weightᵀ @ g (wide) or (gᵀ @ weight)ᵀ (thin), for the same case."""
    monkeypatch.setattr(cpu_speed, "THIN_COLUMNS", thin_columns)
    layer = _make(Conv2d, in_channels=32, out_channels=32, kernel_size=4, stride=2, padding=1)
    _check_same(layer, torch.randn(1, 32, 4, 4, generator=torch.Generator().manual_seed(3)))


@pytest.mark.parametrize("thin_columns", [0, 10**9])
@pytest.mark.parametrize("cls", [Conv2d, ConvTranspose2d])
def test_the_route_under_bf16_autocast_matches_torch(monkeypatch, thin_columns, cls):
    """Under CPU autocast the route computes in bf16 as torch's kernels do: bf16 outputs, fp32 gradients for
    fp32 weights, values equal to bf16 rounding; both layouts of the input gradient."""
    monkeypatch.setattr(cpu_speed, "THIN_COLUMNS", thin_columns)
    layer = _make(cls, in_channels=32, out_channels=32, kernel_size=4, stride=2, padding=1)
    reference = _twin(layer)
    x = torch.randn(1, 32, 4, 4, generator=torch.Generator().manual_seed(4))
    assert layer._matmul_route(x)
    results = []
    for net in (layer, reference):
        inp = x.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = net(inp)
        grads = torch.autograd.grad(out.float().square().sum(), [inp, *net.parameters()])
        results.append((out, *grads))
    assert results[0][0].dtype == results[1][0].dtype == torch.bfloat16
    for ours, theirs in zip(*results, strict=True):
        assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
        torch.testing.assert_close(
            ours.float(), theirs.float(), rtol=3e-2, atol=3e-2 * theirs.abs().max().item()
        )


def test_channels_last_input_takes_the_route_too():
    layer = _make(Conv2d, in_channels=32, out_channels=32, kernel_size=4, stride=2, padding=1)
    x = torch.randn(2, 32, 4, 4).contiguous(memory_format=torch.channels_last)
    _check_same(layer, x, double=False)


def test_the_rule_keeps_large_inputs_on_torchs_kernel():
    layer = Conv2d(16, 16, 4, stride=2, padding=1)  # 4096 weights
    small = torch.zeros(1, 16, 4, 4)  # 256 values: 4096 >= 16 * 256
    large = torch.zeros(1, 16, 8, 8)
    assert layer.weight.numel() >= MATMUL_WEIGHT_RATIO * small.numel()
    assert layer._matmul_route(small) and not layer._matmul_route(large)
    grouped = Conv2d(16, 16, 4, stride=2, padding=1, groups=2)
    reflect = Conv2d(16, 16, 3, padding=1, padding_mode="reflect")
    same = Conv2d(16, 16, 3, padding="same")
    assert not any(m._matmul_route(torch.zeros(1, 16, 1, 1)) for m in (grouped, reflect, same))
    up = ConvTranspose2d(16, 16, 4, stride=2, padding=1)
    x = torch.randn(1, 16, 1, 1)
    torch.testing.assert_close(up(x, output_size=[2, 2]), nn.ConvTranspose2d.forward(up, x, [2, 2]))


def test_networks_use_the_layers_with_plain_state_dict_keys():
    config = TrainConfig(name="x", dataroot="", netG="unet_32", ngf=8, ndf=8)
    generator, discriminator = networks_from_config(config)
    convs = [m for m in generator.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    assert convs and all(isinstance(m, (Conv2d, ConvTranspose2d)) for m in convs)
    assert set_small_input_matmul(generator, False) == len(convs)
    assert not any(m.small_input_matmul for m in convs)
    assert all(
        ".weight" in k or ".bias" in k or "running" in k or "num_batches" in k for k in generator.state_dict()
    )
    plain = nn.ConvTranspose2d(8, 4, 4, 2, 1)
    assert ConvTranspose2d(8, 4, 4, 2, 1).state_dict().keys() == plain.state_dict().keys()
    assert discriminator is not None


@pytest.mark.parametrize("norms", [("instance", "instance"), ("ilm_in", "ilm_in")])
def test_training_steps_agree_with_native_convolutions(norms):
    """unet_32 at 32²: the inner levels take the route; three steps track torch's kernels to rounding."""
    losses = []
    for native in (False, True):
        config = TrainConfig(
            name="x",
            dataroot="",
            netG="unet_32",
            ngf=16,
            ndf=8,
            netG_norm=norms[0],
            netD_norm=norms[1],
            no_dropout=True,
            device="cpu",
            native_conv=native,
        )
        torch.manual_seed(0)
        model = Pix2PixModel(config, torch.device("cpu"))
        routed = [m for m in model.generator.modules() if isinstance(m, cpu_speed._SmallInputMatmul)]
        assert all(m.small_input_matmul is (not native) for m in routed)
        inputs = torch.Generator().manual_seed(3)
        real_a, real_b = (torch.rand(2, 3, 32, 32, generator=inputs) * 2 - 1 for _ in range(2))
        losses.append(
            [{k: float(v) for k, v in model.optimize_parameters(real_a, real_b).items()} for _ in range(3)]
        )
    for ours, theirs in zip(*losses, strict=True):
        for name in ours:
            assert ours[name] == pytest.approx(theirs[name], rel=1e-4, abs=1e-5), name


# -- heap retention (retain_freed_memory): a big tensor freed and allocated again is not page-faulted in again
PROBE = """
import json, resource, torch
{setup}
def faults_of_one_allocation():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.empty(64 * 2**20 // 4).fill_(1.0)  # 64 MiB, above glibc's largest mmap threshold (32 MiB)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults = [faults_of_one_allocation() for _ in range(16)]
# glibc's heap settles after a few rounds (aligned blocks do not fit the hole the last one left at first)
print(json.dumps({{"applied": applied, "faults": sum(faults[-4:])}}))
"""
RETAIN = "from pix2pix_ilm.cpu_speed import retain_freed_memory\napplied = retain_freed_memory()"
GLIBC_ONLY = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="the setting is glibc's mallopt"
)


def _probe(setup: str = RETAIN, **env: str) -> dict:
    """Minor page faults of four 64 MiB allocations in a fresh process, after ``setup`` ran there."""
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(setup=setup)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


@GLIBC_ONLY
def test_retained_memory_is_reused_without_page_faults():
    retained = _probe()
    default = _probe(**{RETAIN_MEMORY_ENV: "0"})
    assert retained["applied"] is True and default["applied"] is False
    # glibc maps fresh pages for every such allocation: 4 x 16384 faults of 4 KiB (4 x 32 with huge pages)
    assert default["faults"] >= 4 * 32
    assert retained["faults"] * 10 < default["faults"]  # the freed block is reused as it is


def _tiny_data(facades_dir: Path, root: Path) -> Path:
    (root / "train").mkdir(parents=True)
    with Image.open(facades_dir / "train" / "1.jpg") as image:
        image.convert("RGB").resize((64, 32)).save(root / "train" / "1.jpg")
    return root


@GLIBC_ONLY
def test_the_library_leaves_the_heap_alone_and_the_command_line_opts_in(facades_dir: Path, tmp_path: Path):
    """Calling train from Python changes no process-wide state; the same run from the command line keeps
    freed memory in the process."""
    data = _tiny_data(facades_dir, tmp_path / "data")
    options = dict(
        dataroot=str(data),
        checkpoints_dir=str(tmp_path / "ckpt"),
        netG="unet_32",
        ngf=4,
        ndf=4,
        load_size=36,
        crop_size=32,
        n_epochs=1,
        n_epochs_decay=0,
        no_display=True,
        no_progress=True,
        no_html=True,
        device="cpu",
    )
    library = _probe(
        "from pix2pix_ilm.config import TrainConfig\n"
        "from pix2pix_ilm.training.loop import train\n"
        f"train(TrainConfig(name='library', **{options!r}))\n"
        "applied = None"
    )
    flags = [f"--{k.replace('_', '-')}" + ("" if v is True else f"={v}") for k, v in options.items()]
    command_line = _probe(
        f"from pix2pix_ilm.cli import main\nassert main(['train', '--name=cli', *{flags!r}]) == 0\napplied = None"
    )
    assert library["faults"] >= 4 * 32  # glibc's defaults: fresh pages for every big allocation
    assert command_line["faults"] * 10 < library["faults"]
