"""Which paths and norm pairs a benchmark measures, and its command-line options."""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
from typing import Any

import torch

from pix2pix_ilm.bench.probes import CONTENDED
from pix2pix_ilm.errors import UsageError
from pix2pix_ilm.models.networks import unet_depth
from pix2pix_ilm.models.norms import NORM_NAMES

BASELINE = "baseline"
#: Fast-path features → the TrainConfig fields they set. A path is "default" or features joined by "+",
#: optionally with a "threads=N" part, e.g. "bf16+channels_last" or "compile+threads=1".
PATH_FEATURES: dict[str, dict[str, Any]] = {
    "channels_last": {"channels_last": True},
    "bf16": {"precision": "bf16"},
    "compile": {"compile": True},
}
#: A path naming features runs exactly those: the others off, whatever the device's defaults. "default"
#: (and the ablations, threads=N) leave them to train's automatic choice for the device (docs/gpu.md).
FEATURES_OFF: dict[str, Any] = {"precision": "fp32", "channels_last": False, "compile": False}
#: CPU ablations: the default path less one of its CPU settings, to show what each is worth.
#: native_conv: torch's convolution kernels everywhere (no matrix-product route, see cpu_speed.py);
#: system_malloc: glibc's default allocator settings (see cpu_speed.py), set through the worker's environment.
ABLATIONS: dict[str, dict[str, Any]] = {"native_conv": {"native_conv": True}, "system_malloc": {}}
#: Block and round counts when --iters / --repeats are not given. Benchmark: one-step blocks, many rounds (on
#: the shared 2-core VM, 32 rounds of 1 step resolved the ILM cost to ±0.5 %, 8 rounds of 4 steps to ±3 %:
#: docs/bench.md). Profile: the profiled steps, and blocks timed unprofiled for the step time.
BENCH_DEFAULTS = {"iters": 1, "repeats": 24}
PROFILE_DEFAULTS = {"iters": 3, "repeats": 3}
#: Paths measured when --paths is not given (those not applicable on the device are left out).
DEFAULT_PATHS = (
    "default",
    "native_conv",
    "system_malloc",
    "channels_last",
    "bf16",
    "bf16+channels_last",
    "compile",
    "compile+bf16",
    "threads=1",
)
NORM_ALIASES = {
    "in": "instance",
    "bn": "batch",
    "gn": "group",
    "ln": "layer",
    "ilm+in": "ilm_in",
    "ilm+gn": "ilm_gn",
    "ilm+ln": "ilm_ln",
}
NORM_LABELS = {v: k.upper() for k, v in NORM_ALIASES.items()}
ILM_BASE = {"ilm_in": "instance", "ilm_gn": "group", "ilm_ln": "layer"}


def plain_pair(key: str) -> str:
    """The norm pair with each ILM replaced by the norm it standardises with (ilm_in/ilm_in → instance/instance):
    the ILM cost's denominator."""
    return "/".join(ILM_BASE.get(norm, norm) for norm in key.split("/"))


def parse_path(name: str) -> tuple[dict[str, Any], int | None]:
    """``"bf16+channels_last+threads=1"`` → (TrainConfig overrides, thread count or None); a path with
    features sets every feature field (:data:`FEATURES_OFF`), ``"default"`` none."""
    if name == "default":
        return {}, None
    parts = name.split("+")
    overrides: dict[str, Any] = dict(FEATURES_OFF) if any(p in PATH_FEATURES for p in parts) else {}
    threads = None
    for part in parts:
        if part.startswith("threads="):
            value = part[len("threads=") :]
            if not value.isdigit() or int(value) < 1:
                raise UsageError(f"--paths: {part!r} needs a positive thread count, e.g. threads=1")
            threads = int(value)
        elif part in PATH_FEATURES or part in ABLATIONS:
            overrides.update(PATH_FEATURES.get(part) or ABLATIONS[part])
        else:
            valid = ", ".join(["default", *PATH_FEATURES, *ABLATIONS, "threads=N", "all"])
            raise UsageError(f"--paths: unknown path part {part!r} in {name!r}; valid parts: {valid}")
    return overrides, threads


def all_paths() -> list[str]:
    """Every combination of the fast-path features, the ablations, and the default path on one thread."""
    names = ["default"]
    features = list(PATH_FEATURES)
    for count in range(1, len(features) + 1):
        names += ["+".join(combo) for combo in itertools.combinations(features, count)]
    return [*names, *ABLATIONS, "threads=1"]


def path_unavailable(name: str, device: torch.device) -> str | None:
    """Why path ``name`` cannot run on ``device`` (None when it can)."""
    overrides, threads = parse_path(name)
    if device.type != "cpu" and any(part in ABLATIONS for part in name.split("+")):
        return "a CPU setting (the same as default on this device)"
    if overrides.get("precision") == "bf16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            return "this GPU has no bf16"
        if device.type == "cpu" and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return "this CPU has no native bf16 (avx512_bf16 / amx)"
    if overrides.get("compile"):
        if device.type == "cpu" and not any(shutil.which(cc) for cc in (os.environ.get("CXX", "g++"), "c++")):
            return "torch.compile on CPU needs a C++ compiler"
        if device.type == "cuda":
            try:
                import triton  # noqa: F401
            except ImportError:
                return "torch.compile on CUDA needs triton"
    if threads is not None:
        if device.type == "cuda":
            return "CPU thread settings are not a CUDA fast path"
        if threads == torch.get_num_threads():
            return f"torch already uses {threads} thread(s)"
    return None


def parse_norms(text: str) -> list[tuple[str, str]]:
    """``"IN/IN,ILM+IN/ILM+IN"`` → ``[("instance", "instance"), ("ilm_in", "ilm_in")]`` (a lone X is X/X)."""
    pairs = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        names = item.split("/")
        if len(names) == 1:
            names = names * 2
        if len(names) != 2:
            raise UsageError(f"--norms: {item!r} is not a G/D pair such as IN/IN or ilm_in/instance")
        resolved = tuple(NORM_ALIASES.get(n.strip().lower(), n.strip().lower()) for n in names)
        for name in resolved:
            if name not in NORM_NAMES:
                valid = ", ".join([*NORM_NAMES, *(k.upper() for k in NORM_ALIASES)])
                raise UsageError(f"--norms: unknown norm {name!r}; valid: {valid}")
        pairs.append(resolved)
    if not pairs:
        raise UsageError("--norms: give at least one G/D pair, e.g. IN/IN")
    return pairs


def norm_key(pair: tuple[str, str] | list[str]) -> str:
    return f"{pair[0]}/{pair[1]}"


def norm_label(key: str) -> str:
    return "/".join(NORM_LABELS.get(n, n) for n in key.split("/"))


def options_from_args(args: argparse.Namespace, device: torch.device) -> dict:
    defaults = PROFILE_DEFAULTS if getattr(args, "profile", False) else BENCH_DEFAULTS
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    for name in ("size", "ngf", "ndf", "iters", "repeats", "infer_repeats", "batch_size", "images"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    for name in ("warmup", "retries", "until_resolved"):
        if getattr(args, name, 0) < 0:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    depth = unet_depth(args.netG)
    if depth is not None and args.size % 2**depth:
        raise UsageError(
            f"--size {args.size} does not fit --netG {args.netG}: it must be a multiple of {2**depth}"
        )
    return {
        "size": args.size,
        "netG": args.netG,
        "netD": args.netD,
        "ngf": args.ngf,
        "ndf": args.ndf,
        "device": str(device),
        "iters": args.iters,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "infer_repeats": args.infer_repeats,
        "until_resolved": getattr(args, "until_resolved", 0),
        "batch_size": args.batch_size,
        "images": args.images,
        "retries": args.retries,
        "seed": args.seed,
    }


def select_paths(text: str | None, device: torch.device) -> tuple[list[str], dict[str, str]]:
    """The requested paths (validated) and the default ones skipped on this device, with the reason."""
    if text is None:
        candidates, explicit = list(DEFAULT_PATHS), False
    elif text.strip() == "all":
        candidates, explicit = all_paths(), False
    elif text.strip() in ("", "none"):
        return [], {}
    else:
        candidates, explicit = [p.strip() for p in text.split(",") if p.strip()], True
    paths, skipped = [], {}
    for name in candidates:
        if name == BASELINE:
            continue  # always measured
        parse_path(name)
        reason = None if explicit else path_unavailable(name, device)
        if reason:
            skipped[name] = reason
        elif name not in paths:
            paths.append(name)
    return paths, skipped


def select_profile_paths(text: str | None) -> list[str]:
    """The paths ``--profile`` profiles: ``default`` unless ``--paths`` names others (``baseline`` included);
    a compiled step runs as one graph, so its time cannot be told apart per module."""
    if text is None:
        return ["default"]
    paths: list[str] = []
    for name in (p.strip() for p in text.split(",") if p.strip()):
        if name != BASELINE and parse_path(name)[0].get("compile"):
            raise UsageError(
                f"--profile: path {name!r} uses torch.compile, whose ops cannot be told apart per module"
            )
        if name not in paths:
            paths.append(name)
    if not paths:
        raise UsageError("--profile: give at least one path, e.g. --paths default")
    return paths


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", type=int, default=256, help="image size (default: 256)")
    parser.add_argument("--netG", default="unet_256", help="generator (default: unet_256)")
    parser.add_argument("--netD", default="basic", help="discriminator (default: basic)")
    parser.add_argument("--ngf", type=int, default=64, help="generator width (default: 64)")
    parser.add_argument("--ndf", type=int, default=64, help="discriminator width (default: 64)")
    parser.add_argument(
        "--norms",
        default="IN/IN,ILM+IN/ILM+IN",
        help="comma-separated G/D norm pairs (IN, ILM+IN, BN, GN, LN, ILM+GN, ILM+LN or norm names) "
        "(default: IN/IN,ILM+IN/ILM+IN)",
    )
    parser.add_argument(
        "--paths",
        default=None,
        help="comma-separated training paths: default, or features joined by + ("
        + ", ".join(PATH_FEATURES)
        + ", threads=N), e.g. bf16+channels_last; 'all' for every combination; the eager baseline is always "
        f"measured (default: {','.join(DEFAULT_PATHS)}, less those not applicable on the device)",
    )
    parser.add_argument(
        "--infer-paths",
        default="default",
        help="paths for the inference (test) benchmark, or 'none'; compile paths are ignored because test "
        "does not compile (default: default)",
    )
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default: auto)")
    parser.add_argument(
        "--iters",
        type=int,
        default=None,
        help=f"steps per block: each contestant's turn in a round; short blocks pair the contestants closely in "
        f"time, so the machine's drift cancels better (default: {BENCH_DEFAULTS['iters']}; "
        f"{PROFILE_DEFAULTS['iters']} with --profile)",
    )
    parser.add_argument("--warmup", type=int, default=3, help="untimed warm-up steps (default: 3)")
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="interleaved rounds of the training benchmark: in each, the baseline and one path (every norm "
        "pair) time one block in turn; ratios get a 95%% interval over the rounds, so more rounds give "
        f"narrower intervals (default: {BENCH_DEFAULTS['repeats']}; with --profile: blocks timed unprofiled, "
        f"default {PROFILE_DEFAULTS['repeats']})",
    )
    parser.add_argument(
        "--until-resolved",
        type=int,
        default=0,
        metavar="MAX",
        help="after --repeats rounds, go on with more rounds of each training group until every ratio it "
        "reports (x baseline, ILM cost, roofline share) resolves 2%%, at most MAX rounds in all; the report "
        "gives the rounds each figure took (default: 0, off)",
    )
    parser.add_argument(
        "--infer-repeats",
        type=int,
        default=8,
        help="interleaved rounds of the inference benchmark; its blocks are whole test runs, seconds each "
        "(default: 8)",
    )
    parser.add_argument("--batch-size", type=int, default=1, help="training batch size (default: 1)")
    parser.add_argument("--images", type=int, default=16, help="images per inference repeat (default: 16)")
    parser.add_argument(
        "--retries",
        type=int,
        default=3,
        help=f"make a round again when one of its blocks was disturbed by other processes (threads waited for a "
        f"CPU > {CONTENDED:.0%}% of the time), at most this many times per group (default: 3)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for weights and inputs (default: 0)")
    parser.add_argument("--json", default=None, help="also write the JSON report to this file")
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="run every measurement in this process (faster start; peak memory, compile caches and the allocator "
        "setting are shared, so the baseline and system_malloc figures are not clean, and the peak memory "
        "includes the roofline's matrix-product buffers)",
    )
    parser.add_argument(
        "--no-matmul",
        action="store_true",
        help="skip the machine probes (the fp32/bf16/fp16 matrix-product rates and the memory-copy bandwidth) "
        "and the fp32 matrix product in the training rounds, so no roofline share gets an interval",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="instead of the benchmark, profile the training step of each --norms pair (and --paths path; "
        "default: the default path only) with torch.profiler: ms per step per operation class, forward and "
        "backward (convolutions with their GFLOP/s against the fp32 matmul peak, IN, ILM, other norms, "
        "activations, concat/copies, loss, other), Adam, Python between ops, data loading; uses --iters, "
        "--warmup, --repeats; see docs/bench.md",
    )
    parser.add_argument(
        "--profile-png",
        default=None,
        metavar="PATH",
        help="with --profile: also draw ms per class as a bar chart in this PNG",
    )
    parser.add_argument(
        "--profile-md",
        default=None,
        metavar="PATH",
        help="with --profile: also write the table and its summary lines as a markdown fragment to this file",
    )
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
