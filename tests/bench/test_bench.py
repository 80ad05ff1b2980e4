"""``pix2pix-ilm bench`` on tiny networks: its figures, the peak, the FLOP count and the ILM cost."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from pix2pix_ilm.bench import measure, run
from pix2pix_ilm.bench.run import parse_norms, parse_setting, parse_settings
from pix2pix_ilm.cli import main
from pix2pix_ilm.errors import UsageError

TINY = ["--size", "32", "--netG", "unet_32", "--ngf", "4", "--ndf", "4", "--device", "cpu"]


def test_the_bench_runs_through_the_cli_and_reports_every_figure(tmp_path: Path, capsys):
    path = tmp_path / "bench.json"
    assert main(["bench", *TINY, "--warmup", "1", "--min-time", "0.2", "--json", str(path)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    report = json.loads(out[-1])
    assert json.loads(path.read_text()) == report
    assert any(line.startswith("default") and "ILM+IN/ILM+IN" in line for line in out)
    peak = report["peak"]
    assert peak["gflops"] == max(peak["mm_gflops"], peak["conv1x1_gflops"]) > 0
    plain, ilm = report["rows"]
    assert (plain["label"], ilm["label"]) == ("IN/IN", "ILM+IN/ILM+IN")
    for row in (plain, ilm):
        assert row["resolved"] == {
            "precision": "fp32",
            "channels_last": False,
            "compile": False,
            "cuda_graph": "off",
        }
        # the step time is the median of the timed blocks, its spread their interquartile range
        times = row["step_times_s"]
        assert min(times) > 0 and row["step_s"] == pytest.approx(np.median(times))
        assert row["step_iqr_s"] == pytest.approx(np.percentile(times, 75) - np.percentile(times, 25))
        assert row["memory_mib"] > 0 and row["infer_img_s"] > 0 and row["host_syncs_per_step"] is None
    # the derived figures (it/s, GFLOP/s, share of peak, ILM cost) from known times: the next test
    assert plain["conv_gflop"] == ilm["conv_gflop"] > 0  # ILM adds no convolution
    assert plain["ilm_cost"] is None and ilm["ilm_cost"] > 0


def _fake_row(train, config) -> dict:
    """A row as measure_row returns it, without measuring: ILM+IN 1.25x IN, channels_last twice as fast."""
    if train.netG_norm == "batch":
        return {"error": "RuntimeError: out of memory"}
    step = {"instance": 0.2, "ilm_in": 0.25}[train.netG_norm] * (0.5 if train.channels_last else 1.0)
    return {
        "step_s": step,
        "step_iqr_s": 0.01,
        "step_times_s": [step],
        "memory_mib": 10.0,
        "conv_gflop": 2.0,
        "host_syncs_per_step": None,
        "kernel_s": None,
        "infer_s": 0.1,
        "infer_iqr_s": 0.0,
    }


def test_rows_per_setting_and_norm_pair_with_their_ilm_cost_and_failures(monkeypatch, capsys):
    monkeypatch.setattr(run, "_in_fresh_process", _fake_row)
    peak = {"gflops": 100.0, "mm_gflops": 80.0, "conv1x1_gflops": 100.0, "mm_size": 2048, "conv_batch": 1}
    monkeypatch.setattr(run, "peak_gflops", lambda device: peak)
    assert (
        main(["bench", "--device", "cpu", "--settings", "default,channels_last", "--norms", "IN,ILM+IN,BN"])
        == 0
    )
    out = capsys.readouterr().out.strip().splitlines()
    rows = json.loads(out[-1])["rows"]
    assert [(r["setting"], r["label"], r["resolved"]["channels_last"]) for r in rows] == [
        ("default", "IN/IN", False),  # what train picks on a CPU
        ("default", "ILM+IN/ILM+IN", False),
        ("default", "BN/BN", False),
        ("channels_last", "IN/IN", True),
        ("channels_last", "ILM+IN/ILM+IN", True),
        ("channels_last", "BN/BN", True),
    ]
    assert [r["ilm_cost"] for r in rows if "error" not in r] == [None, pytest.approx(1.25)] * 2
    assert rows[0]["it_s"] == pytest.approx(5.0) and rows[3]["it_s"] == pytest.approx(10.0)
    assert rows[0]["conv_gflops"] == pytest.approx(10.0) and rows[0]["peak_share"] == pytest.approx(0.1)
    assert rows[0]["infer_img_s"] == pytest.approx(10.0) and rows[3]["peak_share"] == pytest.approx(0.2)
    # the table: step ms, IQR, it/s, ILM cost, GFLOP/s, % peak, MiB, img/s, runs, total it/s, GPU busy of the
    # known times above
    row = ["200.0", "10.0", "5.00", "-", "10.0", "10%", "10", "10.00", "1", "5.00", "-"]
    assert out[3].split() == ["default", "IN/IN", *row]
    assert out[7].split()[2:] == [
        "125.0",
        "10.0",
        "8.00",
        "1.250",
        "16.0",
        "16%",
        "10",
        "10.00",
        "1",
        "8.00",
        "-",
    ]
    assert sum("BN/BN" in line and "failed: RuntimeError: out of memory" in line for line in out) == 2


def test_peak_is_the_faster_of_the_two_probes(monkeypatch):
    mm_flop, conv_flop = 2 * 2048**3, 2 * 1024 * 1024 * 32 * 32
    for mm_s, conv_s in ((0.1, 0.001), (0.001, 0.1)):
        seconds = iter([mm_s, conv_s])  # the matrix product is timed first, then the 1x1 convolution

        def fake_timed(fn, min_time, seconds=seconds):
            return SimpleNamespace(times=[next(seconds), 9.0])  # the fastest block counts

        monkeypatch.setattr(measure, "timed", fake_timed)
        peak = measure.peak_gflops(torch.device("cpu"))
        assert peak["mm_gflops"] == pytest.approx(mm_flop / mm_s / 1e9)
        assert peak["conv1x1_gflops"] == pytest.approx(conv_flop / conv_s / 1e9)
        assert peak["gflops"] == max(peak["mm_gflops"], peak["conv1x1_gflops"])


def test_conv_flop_of_a_step_matches_a_hand_count():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.ConvTranspose2d(4, 2, 4, stride=2, padding=1)
    )
    x = torch.randn(2, 3, 8, 8)
    # per pass: 2 x (weights per output value) x (output positions, or input positions if transposed) x batch
    conv = 2 * (4 * 3 * 3 * 3) * (8 * 8) * 2
    transposed = 2 * (4 * 2 * 4 * 4) * (8 * 8) * 2
    # forward, then the weight gradients of both and the input gradient of the transposed layer only: x
    # needs none, so the first layer's is not taken; the bias gradients are sums and not counted
    assert measure.conv_flop(lambda: net(x).sum().backward()) == 2 * conv + 3 * transposed
    x.requires_grad_(True)
    assert measure.conv_flop(lambda: net(x).sum().backward()) == 3 * conv + 3 * transposed


def test_settings_and_norm_pairs_are_parsed_and_checked(capsys):
    assert parse_setting("default") == {}
    assert parse_setting("bf16+channels_last") == {
        "precision": "bf16",
        "channels_last": True,
        "compile": False,
        "cuda_graph": "off",
    }
    assert parse_setting("fp32") == {
        "precision": "fp32",
        "channels_last": False,
        "compile": False,
        "cuda_graph": "off",
    }
    assert parse_setting("bf16+cuda_graph")["cuda_graph"] == "on"
    assert list(parse_settings("default, fp32+compile")) == ["default", "fp32+compile"]
    assert parse_norms("IN/IN, ilm+in/instance,GN") == ["instance/instance", "ilm_in/instance", "group/group"]
    bad = [(parse_settings, "fast"), (parse_settings, ","), (parse_settings, "bf16+fast")]
    for parse, text in [*bad, (parse_norms, "IN/XX"), (parse_norms, ",")]:
        with pytest.raises(UsageError):
            parse(text)
    assert main(["bench", *TINY, "--settings", "bf17"]) == 2
    assert "unknown 'bf17'" in capsys.readouterr().err


def test_runs_measured_at_once_add_their_rates_and_gpu_shares():
    """Two runs at once, by hand: steps of 0.5 s and 0.25 s are 2 + 4 = 6 steps/s together; kernels of 0.25 s
    and 0.2 s per step keep the GPU busy 50 % + 80 % = 130 % of one run's wall time (overlapping)."""
    rows = [
        {"step_s": 0.5, "kernel_s": 0.25, "conv_gflop": 1.0, "infer_s": 0.1},
        {"step_s": 0.25, "kernel_s": 0.2, "conv_gflop": 1.0, "infer_s": 0.1},
    ]
    row = run._figures(run.combined(rows), batch=1, peak=10.0)
    assert (row["runs"], row["run_step_s"], row["step_s"]) == (2, [0.5, 0.25], 0.375)
    assert row["total_it_s"] == pytest.approx(6.0) and row["gpu_busy"] == pytest.approx(1.3)
    alone = run._figures(run.combined(rows[:1]), batch=1, peak=10.0)
    assert (alone["runs"], alone["total_it_s"], alone["gpu_busy"]) == (1, 2.0, 0.5)
    assert run._figures(run.combined([{**rows[0], "kernel_s": None}] * 2), 1, 10.0)["gpu_busy"] is None


def test_runs_at_once_through_the_cli(capsys):
    assert main(["bench", *TINY, "--norms", "IN", "--warmup", "1", "--min-time", "0.2", "--runs", "2"]) == 0
    (row,) = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["rows"]
    assert row["runs"] == 2 and len(row["run_step_s"]) == 2 and all(s > 0 for s in row["run_step_s"])
    assert row["gpu_busy"] is None  # no GPU: nothing to profile
    assert main(["bench", *TINY, "--runs", "0"]) == 2
    assert main(["bench", *TINY, "--runs", "2", "--runs-as", "streams"]) == 2
    assert (
        "--runs-as streams replays CUDA graphs; setting default runs the step eagerly"
        in capsys.readouterr().err
    )
    assert main(["bench", *TINY, "--settings", "bf16+cuda_graph"]) == 2
    assert (
        "--settings bf16+cuda_graph: the step cannot be captured as a CUDA graph: it needs a CUDA device"
        in (capsys.readouterr().err)
    )
