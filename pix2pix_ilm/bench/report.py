"""The benchmark report: ratios to the baseline, ILM costs, and the readable tables."""

from __future__ import annotations

from pix2pix_ilm.bench.options import BASELINE, CONTENDED, ILM_BASE, norm_label


def add_ratios(section: dict, value: str) -> None:
    """Add ``ratio`` = this path's median ÷ the baseline's, per norm pair."""
    for per_norm in section.values():
        for key, result in per_norm.items():
            base = section.get(BASELINE, {}).get(key, {})
            if "median" in result and "median" in base:
                result["ratio"] = result["median"] / base["median"]
            if value != "median" and value in result and value in base:
                result[f"ratio_{value}"] = result[value] / base[value]


def ilm_costs(section: dict) -> dict:
    """Per path: time(ILM pair) ÷ time(plain pair) = plain median rate ÷ ILM median rate."""
    costs: dict[str, dict[str, float]] = {}
    for path, per_norm in section.items():
        for key, result in per_norm.items():
            g, d = key.split("/")
            plain = f"{ILM_BASE.get(g, g)}/{ILM_BASE.get(d, d)}"
            if plain != key and "median" in result and "median" in per_norm.get(plain, {}):
                costs.setdefault(path, {})[key] = per_norm[plain]["median"] / result["median"]
    return costs


def _cell(result: dict | None, digits: int = 3) -> str:
    if not result:
        return "-"
    if "error" in result:
        return "failed"
    ratio = f" x{result['ratio']:.2f}" if "ratio" in result else ""
    contended = "*" if (result.get("cpu_wait") or 0) > CONTENDED else ""
    return f"{result['median']:.{digits}f} [{result['min']:.{digits}f}-{result['max']:.{digits}f}]{ratio}{contended}"


def _memory(result: dict | None) -> str:
    if not result or "error" in result:
        return "-"
    if "peak_cuda_mib" in result:
        return f"{result['peak_cuda_mib']:.0f}"
    return f"{result['peak_rss_mib']:.0f}"


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
        row = [path + (" (eager)" if path == BASELINE else "")]
        for key in norm_keys:
            row += [_cell(per_norm.get(key)), _memory(per_norm.get(key))]
        if costs:
            row.append(", ".join(f"{v:.2f}x" for v in costs.get(path, {}).values()) or "-")
        rows.append(row)
    lines = [title, *align_columns(rows)]
    errors = [
        f"  {path} {norm_label(key)}: {result['error']}"
        for path, per_norm in section.items()
        for key, result in per_norm.items()
        if "error" in result
    ]
    return lines + (["failures:", *errors] if errors else [])


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
        + ", ".join(f"{k} {v:g}" for k, v in (machine.get("matmul_gflops") or {}).items()),
        f"{settings['warmup']} warm-up, then {settings['repeats']} repeats of {settings['iters']} steps; "
        f"median [min-max] over repeats; xbase = median / baseline's median (same norms); memory: {memory}",
        f"* = a repeat's threads waited for a CPU more than {CONTENDED:.0%} of the time even after "
        f"{settings['retries']} retries (other processes were running): that figure is unreliable",
        "",
    ]
    lines += _table("training step", report["train"], report["ilm_cost"], norm_keys, "it/s")
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
                    ratio = f" x{result['ratio_img_s_steady']:.2f}" if "ratio_img_s_steady" in result else ""
                    details.append(
                        f"  {path} {norm_label(key)}: {result['img_s_steady']:.2f} img/s without the fixed cost"
                        f"{ratio}; fixed cost per test run {result['startup_s']:.2f} s "
                        f"(checkpoint {result['checkpoint_mib']:.0f} MiB)"
                    )
        lines += details
    return "\n".join(lines)
