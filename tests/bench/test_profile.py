"""``bench --profile``: the per-class attribution adds up to the step, conv FLOPs match a hand count, outputs.

Timings are only checked against each other (rows against the step's wall time), never against a number.
"""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from pix2pix_ilm.bench.interleave import measure_once
from pix2pix_ilm.bench.profile import UNATTRIBUTED
from pix2pix_ilm.bench.profile_report import add_figures, format_profile, write_profile_png
from pix2pix_ilm.cli import main

from .test_bench import TINY as BENCH_TINY

CPU = torch.device("cpu")
TINY = BENCH_TINY | {"batch_size": 1, "iters": 2, "warmup": 1, "repeats": 1, "retries": 0}
TINY_ARGS = ["--size", "32", "--netG", "unet_32", "--ngf", "4", "--ndf", "4", "--iters", "2", "--warmup", "1"]
# Forward FLOPs per sample, 2·|W|·positions per layer (positions: output pixels; input pixels for a transposed
# convolution). unet_32, ngf 4, 32² input; (down, up) per level from the outside in:
#   3→4 at 16²: 2·192·256 = 98304,       up 8→3 from 16²: 2·384·256 = 196608
#   4→8 at 8²:  2·512·64 = 65536,        up 16→4 from 8²: 2·1024·64 = 131072
#   8→16 at 4²: 2·2048·16 = 65536,       up 32→8 from 4²: 2·4096·16 = 131072
#   16→32 at 2²: 2·8192·4 = 65536,       up 64→16 from 2²: 2·16384·4 = 131072
#   32→32 at 1²: 2·16384·1 = 32768,      up 32→32 from 1²: 2·16384·1 = 32768
G_FORWARD, G_FIRST = 950_272, 98_304
# basic PatchGAN, ndf 4, 6 channels at 32²: 6→4 at 16² (196608), 4→8 at 8² (65536), 8→16 at 4² (65536),
# 16→32 at 3² (147456), 32→1 at 2² (4096)
D_FORWARD, D_FIRST = 479_232, 196_608


@pytest.fixture(scope="module")
def profiles() -> dict[str, dict]:
    """One tiny profile per norm pair, in this process (two profiled steps each)."""
    return {
        name: measure_once({"task": "profile", "path": "default", "norms": [norm] * 2, "options": TINY}, True)
        for name, norm in (("IN", "instance"), ("ILM", "ilm_in"))
    }


def test_rows_add_up_to_the_profiled_step(profiles):
    for result in profiles.values():
        rows = result["rows"]
        # every op's self time has a row: what is left is the profiler's own time between steps
        assert abs(rows[UNATTRIBUTED]) <= 0.05 * result["wall_ms"]
        assert sum(rows.values()) == pytest.approx(result["wall_ms"])
        assert rows["conv fwd"] > 0 and rows["conv bwd"] > 0 and rows["adam"] > 0
        assert rows.get("other fwd", 0) + rows.get("other bwd", 0) < 0.1 * result["wall_ms"]
        assert result["conv_gflop"]["fwd"] * 1e9 == pytest.approx(G_FORWARD + 3 * D_FORWARD)
        assert result["data_ms"] > 0 and result["step_ms"] > 0


def test_ilm_rows_only_for_ilm_norms(profiles):
    plain, ilm = profiles["IN"]["rows"], profiles["ILM"]["rows"]
    assert "norm_ilm fwd" not in plain and "norm_ilm bwd" not in plain
    assert plain["norm_in fwd"] > 0 and plain["norm_in bwd"] > 0
    assert ilm["norm_ilm fwd"] > 0 and ilm["norm_ilm bwd"] > 0
    assert "norm_in fwd" not in ilm  # ILM's standardisation is part of the ILM row


def test_figures_and_table_against_the_peak(profiles):
    result = add_figures(dict(profiles["IN"]), peak_gflops=100.0)
    total = result["conv_gflop"]["fwd"] + result["conv_gflop"]["bwd"]
    assert result["conv_gflops"]["step"] == pytest.approx(total / (result["step_ms"] / 1000))
    assert result["peak_share"]["step"] == pytest.approx(result["conv_gflops"]["step"] / 100.0)
    assert result["step_ms_at_peak"] == pytest.approx(total / 100.0 * 1000)
    report = {
        "machine": {
            "cpu": "test",
            "threads": 1,
            "device": "cpu",
            "torch": "x",
            "matmul_gflops": {"fp32": 100.0},
        },
        "settings": {**TINY, "paths": ["default"]},
        "profile": {"default": {"instance/instance": result}},
    }
    text = format_profile(report)
    assert "convolution, fwd" in text and "% of the fp32 matmul peak" in text and "norm ILM" not in text


def test_bar_chart_is_a_png(profiles, tmp_path):
    report = {
        "machine": {"cpu": "test", "threads": 1, "device": "cpu", "torch": "x", "matmul_gflops": None},
        "settings": {**TINY, "paths": ["default"]},
        "profile": {"default": {f"{k}/{k}": add_figures(dict(r), None) for k, r in profiles.items()}},
    }
    write_profile_png(report, tmp_path / "charts" / "profile.png")
    assert (tmp_path / "charts" / "profile.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(tmp_path / "charts" / "profile.png") as image:
        image.verify()


def test_cli_profile_writes_table_json_and_markdown(capsys, tmp_path):
    md, js = tmp_path / "profile.md", tmp_path / "profile.json"
    code = main(
        ["bench", "--profile", "--in-process", "--no-matmul", "--repeats", "1", "--norms", "IN/IN"]
        + [*TINY_ARGS, "--profile-md", str(md), "--json", str(js)]
    )
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    report = json.loads(lines[-1])
    assert report == json.loads(js.read_text())
    assert set(report["profile"]["default"]) == {"instance/instance"}
    assert any(line.startswith("convolution, fwd") for line in lines)
    text = md.read_text()
    assert "| convolution, bwd |" in text and "--profile --size 32 --netG unet_32" in text
    layers = report["profile"]["default"]["instance/instance"]["conv_layers"]
    assert layers and all(row["ms"] > 0 for row in layers)
    assert any("convolution layers, each distinct call timed alone" in line for line in lines)
    assert "| all convolutions |" in text and "| G 1 conv 3→4 1×32² → 16² |" in text


def test_cli_profile_usage_errors(capsys):
    assert main(["bench", "--profile", "--paths", "compile"]) == 2
    assert "torch.compile" in capsys.readouterr().err
    assert main(["bench", "--profile-png", "x.png"]) == 2
    assert "go with --profile" in capsys.readouterr().err
