"""``pix2pix-ilm bench``: every group of contestants in interleaved rounds, then the report (docs/bench.md)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from pix2pix_ilm.bench.interleave import (
    ContestantFailed,
    InProcessContestant,
    RemoteContestant,
    Timed,
    all_resolved,
    measure_once,
    paired_ratio,
    run_rounds,
    summarize_blocks,
)
from pix2pix_ilm.bench.options import (
    BASELINE,
    norm_key,
    norm_label,
    options_from_args,
    parse_norms,
    plain_pair,
    select_paths,
    select_profile_paths,
)
from pix2pix_ilm.bench.probes import machine_info
from pix2pix_ilm.bench.report import format_report
from pix2pix_ilm.errors import UsageError


def run_bench(args: argparse.Namespace) -> dict:
    """Entry point of ``pix2pix-ilm bench``; returns the JSON report (also printed as the last line)."""
    if getattr(args, "worker", None):
        from pix2pix_ilm.bench.worker import serve

        serve(json.loads(args.worker))
        return {}
    if args.profile:
        return run_profile(args)
    if args.profile_png or args.profile_md:
        raise UsageError("--profile-png and --profile-md go with --profile")
    from pix2pix_ilm.device import resolve_device

    device = resolve_device(args.device)
    options = options_from_args(args, device)
    norms = [norm_key(p) for p in parse_norms(args.norms)]
    train_paths, skipped = select_paths(args.paths, device)
    infer_paths, _ = select_paths(args.infer_paths, device)
    infer_paths = [p for p in infer_paths if "compile" not in p.split("+")]  # test does not use compile
    report: dict[str, Any] = {
        "bench": "pix2pix-ilm",
        "machine": machine_info(device, matmul=not args.no_matmul),
        "settings": options | {"norms": norms, "paths": train_paths, "infer_paths": infer_paths},
        "skipped_paths": skipped,
    }
    train = measure_task("train", train_paths, norms, options, args.in_process, roofline=not args.no_matmul)
    report["train"], report["ilm_cost"], report["matmul_in_rounds"] = train
    report["inference"], report["inference_ilm_cost"], _ = (
        measure_task("inference", infer_paths, norms, options, args.in_process)
        if infer_paths
        else ({}, {}, None)
    )
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
        result = add_figures(measure_once(job, args.in_process), fp32_peak(machine))
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


def _start(task: str, path: str, norms: str, options: dict, in_process: bool) -> Timed | str:
    """A set-up, warmed-up contestant, or the reason it could not start."""
    job = {"task": task, "path": path, "norms": norms.split("/"), "options": options}
    try:
        return InProcessContestant(job) if in_process else RemoteContestant(job)
    except ContestantFailed as err:
        return str(err)


Key = tuple[str, str]  # (path, norm pair)
MATMUL: Key = ("matmul", "fp32")  # the roofline's rate, timed in the training rounds


def measure_task(
    task: str, paths: list[str], norms: list[str], options: dict, in_process: bool, roofline: bool = False
) -> tuple[dict, dict, dict | None]:
    """One group per path: the baseline's contestants (kept alive for all groups) and the path's, for every
    norm pair, in interleaved rounds; with ``roofline``, the fp32 matrix product takes its turn in every round
    too. Returns the results per path and norm pair, the ILM costs and the matrix product's rate (or None)."""
    started = {(BASELINE, n): _start(task, BASELINE, n, options, in_process) for n in norms}
    if roofline:
        started[MATMUL] = _start("matmul", *MATMUL, options, in_process)
    per_group: list[dict[Key, list[dict]]] = []
    redone: list[int] = []
    results: dict[str, dict[str, Any]] = {}
    for number, path in enumerate(paths or [None], 1):
        mine = [] if path is None else [(path, n) for n in norms]
        started |= {key: _start(task, *key, options, in_process) for key in mine}
        print(f"[bench] {task} group {number}/{len(paths) or 1}: {path or BASELINE}", file=sys.stderr)
        keys = [*((BASELINE, n) for n in norms), *mine, *([MATMUL] if MATMUL in started else [])]
        blocks, discarded = _run_group(task, started, keys, options)
        per_group.append(blocks)
        redone.append(discarded)
        for key in mine:  # finished now: the path's processes end before the next group starts its own
            results.setdefault(key[0], {})[key[1]] = _finish(task, started[key], blocks.get(key, []), options)
            results[key[0]][key[1]]["discarded"] = discarded
    baseline = {}
    for n in norms:
        kept = [b for group in per_group for b in group.get((BASELINE, n), [])]
        baseline[n] = _finish(task, started[(BASELINE, n)], kept, options) | {"discarded": sum(redone)}
    results = {BASELINE: baseline} | results
    _add_ratios(task, results, per_group, norms, paths)
    matmul = _finish_matmul(started.get(MATMUL), [b for g in per_group for b in g.get(MATMUL, [])])
    if matmul and "error" not in matmul:
        _add_roofline(results, per_group, options["iters"], matmul["gflop_per_block"])
    return results, _ilm_costs(per_group, norms), matmul


def _finish_matmul(contestant: Timed | str | None, kept: list[dict]) -> dict[str, Any] | None:
    """The matrix product's GFLOP/s over its blocks (median [min-max]), or its error; None if not run."""
    if contestant is None:
        return None
    return _finish_blocks(contestant, kept, kept[0]["gflop"] if kept else 0.0)


def _run_group(
    task: str, started: dict[Key, Timed | str], keys: list[Key], options: dict
) -> tuple[dict[Key, list[dict]], int]:
    """The rounds of one group: blocks per contestant and the number of rounds made again. A contestant that
    fails is replaced by its error in ``started``."""
    live = {key: c for key in keys if not isinstance(c := started[key], str)}
    rounds = options["repeats"] if task == "train" else options["infer_repeats"]
    limit = options.get("until_resolved", 0) if task == "train" else 0
    resolved = all_resolved(_group_pairs(keys)) if limit > rounds else None
    blocks, failed, discarded = run_rounds(
        live, rounds, options["retries"], resolved=resolved, max_rounds=limit
    )
    rounds = max((len(kept) for kept in blocks.values()), default=0)
    started.update(failed)
    units = options["iters"] if task == "train" else options["images"]
    rates = ", ".join(
        f"matmul {statistics.median(b['gflop'] / b['seconds'] for b in kept):.1f} GFLOP/s"
        if key == MATMUL
        else f"{key[0]} {norm_label(key[1])} {statistics.median(units / b['seconds'] for b in kept):.3f}/s"
        for key, kept in blocks.items()
        if kept
    )
    print(f"[bench]   {rounds} rounds ({discarded} made again): {rates}", file=sys.stderr)
    return blocks, discarded


def _group_pairs(keys: list[Key]) -> list[tuple[Key, Key]]:
    """The (slower, faster) pairs whose ratios a group reports: × baseline (baseline, path), the ILM cost
    (ILM pair, plain pair) of the path and of the baseline, the roofline share (product, path)."""
    pairs = []
    for path, n in keys:
        if (path, n) == MATMUL:
            continue
        plain = (path, plain_pair(n))
        if plain != (path, n) and plain in keys:
            pairs.append(((path, n), plain))
        if path != BASELINE:
            pairs.append(((BASELINE, n), (path, n)))
            if MATMUL in keys:
                pairs.append((MATMUL, (path, n)))
    return pairs


def _finish_blocks(contestant: Timed | str, kept: list[dict], units: float) -> dict[str, Any]:
    """A contestant's rates over its kept blocks (``units`` per block ÷ seconds) and what it measured once
    (memory), or its error."""
    if isinstance(contestant, str) or not kept:
        return {"error": contestant if isinstance(contestant, str) else "no block measured"}
    try:
        once = contestant.finish()
    except ContestantFailed as err:
        return {"error": str(err)}
    return summarize_blocks(kept, units) | once | {"rounds": len(kept)}


def _finish(task: str, contestant: Timed | str, kept: list[dict], options: dict) -> dict[str, Any]:
    """A path's (or the baseline's) figures: steps or images per second, memory, or its error."""
    out = _finish_blocks(contestant, kept, options["iters"] if task == "train" else options["images"])
    if "error" not in out and task == "inference" and options["images"] > 1:
        out["img_s_steady"] = statistics.median(1.0 / max(b["per_image_s"], 1e-9) for b in kept)
        out["startup_s"] = statistics.median(b["one_s"] - b["per_image_s"] for b in kept)
    return out


def _pooled_ratio(per_group: list[dict], slower: Key, faster: Key, field: str = "seconds") -> dict | None:
    """time(slower) ÷ time(faster) over the rounds of every group that ran both (paired_ratio), or None."""
    slow: list[dict] = []
    fast: list[dict] = []
    for group in per_group:
        a, b = group.get(slower, []), group.get(faster, [])
        count = min(len(a), len(b))  # a contestant that failed mid-group stops early: the rest are unpaired
        slow += a[:count]
        fast += b[:count]
    return paired_ratio(slow, fast, field)


def _add_ratios(task: str, results: dict, per_group: list[dict], norms: list[str], paths: list[str]) -> None:
    """``ratio`` = baseline time ÷ path time (same norms, same rounds) with its interval; 1 for the baseline."""
    for n in norms:
        if "error" not in results[BASELINE][n]:
            results[BASELINE][n]["ratio"] = 1.0
    for path in paths:
        for n in norms:
            result = results[path][n]
            if "error" in result:
                continue
            fields = [("ratio", "seconds")]
            if task == "inference" and "img_s_steady" in result:
                fields.append(("ratio_img_s_steady", "per_image_s"))
            for name, field in fields:
                interval = _pooled_ratio(per_group, (BASELINE, n), (path, n), field)
                if interval:
                    result[name] = interval["ratio"]
                    result[f"{name}_interval"] = interval


def _add_roofline(results: dict, per_group: list[dict], iters: int, product_gflop: float) -> None:
    """``roofline``: the convolutions' GFLOP/s ÷ the matrix product's, from the blocks of the same rounds
    (share_i = conv GFLOP per block ÷ t_step,i ÷ (product GFLOP per block ÷ t_matmul,i)), geometric mean
    with its 95 % interval; the baseline's pooled over the groups."""
    for path, n in dict.fromkeys(key for group in per_group for key in group if key != MATMUL):
        result = results.get(path, {}).get(n, {})
        interval = _pooled_ratio(per_group, MATMUL, (path, n))
        if "conv_gflop_per_step" not in result or not interval:
            continue
        scale = result["conv_gflop_per_step"] * iters / product_gflop
        result["roofline"] = interval | {
            k: None if interval[k] is None else interval[k] * scale for k in ("ratio", "low", "high")
        }


def _ilm_costs(per_group: list[dict], norms: list[str]) -> dict[str, dict[str, dict]]:
    """Per path: time(ILM pair) ÷ time(plain pair) over the same rounds (the baseline's pooled over groups)."""
    costs: dict[str, dict[str, dict]] = {}
    for n in norms:
        plain = plain_pair(n)
        if plain == n or plain not in norms:
            continue
        for path in dict.fromkeys(p for group in per_group for p, key in group if key == n):
            interval = _pooled_ratio(per_group, (path, n), (path, plain))
            if interval:
                costs.setdefault(path, {})[n] = interval
    return costs
