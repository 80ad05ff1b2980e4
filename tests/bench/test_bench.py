"""The benchmark: its eager baseline computes what ``Pix2PixModel.optimize_parameters`` computes; the CLI's report.

No timings are asserted: benchmarks are not run in CI.
"""

from __future__ import annotations

import argparse
import json
import math

import pytest
import torch
from torch import nn

from pix2pix_ilm.bench import options, probes
from pix2pix_ilm.bench.baseline import BaselinePix2Pix, baseline_train_step
from pix2pix_ilm.bench.worker import bench_config, path_settings
from pix2pix_ilm.cli import main
from pix2pix_ilm.config import TrainConfig
from pix2pix_ilm.errors import UsageError
from pix2pix_ilm.models.pix2pix import Pix2PixModel

CPU = torch.device("cpu")
# unet_32 has no dropout layer: dropout masks are drawn in memory order, so a channels-last tensor gets a
# different (equally valid) mask than a contiguous one for the same seed, and the paths could not be compared.
TINY = {
    "size": 32,
    "netG": "unet_32",
    "netD": "basic",
    "ngf": 4,
    "ndf": 4,
    "batch_size": 2,
    "seed": 0,
    "device": "cpu",
}
NORM_PAIRS = [("instance", "instance"), ("ilm_in", "ilm_in")]
STEPS = 3


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    """Tiny models: one thread is as fast, and two threads stall badly when another process holds a core."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # for the worker processes
    yield
    torch.set_num_threads(previous)


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    shape = (TINY["batch_size"], 3, TINY["size"], TINY["size"])
    return torch.rand(shape, generator=generator) * 2 - 1, torch.rand(shape, generator=generator) * 2 - 1


def _run_both(norms: tuple[str, str], overrides: dict) -> tuple[Pix2PixModel, BaselinePix2Pix, list, list]:
    """Same init, same inputs, ``STEPS`` steps each; returns both models and their per-step losses."""
    real_a, real_b = _inputs()
    torch.manual_seed(0)
    ours = Pix2PixModel(bench_config(TINY, list(norms), overrides), CPU)
    torch.manual_seed(0)
    baseline = BaselinePix2Pix(bench_config(TINY, list(norms), {}), CPU)
    ours_losses, baseline_losses = [], []
    for step in range(STEPS):
        torch.manual_seed(100 + step)
        ours_losses.append({k: float(v) for k, v in ours.optimize_parameters(real_a, real_b).items()})
        torch.manual_seed(100 + step)
        baseline_losses.append(
            {k: float(v) for k, v in baseline_train_step(baseline, real_a, real_b).items()}
        )
    return ours, baseline, ours_losses, baseline_losses


def _biases_cancelled_by_instance_norm(net: nn.Module) -> set[str]:
    """Names of conv biases directly followed by a non-affine InstanceNorm2d.

    The norm subtracts the per-channel mean, so such a bias changes nothing and its gradient is pure rounding
    noise (~1e-9); Adam divides by sqrt(v) + 1e-8 and turns that noise into steps of up to ±lr. Two numerically
    equivalent implementations therefore move these biases differently (junyanz's networks have them too).
    """
    names = set()
    for prefix, module in net.named_modules():
        if not isinstance(module, nn.Sequential):
            continue
        layers = list(module.named_children())
        for (name, layer), (_, following) in (layers[i : i + 2] for i in range(len(layers) - 1)):
            conv = isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)) and layer.bias is not None
            if conv and isinstance(following, nn.InstanceNorm2d) and not following.affine:
                names.add(f"{prefix}.{name}.bias" if prefix else f"{name}.bias")
    return names


def _assert_same_weights(ours: nn.Module, baseline: nn.Module, lr: float) -> None:
    """Updated weights agree to ~1e-5 relative, apart from Adam-amplified rounding noise.

    Adam's first steps are ~lr·sign(gradient), so an element whose gradient is ~0 can step either way when the
    two implementations round differently: every element must agree to within Adam's step bound, and all but
    a handful (0.1%) to 1e-5 of the tensor's scale. Biases cancelled by instance norm are compared only
    against the bound (see :func:`_biases_cancelled_by_instance_norm`).
    """
    noisy = _biases_cancelled_by_instance_norm(baseline)
    baseline_params = dict(baseline.named_parameters())
    total = off = 0
    for name, param in ours.named_parameters():
        expected = baseline_params[name]
        diff = (param.detach() - expected.detach()).abs()
        assert diff.max() <= 2 * lr * STEPS, f"{name} differs by {diff.max():.2e}, more than Adam's steps"
        if name in noisy:
            continue
        total += diff.numel()
        off += int((diff > 1e-5 * expected.abs().max() + 1e-8).sum())
    assert off <= max(1, total // 1000), f"{off} of {total} weights differ by more than 1e-5 relative"


def _assert_same_gradients(ours: nn.Module, baseline: nn.Module) -> None:
    """Gradients left by the last step (D's from the D step, G's from the G step) agree to ~1e-5."""
    baseline_params = dict(baseline.named_parameters())
    scale = max(p.grad.abs().max() for p in baseline.parameters() if p.grad is not None)
    for name, param in ours.named_parameters():
        expected = baseline_params[name].grad
        assert (param.grad is None) == (expected is None), name
        if expected is not None:
            torch.testing.assert_close(param.grad, expected, rtol=1e-4, atol=1e-5 * float(scale), msg=name)


def test_baseline_uses_the_project_defaults():
    """The baseline hard-codes pix2pix's hyper-parameters; they must be TrainConfig's defaults."""
    config = TrainConfig(dataroot="", name="x")
    nets = BaselinePix2Pix(bench_config(TINY, ["instance", "instance"], {}), CPU)
    assert (config.gan_mode, config.lambda_l1, config.lr, config.beta1) == (
        "vanilla",
        nets.lambda_l1,
        2e-4,
        0.5,
    )
    for opt in (nets.opt_g, nets.opt_d):
        assert opt.param_groups[0]["lr"] == config.lr and opt.param_groups[0]["betas"] == (
            config.beta1,
            0.999,
        )


@pytest.mark.parametrize("norms", NORM_PAIRS, ids=["IN", "ILM+IN"])
@pytest.mark.parametrize("path", ["default", "channels_last"])
def test_fp32_step_matches_the_eager_baseline(path, norms):
    overrides, _ = options.parse_path(path)
    ours, baseline, ours_losses, baseline_losses = _run_both(norms, overrides)
    for step in range(STEPS):
        got, expected = ours_losses[step], baseline_losses[step]
        assert set(got) == set(expected) == {"G_GAN", "G_L1", "D_real", "D_fake"}
        for name in expected:
            assert got[name] == pytest.approx(expected[name], rel=1e-5), f"step {step} {name}"
    for ours_net, baseline_net in (
        (ours.generator, baseline.generator),
        (ours.discriminator, baseline.discriminator),
    ):
        _assert_same_gradients(ours_net, baseline_net)
        _assert_same_weights(ours_net, baseline_net, ours.config.lr)
    if path == "channels_last":
        assert ours.generator.model.model[0].weight.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.skipif(not torch.ops.mkldnn._is_mkldnn_bf16_supported(), reason="no native bf16 on this CPU")
@pytest.mark.parametrize("norms", NORM_PAIRS, ids=["IN", "ILM+IN"])
def test_bf16_step_is_close_to_the_eager_baseline(norms):
    _, _, ours_losses, baseline_losses = _run_both(norms, {"precision": "bf16"})
    for step in range(STEPS):
        got, expected = ours_losses[step], baseline_losses[step]
        for name in expected:
            assert got[name] == pytest.approx(expected[name], rel=3e-2, abs=1e-3), name


def test_paths_and_norms_parse():
    assert options.parse_path("default") == ({}, None)
    assert options.parse_path("bf16+channels_last+threads=1") == (
        {"precision": "bf16", "channels_last": True, "compile": False},
        1,
    )
    # A path that names features runs exactly those, whatever the device's defaults are.
    assert options.parse_path("channels_last")[0] == options.FEATURES_OFF | {"channels_last": True}
    with pytest.raises(UsageError, match="unknown path part 'fp8'"):
        options.parse_path("bf16+fp8")
    with pytest.raises(UsageError, match="positive thread count"):
        options.parse_path("threads=0")
    assert options.parse_norms("IN/IN, ILM+IN/ILM+IN,batch") == [
        ("instance", "instance"),
        ("ilm_in", "ilm_in"),
        ("batch", "batch"),
    ]
    with pytest.raises(UsageError, match="unknown norm"):
        options.parse_norms("IN/XN")
    paths = options.all_paths()
    assert (
        "channels_last+bf16+compile" in paths and len(paths) == 11
    )  # 2^3 combinations, 2 ablations, 1 thread
    assert {"native_conv", "system_malloc", "threads=1"} <= set(paths)
    assert options.parse_path("native_conv") == ({"native_conv": True}, None)
    assert options.path_unavailable("native_conv", torch.device("cuda")) is not None


def test_the_default_path_is_what_train_does_on_the_device(monkeypatch):
    """The default path takes train's automatic settings for the device; a named path sets every feature."""
    norms = ["instance", "instance"]
    cpu = {"precision": "fp32", "channels_last": False, "compile": False}
    assert path_settings(bench_config(TINY, norms, {})) == cpu
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a faked GPU: nothing runs on it
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    gpu = TINY | {"device": "cuda"}
    assert path_settings(bench_config(gpu, norms, {})) == cpu | {"precision": "bf16", "channels_last": True}
    named = options.parse_path("channels_last")[0]
    assert path_settings(bench_config(gpu, norms, named)) == cpu | {"channels_last": True}
    named = options.parse_path("compile")[0]
    assert path_settings(bench_config(gpu, norms, named)) == cpu | {"compile": True}


def _check_report(report: dict, paths: list[str]) -> None:
    assert set(report) >= {"machine", "settings", "train", "inference", "ilm_cost", "inference_ilm_cost"}
    assert {"cpu", "torch", "threads", "device"} <= set(report["machine"])
    assert report["machine"]["cpu"] and report["machine"]["torch"] == torch.__version__
    assert list(report["train"]) == ["baseline", *paths]
    for path in ["baseline", *paths]:
        for key in report["settings"]["norms"]:
            result = report["train"][path][key]
            assert "error" not in result, result
            assert {"median", "min", "max", "ratio", "peak_rss_mib"} <= set(result)
            assert result["min"] <= result["median"] <= result["max"]
            assert result["rounds"] == int(report["settings"]["repeats"])
            if path != "baseline":  # the paired ratio of the same rounds, with its interval
                interval = result["ratio_interval"]
                assert interval["ratio"] == result["ratio"] and interval["n"] == result["rounds"]
    assert report["train"]["baseline"]["instance/instance"]["ratio"] == 1.0


TINY_BENCH = ["bench", "--size", "32", "--netG", "unet_32", "--ngf", "4", "--ndf", "4"]
TINY_BENCH += ["--iters", "2", "--warmup", "1", "--repeats", "2", "--infer-repeats", "3"]


def test_bench_end_to_end_in_process(capsys, tmp_path):
    json_path = tmp_path / "bench.json"
    code = main(
        [
            *TINY_BENCH,
            "--paths",
            "default",
            "--images",
            "2",
            "--device",
            "cpu",
            "--in-process",
            "--json",
            str(json_path),
        ]
    )
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    report = json.loads(lines[-1])
    assert json.loads(json_path.read_text()) == report
    assert "training step" in lines and any(line.startswith("default [fp32] ") for line in lines)
    _check_report(report, ["default"])
    fp32 = {"precision": "fp32", "channels_last": False, "compile": False}
    for task in ("train", "inference"):
        assert all(r["path_settings"] == fp32 for r in report[task]["default"].values())
        assert all("path_settings" not in r for r in report[task]["baseline"].values())
    for path in ("baseline", "default"):  # counted on CUDA only (torch's sync debug mode)
        assert all(r["host_syncs_per_step"] is None for r in report["train"][path].values())
    assert report["settings"]["norms"] == ["instance/instance", "ilm_in/ilm_in"]
    assert set(report["ilm_cost"]["default"]) == {"ilm_in/ilm_in"}
    for path in ("baseline", "default"):
        for result in report["inference"][path].values():
            assert {"median", "img_s_steady", "startup_s", "ratio"} <= set(result) and result["images"] == 2
            assert result["rounds"] == 3  # --infer-repeats, not --repeats
    assert set(report["inference_ilm_cost"]["default"]) == {"ilm_in/ilm_in"}
    matmul = report["matmul_in_rounds"]  # the fp32 product took its turn in every training round
    assert matmul["rounds"] == 2 and matmul["median"] > 0 and matmul["products_per_block"] >= 1
    for path in ("baseline", "default"):
        for result in report["train"][path].values():
            share = result["roofline"]
            assert share["n"] == 2 and 0 < share["low"] <= share["ratio"] <= share["high"]
    assert any("of the fp32 matrix product in the same rounds" in line for line in lines)


def test_bench_end_to_end_with_worker_processes(capsys):
    """The default mode: every measurement in its own ``python -m pix2pix_ilm bench --worker`` process."""
    code = main(
        [
            *TINY_BENCH,
            "--paths",
            "channels_last",
            "--norms",
            "IN/IN",
            "--infer-paths",
            "none",
            "--device",
            "cpu",
            "--no-matmul",
        ]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    _check_report(report, ["channels_last"])
    assert report["machine"]["matmul_gflops"] is None
    assert report["matmul_in_rounds"] is None  # --no-matmul: no product in the rounds either
    assert "roofline" not in report["train"]["channels_last"]["instance/instance"]
    assert report["inference"] == {} and report["ilm_cost"] == {}
    assert report["train"]["channels_last"]["instance/instance"]["peak_rss_since_start"] in (True, False)


def test_block_and_round_defaults_depend_on_the_mode() -> None:
    """Unset --iters / --repeats: one-step blocks in many rounds for the benchmark, a few longer ones for the
    profile; a value given on the command line is kept in both modes."""
    parser = argparse.ArgumentParser()
    options.add_bench_arguments(parser)
    bench = options.options_from_args(parser.parse_args([]), CPU)
    assert (bench["iters"], bench["repeats"], bench["infer_repeats"]) == (1, 24, 8)
    profile = options.options_from_args(parser.parse_args(["--profile"]), CPU)
    assert (profile["iters"], profile["repeats"]) == (3, 3)
    given = options.options_from_args(parser.parse_args(["--profile", "--iters", "5", "--repeats", "2"]), CPU)
    assert (given["iters"], given["repeats"]) == (5, 2)
    with pytest.raises(UsageError, match="--infer-repeats must be >= 1"):
        options.options_from_args(parser.parse_args(["--infer-repeats", "0"]), CPU)
    with pytest.raises(UsageError, match="--until-resolved must be >= 0"):
        options.options_from_args(parser.parse_args(["--until-resolved", "-1"]), CPU)


def test_until_resolved_adds_rounds_up_to_its_limit(capsys):
    args = [*TINY_BENCH, "--paths", "default", "--norms", "IN/IN", "--infer-paths", "none"]
    code = main([*args, "--device", "cpu", "--in-process", "--no-matmul", "--until-resolved", "4"])
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    report = json.loads(lines[-1])
    rounds = report["train"]["default"]["instance/instance"]["rounds"]
    assert 2 <= rounds <= 4 and report["settings"]["until_resolved"] == 4
    assert any(line.startswith("rounds per group: default ") for line in lines)
    assert any("(then more, up to 4, until every ratio resolves 2%)" in line for line in lines)


def test_bench_usage_errors(capsys):
    assert main(["bench", "--size", "48", "--netG", "unet_32"]) == 2
    assert "multiple of 32" in capsys.readouterr().err
    assert main(["bench", "--paths", "turbo"]) == 2
    assert "unknown path part 'turbo'" in capsys.readouterr().err


def test_matmul_rates_stop_growing_at_the_time_budget() -> None:
    # budget 0: every dtype is measured once at the smallest size, so a dtype the CPU emulates in software
    # (bf16 ran at 0.1 GFLOP/s on an AMD EPYC: 2048³ took 160 s a product) cannot stall the bench.
    rates = probes.matmul_rates(torch.device("cpu"), budget_s=0.0)
    assert set(rates) == {"fp32", "bf16", "fp16"}
    assert all(rate > 0 and math.isfinite(rate) for rate in rates.values())


def test_memory_bandwidth_is_a_positive_rate() -> None:
    rate = probes.memory_bandwidth(torch.device("cpu"), mib=8)
    assert rate > 0 and math.isfinite(rate)
