"""``pix2pix-ilm bench``: every speed setting × norm pair in a fresh process, then a table and one JSON line."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import multiprocessing
import platform
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch

from pix2pix_ilm.bench.measure import measure_row, peak_gflops
from pix2pix_ilm.config import BenchConfig, TrainConfig, config_to_dict
from pix2pix_ilm.device import resolve_device, with_device_defaults
from pix2pix_ilm.errors import UsageError, first_line
from pix2pix_ilm.files import atomic_write_text, check_output_files
from pix2pix_ilm.models.networks import unet_depth
from pix2pix_ilm.models.norm_specs import NORM_NAMES, NORMS
from pix2pix_ilm.training.cuda_graph import cuda_graph_problem, resolve_cuda_graph
from pix2pix_ilm.version import __version__

#: A setting other than ``default`` turns on exactly its features: fp32, contiguous and eager otherwise.
FEATURES: dict[str, dict[str, Any]] = {
    "fp32": {},
    "bf16": {"precision": "bf16"},
    "channels_last": {"channels_last": True},
    "compile": {"compile": True},
    "cuda_graph": {"cuda_graph": "on"},
}
NORM_ALIASES = {"in": "instance", "bn": "batch", "gn": "group", "ln": "layer"}
NORM_ALIASES |= {f"ilm+{k}": f"ilm_{k}" for k in ("in", "gn", "ln")}
NORM_LABELS = {v: k.upper() for k, v in NORM_ALIASES.items()}


def parse_setting(name: str) -> dict[str, Any]:
    """``default`` → {} (what ``train`` picks for the device); ``bf16+channels_last`` → the TrainConfig fields."""
    if name == "default":
        return {}
    overrides: dict[str, Any] = {"precision": "fp32", "channels_last": False, "compile": False}
    overrides["cuda_graph"] = "off"
    for part in name.split("+"):
        if part not in FEATURES:
            raise UsageError(
                f"--settings: unknown {part!r} in {name!r}; valid: default, {', '.join(FEATURES)}"
            )
        overrides |= FEATURES[part]
    return overrides


def parse_settings(text: str) -> dict[str, dict[str, Any]]:
    """``"default,bf16+channels_last"`` → each setting's TrainConfig fields (:func:`parse_setting`)."""
    settings = {name: parse_setting(name) for name in filter(None, (p.strip() for p in text.split(",")))}
    if not settings:
        raise UsageError("--settings: give at least one setting, e.g. default")
    return settings


def parse_norms(text: str) -> list[str]:
    """``"IN/IN,ILM+IN/ILM+IN"`` → ``["instance/instance", "ilm_in/ilm_in"]``; a lone X is X/X."""
    pairs = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        names = [NORM_ALIASES.get(n.strip().lower(), n.strip().lower()) for n in item.split("/")]
        names = names * 2 if len(names) == 1 else names
        if len(names) != 2 or any(n not in NORM_NAMES for n in names):
            raise UsageError(
                f"--norms: {item!r} is not a G/D pair of {', '.join(NORM_NAMES)} or IN, ILM+IN, ..."
            )
        pairs.append("/".join(names))
    if not pairs:
        raise UsageError("--norms: give at least one G/D pair, e.g. IN/IN")
    return pairs


def _label(pair: str) -> str:
    return "/".join(NORM_LABELS.get(n, n) for n in pair.split("/"))


def _train_config(config: BenchConfig, pair: str, setting: dict[str, Any]) -> TrainConfig:
    g_norm, d_norm = pair.split("/")
    return TrainConfig(
        **{"dataroot": "", "name": "bench", "netG_norm": g_norm, "netD_norm": d_norm, **setting},
        netG=config.netG,
        netD=config.netD,
        ngf=config.ngf,
        ndf=config.ndf,
        load_size=config.size,
        crop_size=config.size,
        batch_size=config.batch_size,
        device=config.device,
        seed=config.seed,
    )


def _check(config: BenchConfig) -> None:
    depth = unet_depth(config.netG)
    if depth is not None and config.size % 2**depth:
        raise UsageError(
            f"--size {config.size} does not fit --netG {config.netG}: use a multiple of {2**depth}"
        )
    if min(config.size, config.batch_size, config.runs) < 1 or config.warmup < 0 or not config.min_time > 0:
        raise UsageError("--size, --batch-size and --runs must be >= 1, --warmup >= 0, --min-time > 0")


def _in_fresh_process(train: TrainConfig, config: BenchConfig) -> dict[str, Any]:
    """:func:`measure_row` in a new process: nothing (memory peak, caches, threads) carries over between rows.
    With ``--runs N``, N processes at once (seeds ``--seed`` + 0..N-1), timed from a shared start."""
    context = multiprocessing.get_context("spawn")
    if config.runs_as == "streams":
        with ProcessPoolExecutor(1, mp_context=context) as pool:
            try:
                return pool.submit(
                    measure_row, train, config.warmup, config.min_time, None, config.runs
                ).result()
            except Exception as err:
                return {"error": f"{type(err).__name__}: {first_line(err)}"}
    runs = [dataclasses.replace(train, seed=train.seed + i) for i in range(config.runs)]
    with contextlib.ExitStack() as stack:
        pool = stack.enter_context(ProcessPoolExecutor(len(runs), mp_context=context))
        # A run that fails before the start breaks the barrier for the others after its timeout.
        start = (
            stack.enter_context(context.Manager()).Barrier(len(runs), timeout=600) if len(runs) > 1 else None
        )
        futures = [pool.submit(measure_row, run, config.warmup, config.min_time, start) for run in runs]
        try:
            results = [future.result() for future in futures]
        except Exception as err:  # the row reports it; the others still run
            return {"error": f"{type(err).__name__}: {first_line(err)}"}
    return combined(results)


def combined(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The row of runs measured at once: the first run's figures, each run's step and kernel times
    (``run_step_s``, ``run_kernel_s``) and their means as the row's."""
    if len(results) == 1:
        return results[0]
    step_s = [r["step_s"] for r in results]
    kernel_s = [r["kernel_s"] for r in results]
    return results[0] | {
        "run_step_s": step_s,
        "run_kernel_s": kernel_s,
        "step_s": statistics.mean(step_s),
        "kernel_s": None if None in kernel_s else statistics.mean(kernel_s),
    }


def _figures(row: dict[str, Any], batch: int, peak: float) -> dict[str, Any]:
    """What follows from a row's median times: rates, the convolutions' GFLOP/s and their share of the peak."""
    if "error" in row:
        return row
    gflops = row["conv_gflop"] / row["step_s"]
    step_s, kernel_s = row.get("run_step_s", [row["step_s"]]), row.get("run_kernel_s", [row["kernel_s"]])
    return row | {
        "runs": len(step_s),
        "it_s": 1 / row["step_s"],
        "total_it_s": sum(1 / s for s in step_s),
        "gpu_busy": None if None in kernel_s else sum(k / s for k, s in zip(kernel_s, step_s, strict=True)),
        "conv_gflops": gflops,
        "peak_share": gflops / peak,
        "infer_img_s": batch / row["infer_s"],
    }


def _add_ilm_costs(rows: list[dict[str, Any]]) -> None:
    """``ilm_cost``: a row's median step time ÷ that of its plain pair (ILM → the norm it standardises with)
    under the same setting; None for pairs without ILM, or when the plain pair was not measured."""
    times = {(r["setting"], r["norms"]): r["step_s"] for r in rows if "step_s" in r}
    for row in rows:
        plain = "/".join(NORMS[n].ilm_over or n for n in row["norms"].split("/"))
        known = plain != row["norms"] and "step_s" in row and (row["setting"], plain) in times
        row["ilm_cost"] = row["step_s"] / times[row["setting"], plain] if known else None


def _machine(device: torch.device) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        names = [
            line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")
        ]
        cpu = names[0].split(":", 1)[1].strip() if names else cpu
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return {"device": str(device), "cpu": cpu, "gpu": gpu, "threads": torch.get_num_threads()}


def run_bench(config: BenchConfig) -> dict[str, Any]:
    """Measure every ``--settings`` × ``--norms`` row; print the table, then the report as one JSON line."""
    started = time.perf_counter()
    _check(config)
    if config.json_path:  # before minutes of measuring
        check_output_files([config.json_path], "--json", overwrite=config.overwrite)
    device = resolve_device(config.device)
    settings = parse_settings(config.settings)
    pairs = parse_norms(config.norms)
    machine = _machine(device) | {"torch": torch.__version__, "pix2pix_ilm": __version__}
    peak = peak_gflops(device)
    rows = []
    for name, setting in settings.items():
        for pair in pairs:
            train = with_device_defaults(_train_config(config, pair, setting), device)
            resolved = {k: getattr(train, k) for k in ("precision", "channels_last", "compile")}
            problem = cuda_graph_problem(train, device, 1)
            if setting.get("cuda_graph") == "on" and problem:
                raise UsageError(f"--settings {name}: the step cannot be captured as a CUDA graph: {problem}")
            resolved["cuda_graph"] = resolve_cuda_graph(train, device, 1)
            if config.runs_as == "streams" and resolved["cuda_graph"] != "on":
                raise UsageError(
                    f"--runs-as streams replays CUDA graphs; setting {name} runs the step eagerly"
                )
            described = ", ".join(f"{key} {value}" for key, value in resolved.items())
            print(f"[bench] {name} {_label(pair)}: {described}", file=sys.stderr, flush=True)
            row = {"setting": name, "norms": pair, "label": _label(pair), "resolved": resolved}
            rows.append(row | _figures(_in_fresh_process(train, config), config.batch_size, peak["gflops"]))
    _add_ilm_costs(rows)
    report = {"bench": "pix2pix-ilm", "config": config_to_dict(config), "machine": machine, "peak": peak}
    report |= {"rows": rows, "seconds": time.perf_counter() - started}
    print(format_table(report))
    line = json.dumps(report)
    if config.json_path:
        atomic_write_text(config.json_path, line + "\n")
    print(line)
    return report


def format_table(report: dict[str, Any]) -> str:
    """The report as a plain-text table with its machine and peak lines (docs/bench.md explains the columns)."""
    m, p, c = report["machine"], report["peak"], report["config"]
    memory = "CUDA allocator peak" if m["gpu"] else "peak RSS growth"
    lines = [
        f"pix2pix-ilm bench: {c['netG']} + {c['netD']} (ngf {c['ngf']}, ndf {c['ndf']}), {c['size']}², "
        f"batch {c['batch_size']}; {m['gpu'] or m['cpu']}, {m['threads']} threads, torch {m['torch']}",
        f"fp32 peak {p['gflops']:.1f} GFLOP/s: best of matrix product {p['mm_size']}² {p['mm_gflops']:.1f} "
        f"and 1x1 convolution 1024->1024 at 32x32 {p['conv1x1_gflops']:.1f}",
        f"{'setting':<20} {'norms':<14} {'step ms':>8} {'IQR':>6} {'it/s':>6} {'ILM cost':>8} "
        f"{'conv GFLOP/s':>12} {'% peak':>6} {'step MiB':>8} {'infer img/s':>11} {'runs':>4} {'total it/s':>10} "
        f"{'GPU busy':>8}",
    ]
    for r in report["rows"]:
        head = f"{r['setting']:<20} {r['label']:<14}"
        if "error" in r:
            lines.append(f"{head} failed: {r['error']}")
            continue
        cost = "-" if r["ilm_cost"] is None else f"{r['ilm_cost']:.3f}"
        mib = "-" if r["memory_mib"] is None else f"{r['memory_mib']:.0f}"
        busy = "-" if r["gpu_busy"] is None else f"{100 * r['gpu_busy']:.0f}%"
        lines.append(
            f"{head} {1e3 * r['step_s']:>8.1f} {1e3 * r['step_iqr_s']:>6.1f} {r['it_s']:>6.2f} {cost:>8} {r['conv_gflops']:>12.1f} "
            f"{100 * r['peak_share']:>5.0f}% {mib:>8} {r['infer_img_s']:>11.2f} {r['runs']:>4} {r['total_it_s']:>10.2f} "
            f"{busy:>8}"
        )
    gflop = next((r["conv_gflop"] for r in report["rows"] if "conv_gflop" in r), None)
    if gflop is not None:
        lines.append(f"convolutions per step: {gflop:.2f} GFLOP (forward + backward); step MiB: {memory}")
    return "\n".join(lines)
