"""The benchmark's readable report: rates, ratios to the baseline and ILM costs with their intervals."""

from __future__ import annotations

from pix2pix_ilm.bench.interleave import RESOLUTION
from pix2pix_ilm.bench.options import BASELINE, CONTENDED, norm_label


def format_interval(interval: dict | None, digits: int = 2) -> str:
    """``1.85 [1.81-1.89]`` (95 % interval over rounds); ``?`` marks one too wide to resolve 2 %."""
    if not interval:
        return "-"
    if interval["low"] is None:
        return f"{interval['ratio']:.{digits}f} [one round]?"
    mark = "?" if interval.get("too_wide") else ""
    return (
        f"{interval['ratio']:.{digits}f} [{interval['low']:.{digits}f}-{interval['high']:.{digits}f}]{mark}"
    )


def _cell(result: dict | None, digits: int = 3) -> str:
    if not result:
        return "-"
    if "error" in result:
        return "failed"
    ratio = f" x{format_interval(result.get('ratio_interval'))}" if "ratio_interval" in result else ""
    contended = "*" if (result.get("cpu_wait") or 0) > CONTENDED else ""
    return f"{result['median']:.{digits}f} [{result['min']:.{digits}f}-{result['max']:.{digits}f}]{ratio}{contended}"


def _memory(result: dict | None) -> str:
    if not result or "error" in result:
        return "-"
    if "peak_cuda_mib" in result:
        return f"{result['peak_cuda_mib']:.0f}"
    return f"{result['peak_rss_mib']:.0f}"


def _resolved(path: str, per_norm: dict) -> str:
    """What the default path ran with on this device, e.g. `` [bf16, channels_last]``."""
    settings = next((r["path_settings"] for r in per_norm.values() if "path_settings" in r), None)
    if path != "default" or settings is None:
        return ""
    parts = [settings["precision"]] + [k for k in ("channels_last", "compile") if settings[k]]
    return f" [{', '.join(parts)}]"


def align_columns(rows: list[list[str]]) -> list[str]:
    """Rows of cells as text lines: the first column left-aligned, the others right-aligned, a rule under the
    first row (the header)."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [row[i].rjust(widths[i]) for i in range(1, len(row))]
        lines.append("  ".join(cells))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


def _table(title: str, section: dict, costs: dict, norm_keys: list[str], unit: str) -> list[str]:
    header = ["path"]
    for key in norm_keys:
        header += [f"{norm_label(key)} {unit} [min-max] xbase", "peak MiB"]
    if costs:
        header.append("ILM cost")
    rows = [header]
    for path, per_norm in section.items():
        row = [path + (" (eager)" if path == BASELINE else _resolved(path, per_norm))]
        for key in norm_keys:
            row += [_cell(per_norm.get(key)), _memory(per_norm.get(key))]
        if costs:
            row.append(", ".join(format_interval(v) for v in costs.get(path, {}).values()) or "-")
        rows.append(row)
    lines = [title, *align_columns(rows)]
    errors = [
        f"  {path} {norm_label(key)}: {result['error']}"
        for path, per_norm in section.items()
        for key, result in per_norm.items()
        if "error" in result
    ]
    return lines + (["failures:", *errors] if errors else [])


def roofline_lines(report: dict) -> list[str]:
    """Per path and norm pair: convolution GFLOP per step × it/s ÷ the fp32 matrix-product rate; with the
    interval over rounds when the product took its turn in them (``roofline``), else against the probe."""
    peak = (report["machine"].get("matmul_gflops") or {}).get("fp32")
    in_rounds = report.get("matmul_in_rounds") or {}
    lines = []
    for path, per_norm in report["train"].items():
        for key, result in per_norm.items():
            if "conv_gflop_per_step" not in result or "median" not in result:
                continue
            rate = result["conv_gflop_per_step"] * result["median"]
            if "roofline" in result:
                share = result["roofline"]
                flag = "?" if share["too_wide"] else ""
                low = "-" if share["low"] is None else f"{share['low']:.1%}"
                high = "-" if share["high"] is None else f"{share['high']:.1%}"
                text = f" = {share['ratio']:.1%} [{low}-{high}]{flag} of the fp32 matrix product in the same rounds"
            else:
                text = f" = {rate / peak:.0%} of the fp32 matrix-product rate (probe)" if peak else ""
            lines.append(
                f"  {path} {norm_label(key)}: {result['conv_gflop_per_step']:.2f} conv GFLOP/step x "
                f"{result['median']:.3f} it/s = {rate:.1f} GFLOP/s{text}"
            )
    if not lines:
        return []
    head = "roofline (convolution FLOPs only; docs/bench.md)"
    if "median" in in_rounds:
        head += (
            f"; the fp32 matrix product ({in_rounds['size']}², {in_rounds['products_per_block']} per block) in "
            f"the rounds: {in_rounds['median']:.1f} GFLOP/s [{in_rounds['min']:.1f}-{in_rounds['max']:.1f}]"
        )
    elif "error" in in_rounds:
        head += f"; the matrix product in the rounds failed: {in_rounds['error']}"
    return [head + ":", *lines]


def rounds_lines(report: dict) -> list[str]:
    """With --until-resolved: the rounds each training group took, and whether it stopped at the limit."""
    settings = report["settings"]
    limit = settings.get("until_resolved", 0)
    if limit <= settings["repeats"]:
        return []
    parts = []
    for path, per_norm in report["train"].items():
        rounds = max((r.get("rounds", 0) for r in per_norm.values()), default=0)
        if path != "baseline" and rounds:
            state = "stopped at the limit" if rounds >= limit else "every ratio resolved"
            parts.append(f"{path} {rounds} ({state})")
    return [f"rounds per group: {', '.join(parts)}"] if parts else []


def format_report(report: dict) -> str:
    machine, settings = report["machine"], report["settings"]
    norm_keys = settings["norms"]
    memory = (
        "peak CUDA allocated" if machine["device"].startswith("cuda") else "peak RSS of the path's process"
    )
    lines = [
        f"pix2pix-ilm bench: G {settings['netG']} (ngf {settings['ngf']}), D {settings['netD']} "
        f"(ndf {settings['ndf']}), {settings['size']}x{settings['size']}, batch {settings['batch_size']}",
        f"machine: {machine['cpu']} ({machine['cpu_count']} CPUs, {machine['threads']} torch threads, "
        f"{machine['cpu_capability']}), device {machine['device']}"
        + (f" ({machine['gpu']})" if machine.get("gpu") else "")
        + f", torch {machine['torch']}, load average {machine.get('loadavg_start')} -> {machine.get('loadavg_end')}",
        "matrix product GFLOP/s: "
        + ", ".join(f"{k} {v:g}" for k, v in (machine.get("matmul_gflops") or {}).items())
        + (f"; memory copy {machine['copy_gbps']:g} GB/s" if machine.get("copy_gbps") else ""),
        f"{settings['warmup']} warm-up steps, then {settings['repeats']} interleaved rounds"
        + (
            f" (then more, up to {settings['until_resolved']}, until every ratio resolves 2%)"
            if settings.get("until_resolved", 0) > settings["repeats"]
            else ""
        )
        + ": in each, every "
        f"contestant of a group (the baseline and one path, each norm pair) times {settings['iters']} step(s) in "
        f"turn" + (f"; inference: {settings['infer_repeats']} rounds" if settings.get("infer_paths") else ""),
        "rate: median [min-max] over rounds; xbase = baseline time / path time and ILM cost = ILM time / plain "
        "time over the same rounds: geometric mean [95% t interval]",
        f"? = interval too wide to resolve {RESOLUTION:.0%} (more --repeats, or a quieter machine); "
        f"memory: {memory}",
        f"* = a block's threads waited for a CPU more than {CONTENDED:.0%} of the time even after "
        f"{settings['retries']} retries (other processes were running): that figure is unreliable",
        "",
    ]
    lines += _table("training step", report["train"], report["ilm_cost"], norm_keys, "it/s")
    lines += rounds_lines(report)
    lines += roofline_lines(report)
    if report["skipped_paths"]:
        lines.append(
            "not applicable here: " + "; ".join(f"{k} ({v})" for k, v in report["skipped_paths"].items())
        )
    if report["inference"]:
        lines += ["", f"inference (test: load checkpoint, {settings['images']} images, 3 PNGs each; batch 1)"]
        lines += _table(
            "img/s end to end (a whole test run: checkpoint load, then every image)",
            report["inference"],
            report["inference_ilm_cost"],
            norm_keys,
            "img/s",
        )
        details = []
        for path, per_norm in report["inference"].items():
            for key, result in per_norm.items():
                if "img_s_steady" in result:
                    steady = result.get("ratio_img_s_steady_interval")
                    ratio = f" x{format_interval(steady)}" if steady else ""
                    details.append(
                        f"  {path} {norm_label(key)}: {result['img_s_steady']:.2f} img/s without the fixed cost"
                        f"{ratio}; fixed cost per test run {result['startup_s']:.2f} s "
                        f"(checkpoint {result['checkpoint_mib']:.0f} MiB)"
                    )
        lines += details
    return "\n".join(lines)
