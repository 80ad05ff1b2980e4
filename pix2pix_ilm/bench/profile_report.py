"""The ``bench --profile`` report: convolution GFLOP/s against the matmul peak, the table, markdown, bar chart
(``viz/plots.py``).

The measurement is ``profile.py``; the rules and the arithmetic: docs/bench.md ("Per-operation profile").
"""

from __future__ import annotations

from pathlib import Path

from pix2pix_ilm.bench.conv_layers import LAYER_REPEATS, layer_table
from pix2pix_ilm.bench.options import CONTENDED, norm_label
from pix2pix_ilm.bench.profile import ADAM, CLASSES, DATA, OUTSIDE, UNATTRIBUTED
from pix2pix_ilm.bench.report import align_columns
from pix2pix_ilm.viz.plots import render_bars, save_png

CLASS_LABELS = {
    "conv": "convolution",
    "norm_in": "norm IN",
    "norm_ilm": "norm ILM (meta-net + standardisation)",
    "norm_other": "norm, other (BN/GN/LN)",
    "activation": "activation (ReLU/LeakyReLU/Tanh/dropout)",
    "concat_copy": "concat / copies",
    "loss": "loss (GAN BCE + L1)",
    "other": "other",
}
#: (row key, label) in table order: every class forward and backward, then the rest of the step, then data
ROWS: list[tuple[str, str]] = [
    *((f"{c} {phase}", f"{CLASS_LABELS[c]}, {phase}") for c in CLASSES for phase in ("fwd", "bwd")),
    (ADAM, "Adam (fused step + zero_grad)"),
    (OUTSIDE, "outside ops (Python between ops)"),
    (UNATTRIBUTED, "unattributed (wall - rows)"),
    (DATA, "data loading (real data path, per batch)"),
]
ALWAYS_SHOWN = {"conv fwd", "conv bwd", ADAM, UNATTRIBUTED, DATA}


def fp32_peak(machine: dict) -> float | None:
    """The fp32 matrix-product GFLOP/s that ``machine_info`` measured, or None (``--no-matmul``)."""
    return (machine.get("matmul_gflops") or {}).get("fp32")


def add_figures(result: dict, peak_gflops: float | None) -> dict:
    """``result`` with the derived figures: GFLOP/s of the convolutions forward and backward (their FLOPs ÷
    their profiled time), and of the whole step (all convolution FLOPs ÷ the unprofiled step time), each also
    as a share of ``peak_gflops``; the iteration time (step + data loading)."""
    if "rows" not in result:
        return result
    flops = result["conv_gflop"]
    rates = {
        phase: flops[phase] / (result["rows"][f"conv {phase}"] / 1000)
        for phase in ("fwd", "bwd")
        if result["rows"].get(f"conv {phase}", 0) > 0
    }
    rates["step"] = (flops["fwd"] + flops["bwd"]) / (result["step_ms"] / 1000)
    result["conv_gflops"] = rates
    if peak_gflops:
        result["peak_share"] = {phase: rate / peak_gflops for phase, rate in rates.items()}
        result["step_ms_at_peak"] = (flops["fwd"] + flops["bwd"]) / peak_gflops * 1000
    result["iteration_ms"] = result["wall_ms"] + result["data_ms"]
    return result


def _row_ms(result: dict, key: str) -> float:
    return result["data_ms"] if key == DATA else result["rows"].get(key, 0.0)


def _rate_cell(result: dict, key: str) -> str:
    phase = key.split()[-1] if key.startswith("conv ") else None
    if phase not in result.get("conv_gflops", {}):
        return ""
    share = result.get("peak_share", {}).get(phase)
    return f"{result['conv_gflops'][phase]:.1f}" + (f" ({share:.0%})" if share is not None else "")


def table_rows(results: dict[str, dict]) -> list[list[str]]:
    """Header and one row per class present in any result: ms per step, share of the iteration (step + data
    loading), and for convolutions GFLOP/s (% of the fp32 matmul peak); one column group per result."""
    header = ["class"]
    for name in results:
        header += [f"{name} ms", "share", "GFLOP/s (peak)"]
    rows = [header]
    for key, label in ROWS:
        if key not in ALWAYS_SHOWN and not any(key in r.get("rows", {}) for r in results.values()):
            continue
        row = [label]
        for result in results.values():
            if "rows" not in result or (key not in result["rows"] and key not in ALWAYS_SHOWN):
                row += ["-", "-", ""]  # failed, or no op of this class in this step (e.g. ILM with IN norms)
                continue
            ms = _row_ms(result, key)
            row += [f"{ms:.2f}", f"{ms / result['iteration_ms']:.1%}", _rate_cell(result, key)]
        rows.append(row)
    total = ["iteration (profiled step + data)"]
    for result in results.values():
        total += [f"{result['iteration_ms']:.2f}", "100%", ""] if "rows" in result else ["-", "-", ""]
    return [*rows, total]


def summary_lines(name: str, result: dict) -> list[str]:
    """The totals check, the step's roofline figures and the biggest "other" ops of one result."""
    if "rows" not in result:
        return [f"{name}: failed: {result.get('error')}"]
    attributed = result["wall_ms"] - result["rows"][UNATTRIBUTED]
    low, high = result["step_ms_range"]
    contended = (
        " *contended: other processes took CPU time*" if (result.get("cpu_wait") or 0) > CONTENDED else ""
    )
    lines = [
        f"{name}: profiled step {result['wall_ms']:.2f} ms = rows {attributed:.2f} ms + unattributed "
        f"{result['rows'][UNATTRIBUTED]:.2f} ms; unprofiled step {result['step_ms']:.2f} ms [{low:.2f}-{high:.2f}] "
        f"(profiler and hooks add {result['wall_ms'] / result['step_ms'] - 1:+.0%}){contended}",
    ]
    flops = result["conv_gflop"]["fwd"] + result["conv_gflop"]["bwd"]
    roofline = (
        f"{name}: convolutions {result['conv_gflop']['fwd']:.3f} GFLOP forward + {result['conv_gflop']['bwd']:.3f} "
        f"backward = {flops:.3f} GFLOP per step; / {result['step_ms']:.2f} ms = "
        f"{result['conv_gflops']['step']:.1f} GFLOP/s"
    )
    if "step_ms_at_peak" in result:
        roofline += (
            f" = {result['peak_share']['step']:.0%} of the fp32 matmul peak "
            f"(at the peak the convolutions alone take {result['step_ms_at_peak']:.2f} ms)"
        )
    lines.append(roofline)
    other = ", ".join(f"{op} {ms:.2f}" for op, ms in list(result["other_ops"].items())[:5])
    lines.append(f"{name}: biggest 'other' ops (ms): {other or 'none'}")
    return lines


def _results(report: dict) -> dict[str, dict]:
    """``"<path> <norm pair>"`` (the path only when several are profiled) → result."""
    paths = report["profile"]
    return {
        (f"{path} " if len(paths) > 1 else "") + norm_label(key): result
        for path, per_norm in paths.items()
        for key, result in per_norm.items()
    }


def _heading(report: dict) -> list[str]:
    machine, s = report["machine"], report["settings"]
    peak = fp32_peak(machine)
    return [
        f"pix2pix-ilm bench --profile: G {s['netG']} (ngf {s['ngf']}), D {s['netD']} (ndf {s['ndf']}), "
        f"{s['size']}x{s['size']}, batch {s['batch_size']}, path {', '.join(s['paths'])}",
        f"machine: {machine['cpu']} ({machine['threads']} torch threads), device {machine['device']}"
        + (f" ({machine['gpu']})" if machine.get("gpu") else "")
        + f", torch {machine['torch']}, commit {machine.get('commit')}, load average {machine.get('loadavg_start')}",
        f"fp32 matrix-product peak: {f'{peak:g} GFLOP/s' if peak else 'not measured (--no-matmul)'}"
        + (f", memory copy {machine['copy_gbps']:g} GB/s" if machine.get("copy_gbps") else "")
        + "; "
        f"{s['iters']} profiled steps after {s['warmup']} warm-up and {s['repeats']} x {s['iters']} unprofiled",
    ]


def layer_lines(name: str, result: dict, peak: float | None) -> tuple[str, list[list[str]], str] | None:
    """The per-layer convolution account of one job: its title, table and summary; None if not measured."""
    rows = result.get("conv_layers")
    if not rows:
        return None
    title = (
        f"{name}: convolution layers, each distinct call timed alone (best of {LAYER_REPEATS}; forward, and "
        f"backward with the "
        f"gradients the step takes; % of the fp32 matmul peak); ms/step = calls x (fwd + bwd)"
    )
    table = layer_table(rows, peak)
    total = sum(r["ms"] for r in rows)
    summary = f"{name}: the convolutions timed alone take {total:.1f} ms per step"
    if "rows" in result:
        profiled = _row_ms(result, "conv fwd") + _row_ms(result, "conv bwd")
        summary += f" (in the profiled step: {profiled:.1f} ms)"
    if peak:
        lost = sorted(rows, key=lambda r: r["ms"] - 1000 * r["gflop"] / peak, reverse=True)[:3]
        summary += "; most time lost against the peak in: " + "; ".join(
            f"{r['layer']} ({r['ms'] - 1000 * r['gflop'] / peak:.1f} ms)" for r in lost
        )
    return title, table, summary


def format_profile(report: dict) -> str:
    """The readable report: heading, one table with a column group per profiled job, the summaries, and
    each job's convolution layers."""
    results = _results(report)
    lines = [*_heading(report), "", *align_columns(table_rows(results)), ""]
    for name, result in results.items():
        lines += summary_lines(name, result)
    for name, result in results.items():
        if layers := layer_lines(name, result, fp32_peak(report["machine"])):
            title, table, summary = layers
            lines += ["", title, *align_columns(table), summary]
    return "\n".join(lines)


def _markdown_table(rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(rows[0]) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(rows[0]) - 1)) + "|",
        *("| " + " | ".join(row) + " |" for row in rows[1:]),
    ]


def profile_markdown(report: dict, command: str) -> str:
    """A markdown fragment for docs/performance.md: the heading lines, the table, the summaries, the layers."""
    results = _results(report)
    rows = table_rows(results)
    lines = [f"<!-- {command} -->", "", *(f"{line}  " for line in _heading(report)), ""]
    lines += _markdown_table(rows)
    lines += ["", *(f"* {line}" for name, result in results.items() for line in summary_lines(name, result))]
    for name, result in results.items():
        if layers := layer_lines(name, result, fp32_peak(report["machine"])):
            title, table, summary = layers
            lines += ["", f"{title}:", "", *_markdown_table(table), "", f"* {summary}"]
    return "\n".join(lines) + "\n"


def write_profile_png(report: dict, path: Path) -> None:
    """A horizontal bar chart of ms per step per row (unattributed left out), one bar per profiled job."""
    results = {name: r for name, r in _results(report).items() if "rows" in r}
    keys = [
        (k, label)
        for k, label in ROWS
        if k != UNATTRIBUTED and any(_row_ms(r, k) > 0 for r in results.values())
    ]
    series = {
        f"{name} (iteration {r['iteration_ms']:.1f} ms)": [_row_ms(r, k) for k, _ in keys]
        for name, r in results.items()
    }
    title = _heading(report)[0].replace("pix2pix-ilm bench --profile: ", "")
    save_png(
        render_bars([label for _, label in keys], series, title, "ms per training step"), path, fsync=False
    )
