"""``pix2pix-ilm bench``: every job of the benchmark, then the report (design notes: docs/bench.md)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from pix2pix_ilm.bench.options import (
    norm_key,
    norm_label,
    options_from_args,
    parse_norms,
    select_paths,
    select_profile_paths,
)
from pix2pix_ilm.bench.probes import machine_info
from pix2pix_ilm.bench.report import add_ratios, format_report, ilm_costs
from pix2pix_ilm.bench.worker import BASELINE, run_job, run_worker
from pix2pix_ilm.errors import UsageError


def run_bench(args: argparse.Namespace) -> dict:
    """Entry point of ``pix2pix-ilm bench``; returns the JSON report (also printed as the last line)."""
    if getattr(args, "worker", None):
        result = run_worker(json.loads(args.worker))
        print(json.dumps(result))
        return result
    if args.profile:
        return run_profile(args)
    if args.profile_png or args.profile_md:
        raise UsageError("--profile-png and --profile-md go with --profile")
    from pix2pix_ilm.device import resolve_device

    device = resolve_device(args.device)
    options = options_from_args(args, device)
    norms = parse_norms(args.norms)
    train_paths, skipped = select_paths(args.paths, device)
    infer_paths, _ = select_paths(args.infer_paths, device)
    infer_paths = [p for p in infer_paths if "compile" not in p.split("+")]  # test does not use compile
    report: dict[str, Any] = {
        "bench": "pix2pix-ilm",
        "machine": machine_info(device, matmul=not args.no_matmul),
        "settings": options | {"norms": [norm_key(p) for p in norms], "paths": train_paths},
        "skipped_paths": skipped,
        "train": {},
        "inference": {},
    }
    report["settings"]["infer_paths"] = infer_paths
    jobs = [("train", path) for path in [BASELINE, *train_paths]]
    if infer_paths:
        jobs += [("inference", path) for path in [BASELINE, *infer_paths]]
    total = len(jobs) * len(norms)
    done = 0
    for task, path in jobs:
        for pair in norms:  # the norm pairs of one path back to back: their ratio suffers least from drift
            done += 1
            job = {"task": task, "path": path, "norms": list(pair), "options": options}
            started = time.perf_counter()
            result = run_job(job, args.in_process)
            report[task].setdefault(path, {})[norm_key(pair)] = result
            unit = "it/s" if task == "train" else "img/s"
            status = (
                f"{result['median']:.3f} {unit}" if "median" in result else f"failed: {result.get('error')}"
            )
            elapsed = time.perf_counter() - started
            print(
                f"[{done}/{total}] {task} {path} {norm_label(norm_key(pair))}: {status} ({elapsed:.0f} s)",
                file=sys.stderr,
            )
    add_ratios(report["train"], "median")
    add_ratios(report["inference"], "img_s_steady")
    report["ilm_cost"] = ilm_costs(report["train"])
    report["inference_ilm_cost"] = ilm_costs(report["inference"])
    with contextlib.suppress(OSError):
        report["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    print(format_report(report))
    _emit_json(report, args.json)
    return report


def _emit_json(report: dict, path: str | None) -> None:
    """Print the report as one JSON line (the last line of the output), and write it to ``path`` if given."""
    line = json.dumps(report, sort_keys=False)
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(line + "\n")
    print(line)


def _profile_command(options: dict, norms: list[str], paths: list[str]) -> str:
    """The command line that reproduces a profile (for the markdown fragment)."""
    return (
        f"pix2pix-ilm bench --profile --size {options['size']} --netG {options['netG']} --netD {options['netD']} "
        f"--ngf {options['ngf']} --ndf {options['ndf']} --batch-size {options['batch_size']} "
        f"--norms {','.join(norm_label(n) for n in norms)} --paths {','.join(paths)} --iters {options['iters']} "
        f"--warmup {options['warmup']} --repeats {options['repeats']} --device {options['device']}"
    )


def run_profile(args: argparse.Namespace) -> dict:
    """``bench --profile``: one profile job per path and norm pair (profile.py), then the table (stdout), the
    JSON line, and the optional markdown fragment and bar chart."""
    from pix2pix_ilm.bench.profile_report import (
        add_figures,
        format_profile,
        fp32_peak,
        profile_markdown,
        write_profile_png,
    )
    from pix2pix_ilm.device import resolve_device

    device = resolve_device(args.device)
    options = options_from_args(args, device)
    norms = [norm_key(p) for p in parse_norms(args.norms)]
    paths = select_profile_paths(args.paths)
    machine = machine_info(device, matmul=not args.no_matmul, dtypes=("fp32",))
    settings = options | {"norms": norms, "paths": paths}
    report: dict[str, Any] = {"bench": "pix2pix-ilm profile", "machine": machine, "settings": settings}
    report["profile"] = {}
    jobs = [(path, key) for path in paths for key in norms]
    for done, (path, key) in enumerate(jobs, 1):
        started = time.perf_counter()
        job = {"task": "profile", "path": path, "norms": key.split("/"), "options": options}
        result = add_figures(run_job(job, args.in_process), fp32_peak(machine))
        report["profile"].setdefault(path, {})[key] = result
        status = (
            f"{result['wall_ms']:.1f} ms/step profiled" if "rows" in result else f"failed: {result['error']}"
        )
        elapsed = time.perf_counter() - started
        print(
            f"[{done}/{len(jobs)}] profile {path} {norm_label(key)}: {status} ({elapsed:.0f} s)",
            file=sys.stderr,
        )
    with contextlib.suppress(OSError):
        machine["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    print(format_profile(report))
    if args.profile_md:
        Path(args.profile_md).parent.mkdir(parents=True, exist_ok=True)
        Path(args.profile_md).write_text(profile_markdown(report, _profile_command(options, norms, paths)))
    if args.profile_png:
        write_profile_png(report, Path(args.profile_png))
    _emit_json(report, args.json)
    return report
