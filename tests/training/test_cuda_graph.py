"""The training step as one CUDA graph: where it applies, what config.json records; on a CUDA machine, the
captured step against the eager one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pix2pix_ilm.cli import main
from pix2pix_ilm.config import TrainConfig
from pix2pix_ilm.errors import UsageError
from pix2pix_ilm.models.pix2pix import Pix2PixModel
from pix2pix_ilm.training.checkpoint import load_checkpoint
from pix2pix_ilm.training.cuda_graph import TrainingStep, resolve_cuda_graph

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def _config(**options) -> TrainConfig:
    return TrainConfig(name="g", dataroot="d", netG="unet_64", ngf=4, ndf=4, **options)


@pytest.mark.parametrize(
    ("options", "device", "world", "expected"),
    [
        ({}, CPU, 1, "off"),
        ({}, CUDA, 1, "on"),
        ({"cuda_graph": "off"}, CUDA, 1, "off"),
        ({"compile": True}, CUDA, 1, "off"),
        ({"gan_mode": "wgangp"}, CUDA, 1, "off"),
        ({}, CUDA, 2, "off"),
        ({"cuda_graph": "on", "gan_mode": "lsgan", "precision": "bf16"}, CUDA, 1, "on"),
    ],
)
def test_auto_captures_wherever_it_applies(options, device, world, expected):
    assert resolve_cuda_graph(_config(**options), device, world) == expected


@pytest.mark.parametrize(
    ("options", "device", "world", "reason"),
    [
        ({}, CPU, 1, "it needs a CUDA device"),
        ({"compile": True}, CUDA, 1, "--compile compiles the step instead"),
        ({"gan_mode": "wgangp"}, CUDA, 1, "--gan-mode wgangp differentiates twice"),
        ({}, CUDA, 2, "under torchrun"),
    ],
)
def test_on_where_it_cannot_apply_says_why(options, device, world, reason):
    with pytest.raises(UsageError, match=f"--cuda-graph on: {reason}.*use --cuda-graph auto or off"):
        resolve_cuda_graph(_config(cuda_graph="on", **options), device, world)


def _train(root: Path, ckpt: Path, name: str, *extra: str) -> int:
    tiny = ["--netG", "unet_32", "--ngf", "4", "--ndf", "4", "--load-size", "40", "--crop-size", "32"]
    quiet = ["--no-display", "--no-progress", "--n-epochs", "1", "--n-epochs-decay", "1", "--device", "cpu"]
    args = ["--dataroot", str(root), "--name", name, "--checkpoints-dir", str(ckpt), *tiny, *quiet, *extra]
    return main(["train", *args])


def test_a_run_with_its_data_on_the_device_trains_the_same_weights(five_facades, tmp_path):
    """Two epochs of dropout, crops and flips: --data-on-device on gives the DataLoader run's weights bit for
    bit, and config.json records what ran (the CPU runs the step eagerly)."""
    assert _train(five_facades, tmp_path, "loader") == 0
    assert _train(five_facades, tmp_path, "device", "--data-on-device", "on") == 0
    runs = {name: load_checkpoint(tmp_path / name / "latest.pt") for name in ("loader", "device")}
    for part in ("generator", "discriminator"):
        for key, value in runs["loader"][part].items():
            assert torch.equal(runs["device"][part][key], value), key
    saved = {name: json.loads((tmp_path / name / "config.json").read_text())["config"] for name in runs}
    assert (saved["loader"]["data_on_device"], saved["device"]["data_on_device"]) == ("off", "on")
    assert saved["loader"]["cuda_graph"] == saved["device"]["cuda_graph"] == "off"


def test_cuda_graph_on_without_cuda_is_one_line_before_any_work(five_facades, tmp_path, capsys):
    assert _train(five_facades, tmp_path, "g", "--cuda-graph", "on") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "pix2pix-ilm train: error: --cuda-graph on: it needs a CUDA device; use --cuda-graph auto or off"
    ]
    assert not (tmp_path / "g").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize(("precision", "rtol"), [("fp32", 1e-5), ("bf16", 2e-2)])
def test_the_captured_step_gives_the_eager_steps_losses(precision, rtol):
    """100 steps from one seed, with dropout: eager, and captured after 3 eager steps, the same losses."""
    config = _config(device="cuda", precision=precision, netG="unet_256", load_size=256, crop_size=256)
    gen = torch.Generator().manual_seed(0)
    batches = [
        tuple(torch.rand(1, 3, 256, 256, generator=gen).cuda() * 2 - 1 for _ in range(2)) for _ in range(4)
    ]
    runs = {}
    for captured in (False, True):
        torch.manual_seed(0)
        model = Pix2PixModel(config, CUDA)
        model.set_learning_rate(1)
        step = TrainingStep(model, captured=captured)
        runs[captured] = [
            {k: float(v) for k, v in step(*batches[i % len(batches)]).items()} for i in range(100)
        ]
    assert runs[True][0].keys() == {"G_GAN", "G_L1", "D_real", "D_fake"}
    for eager, graphed in zip(runs[False], runs[True], strict=True):
        for key, value in eager.items():
            assert graphed[key] == pytest.approx(value, rel=rtol), key
