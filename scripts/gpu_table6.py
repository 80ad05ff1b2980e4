"""Table 6 at paper scale on one GPU: the driver behind ``scripts/gpu_table6.sh`` (see ``--help``).

Stages: ``--prepare`` (here: fill the git-ignored kit folder), the run (on the GPU machine: bench, projection,
detached training processes), ``--status`` (one line; ``--wait S`` blocks until done or S seconds), and
``--collect`` (score both splits, write the document). ``--dry-run`` goes through every stage on CPU with a
tiny preset. Only the standard library and the package are used, so it runs under any Python with torch.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ("in_in", "ilmin_in", "ilmin_ilmin")
BENCH_NORMS = {"in_in": "instance/instance", "ilmin_in": "ilm_in/instance", "ilmin_ilmin": "ilm_in/ilm_in"}
PAPER_EPOCHS = (100, 100)
TRAIN_IMAGES = 200
OVERHEAD_S = 120.0
"""Start-up (imports, CUDA, data checks) plus test and scoring of both splits per process, run concurrently."""
TINY = dict(netG="unet_32", ngf=4, ndf=4, load_size=36, crop_size=32, subset="0:3")  # the dry run's model


def flags(**options: object) -> list[str]:
    """``flags(size=32, netG="unet_32")`` -> ``["--size", "32", "--netG", "unet_32"]``."""
    return [item for key, value in options.items() for item in (f"--{key}", str(value))]


TINY_BENCH = flags(size=32, netG="unet_32", ngf=4, ndf=4, warmup=1, min_time=0.2)
PAPER_BENCH = flags(size=256, netG="unet_256", ngf=64, ndf=64, warmup=5)


def say(message: str) -> None:
    print(f"[gpu_table6] {message}", flush=True)


def fail(message: str) -> int:
    print(f"[gpu_table6] error: {message}", file=sys.stderr, flush=True)
    return 2


# --------------------------------------------------------------------------------------------- the kit


def prepare(kit: Path, shared: Path) -> int:
    """Copy the facades images, the LPIPS backbone and the lpips wheel into ``kit`` (kept out of git)."""
    sources = {
        "facades": shared / "data" / "facades",
        "alexnet_owt_features.pth": shared / "weights" / "alexnet_owt_features.pth",
    }
    wheels = sorted((shared / "wheels").glob("lpips-*.whl"))
    missing = [str(p) for p in sources.values() if not p.exists()] + ([] if wheels else ["lpips wheel"])
    if missing:
        return fail(f"--prepare: not found: {', '.join(missing)} (give --shared DIR)")
    kit.mkdir(parents=True, exist_ok=True)
    for phase in ("train", "test"):
        shutil.copytree(sources["facades"] / phase, kit / "facades" / phase, dirs_exist_ok=True)
    shutil.copy2(sources["alexnet_owt_features.pth"], kit / "alexnet_owt_features.pth")
    (kit / "wheels").mkdir(exist_ok=True)
    shutil.copy2(wheels[-1], kit / "wheels" / wheels[-1].name)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    (kit / "commit.txt").write_text(commit.stdout.strip() or "unknown")
    size = sum(p.stat().st_size for p in kit.rglob("*") if p.is_file())
    say(f"kit ready in {kit}: {size / 2**20:.1f} MiB (carry it: run(carry=['{kit.name}']))")
    return 0


def python_env(kit: Path) -> dict[str, str]:
    """The environment of every child: the repo on PYTHONPATH, lpips from the kit's wheel when missing,
    one CPU thread share per process."""
    env = dict(os.environ)
    paths = [str(ROOT)]
    if importlib.util.find_spec("lpips") is None:
        site = kit / "site"
        wheels = sorted((kit / "wheels").glob("lpips-*.whl"))
        if not (site / "lpips").is_dir():
            if not wheels:
                raise SystemExit(
                    fail(f"lpips is not installed and {kit / 'wheels'} has no wheel (--prepare)")
                )
            pip = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--target"]
            subprocess.run([*pip, str(site), str(wheels[-1])], check=True)
        paths.append(str(site))
    env["PYTHONPATH"] = os.pathsep.join(paths + [p for p in [env.get("PYTHONPATH")] if p])
    env["PYTHONUNBUFFERED"] = "1"
    return env


def dry_run_data(kit: Path, shared: Path, work: Path) -> Path:
    """The kit's facades, or a linked stand-in with the paper split's indices (train/1..202, test/1..2)."""
    if (kit / "facades" / "train").is_dir():
        return kit / "facades"
    source = shared / "data" / "facades"
    data = work / "facades"
    for phase, count in (("train", 202), ("test", 2)):
        (data / phase).mkdir(parents=True, exist_ok=True)
        for n in range(1, count + 1):
            link = data / phase / f"{n}.jpg"
            if not link.exists():
                link.symlink_to(source / phase / f"{1 + (n - 1) % 4}.jpg")
    return data


# --------------------------------------------------------------------------------------- projection


def bench_rates(env: dict[str, str], out: Path, device: str, tiny: bool) -> dict[str, Any]:
    """Training it/s per configuration from ``pix2pix-ilm bench`` (default setting)."""
    report = out / "bench.json"
    cmd = [sys.executable, "-m", "pix2pix_ilm", "bench", "--device", device, "--json", str(report)]
    cmd += ["--norms", ",".join(BENCH_NORMS.values()), *(TINY_BENCH if tiny else PAPER_BENCH)]
    say("bench: " + " ".join(cmd[1:]))
    subprocess.run(
        cmd, env=env | ({"OMP_NUM_THREADS": "1"} if tiny else {}), check=True, stdout=subprocess.DEVNULL
    )
    data = json.loads(report.read_text())
    default = {row["norms"]: row for row in data["rows"]}
    rates = {c: float(default[key]["it_s"]) for c, key in BENCH_NORMS.items()}
    syncs = {c: default[key]["host_syncs_per_step"] for c, key in BENCH_NORMS.items()}  # None on CPU
    settings = next(iter(default.values()))["resolved"]  # what "default" means on this device
    machine = data["machine"]
    return {
        "rates": rates,
        "gpu": machine.get("gpu"),
        "torch": machine.get("torch"),
        "settings": settings,
        "host_syncs_per_step": syncs,
    }


def speed_settings(state: dict[str, Any]) -> str:
    """What the training runs used, from their config.json (train saves the values it resolved)."""
    seen = set()
    for run in state["runs"]:
        path = run_dir(state, run["config"], run["seed"]) / "config.json"
        if path.is_file():
            config = json.loads(path.read_text())["config"]
            seen.add(describe_settings(config))
    return "; ".join(sorted(seen)) or "unknown (no config.json)"


def describe_settings(settings: dict[str, Any] | None) -> str:
    if not settings:
        return "unknown"
    on_off = {True: "on", False: "off"}
    return (
        f"precision {settings['precision']}, channels_last {on_off.get(settings['channels_last'])}, "
        f"compile {on_off.get(settings['compile'])}"
    )


def plan_schedule(rates: dict[str, float], configs: list[str], seeds: list[int], budget_min: float | None):
    """Epochs (n_epochs, n_epochs_decay) and the projected minutes; the paper's 100 + 100 unless the
    projection exceeds the budget, then the longest schedule that fits (same architecture).

    Projection: the processes share one GPU, and we assume they gain nothing from running together
    (the sum of single-process times), which is an upper bound."""
    epoch_s = sum(TRAIN_IMAGES / rates[c] for c in configs) * len(seeds)
    full = sum(PAPER_EPOCHS)
    projected_min = (full * epoch_s + OVERHEAD_S) / 60
    if budget_min is None or projected_min <= budget_min:
        return PAPER_EPOCHS, projected_min, projected_min
    epochs = int((budget_min * 60 - OVERHEAD_S) // epoch_s)
    if epochs < 2:
        raise SystemExit(
            fail(f"--budget-min {budget_min} fits fewer than 2 epochs (one epoch: {epoch_s:.0f} s)")
        )
    schedule = (math.ceil(epochs / 2), epochs // 2)
    return schedule, projected_min, (epochs * epoch_s + OVERHEAD_S) / 60


# -------------------------------------------------------------------------------------------- runs


def table6_cmd(state: dict[str, Any], configs: list[str], seeds: list[int], *, no_train: bool) -> list[str]:
    n_epochs, n_decay = state["schedule"]
    cmd = [sys.executable, "-m", "pix2pix_ilm", "table6", "--preset", "paper", "--out", state["out"]]
    cmd += [
        "--dataroot",
        state["dataroot"],
        "--lpips-backbone",
        state["backbone"],
        "--device",
        state["device"],
    ]
    cmd += ["--eval-split", "both", "--no-progress", "--configs", *configs, "--seeds", *map(str, seeds)]
    cmd += ["--set", f"n_epochs={n_epochs}", "--set", f"n_epochs_decay={n_decay}"]
    for key, value in state["overrides"].items():
        cmd += ["--set", f"{key}={value}"]
    if state.get("eval_limit"):
        cmd += ["--eval-limit", str(state["eval_limit"])]
    return [*cmd, "--no-train"] if no_train else cmd


def run_dir(state: dict[str, Any], config: str, seed: int) -> Path:
    return Path(state["out"]) / "checkpoints" / f"{config}_seed{seed}"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def launch(state: dict[str, Any], env: dict[str, str]) -> None:
    """One detached process per configuration and seed (a new session: it outlives this shell)."""
    logs = Path(state["out"]) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    threads = max(1, (os.cpu_count() or 1) // len(state["runs"]))
    child_env = env | {"OMP_NUM_THREADS": str(threads)}
    for run in state["runs"]:
        if (run.get("pid") and alive(run["pid"])) or run_progress(state, run)[1] == "scored":
            continue
        with open(logs / f"{run['name']}.log", "ab") as log:
            proc = subprocess.Popen(
                table6_cmd(state, [run["config"]], [run["seed"]], no_train=False),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=child_env,
                cwd=ROOT,
                start_new_session=True,
            )
        run["pid"] = proc.pid
        say(f"started {run['name']} (pid {proc.pid}, log {logs / (run['name'] + '.log')})")


def run_progress(state: dict[str, Any], run: dict[str, Any]) -> tuple[float, str]:
    total = sum(state["schedule"])
    folder = run_dir(state, run["config"], run["seed"])
    if (folder / f"epoch_{total}.pt").is_file():
        scored = list((Path(state["out"]) / "results" / run["name"]).glob("*/metrics.json"))
        return 1.0, "scored" if len(scored) >= 2 else "trained"
    fraction = 0.0
    log = folder / "loss_log.jsonl"
    if log.is_file():
        lines = log.read_text().strip().splitlines()
        if lines:
            fraction = min(1.0, float(json.loads(lines[-1])["epoch_progress"]) / total)
    running = bool(run.get("pid")) and alive(run["pid"])
    return fraction, f"{100 * fraction:.0f}%" + ("" if running else " stopped")


def status_line(state: dict[str, Any]) -> tuple[str, bool]:
    parts, fractions, done = [], [], True
    for run in state["runs"]:
        fraction, text = run_progress(state, run)
        parts.append(f"{run['name']} {text}")
        fractions.append(fraction)
        done &= text == "scored" or (text == "trained" and not alive(run.get("pid") or 0))
    elapsed = (state.get("trained_at", time.time()) - state["started"]) / 60
    progress = sum(fractions) / len(fractions)
    eta = f", ~{elapsed * (1 - progress) / progress:.0f} min left" if 0 < progress < 1 else ""
    return " | ".join(parts) + f" | {elapsed:.1f} min elapsed{eta}", done


def load_state(out: Path) -> dict[str, Any] | None:
    path = out / "kit_state.json"
    return json.loads(path.read_text()) if path.is_file() else None


def save_state(state: dict[str, Any]) -> None:
    path = Path(state["out"]) / "kit_state.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    tmp.replace(path)


def wait(state: dict[str, Any], seconds: float, interval: float = 30.0) -> bool:
    deadline = time.time() + seconds
    while True:
        line, done = status_line(state)
        say(line)
        if done and "trained_at" not in state:
            state["trained_at"] = time.time()
            save_state(state)
        if done or time.time() >= deadline:
            return done
        time.sleep(min(interval, max(0.0, deadline - time.time())))


# ---------------------------------------------------------------------------------------------- collect


def collect(state: dict[str, Any], env: dict[str, str], doc: Path) -> int:
    """Score every trained run on both splits (no training) and write the document."""
    finished = {
        (r["config"], r["seed"]) for r in state["runs"] if run_progress(state, r)[1] in ("trained", "scored")
    }
    seeds = [s for s in state["seeds"] if all((c, s) in finished for c in state["configs"])]
    if not seeds:
        return fail("no seed has all its runs trained yet; see --status")
    cmd = table6_cmd(state, state["configs"], seeds, no_train=True)
    started = time.time()
    subprocess.run(cmd, env=env, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    out = Path(state["out"])
    n_epochs, n_decay = state["schedule"]
    shortened = (n_epochs, n_decay) != PAPER_EPOCHS and not state.get("dry_run")
    bench = state["bench"]
    syncs = {c: n for c, n in (bench.get("host_syncs_per_step") or {}).items() if n is not None}
    lines = [
        "# Table 6 at paper scale (`--preset paper`) on one GPU, measured",
        "",
        "## Command and machine",
        "",
        "```sh",
        state["command"],
        "bash scripts/gpu_table6.sh --collect",
        "```",
        "",
        f"- Commit `{state['commit']}`; GPU {bench.get('gpu') or state['device']}, torch {bench.get('torch')}; "
        f"{len(state['runs'])} training processes at once on one device.",
        f"- Training path (the runs' config.json): {speed_settings(state)}; bench default path: "
        f"{describe_settings(bench.get('settings'))}.",
        "- Bench (one process, training it/s): "
        + ", ".join(f"{c} {bench['rates'][c]:.2f}" for c in state["configs"])
        + "; host syncs per step (CUDA only): "
        + ", ".join(f"{c} {syncs.get(c, 'n/a')}" for c in state["configs"])
        + f"; projected wall time of the paper schedule: {state['projected_full_min']:.1f} min"
        + (f" (budget {state['budget_min']:g} min)." if state.get("budget_min") else "."),
        f"- Wall time: {(state.get('trained_at', started) - state['started']) / 60:.1f} min training "
        f"(all processes), {(time.time() - started) / 60:.1f} min collecting.",
        f"- Seeds in the table: {seeds}"
        + (
            f"; missing (not all runs trained): {sorted(set(state['seeds']) - set(seeds))}"
            if len(seeds) < len(state["seeds"])
            else ""
        )
        + ".",
    ]
    if shortened:
        lines.append(
            f"- **Shortened schedule**: {n_epochs} + {n_decay} epochs instead of the paper's 100 + 100, the "
            f"longest that fits the {state['budget_min']:g}-minute budget with the same architecture "
            "(unet_256, 70×70 PatchGAN, 256², batch 1): the numbers are not the paper's protocol."
        )
    if state.get("dry_run"):
        lines.append("- **Dry run** on CPU with a tiny model: checks the kit, the numbers mean nothing.")
    lines += ["", "## Result", "", (out / "table6.md").read_text().split("\n", 1)[1].strip(), ""]
    figure = out / "table6.png"
    if figure.is_file():
        target = doc.with_suffix(".png")
        shutil.copy2(figure, target)
        lines += [f"![per-seed values]({target.name})", ""]
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text("\n".join(lines))
    say(f"wrote {doc}")
    return 0


# ------------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="scripts/gpu_table6.sh", description=__doc__.split("\n\n")[0])
    stage = p.add_mutually_exclusive_group()
    stage.add_argument("--prepare", action="store_true", help="fill the kit folder from --shared (run here)")
    stage.add_argument("--status", action="store_true", help="one status line (with --wait: until done)")
    stage.add_argument("--collect", action="store_true", help="score both splits, write --doc")
    p.add_argument("--dry-run", action="store_true", help="every stage on CPU with a tiny preset")
    p.add_argument("--budget-min", type=float, default=None, help="wall-time budget of the training")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (default: 0)")
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=CONFIGS)
    p.add_argument("--wait", type=float, default=0.0, help="with --status: block up to S seconds")
    p.add_argument("--kit", type=Path, default=ROOT / ".gpu_kit", help="kit folder (default: .gpu_kit)")
    p.add_argument(
        "--shared", type=Path, default=Path(os.environ.get("PIX2PIX_ILM_SHARED", ROOT.parent / "shared"))
    )
    p.add_argument("--out", type=Path, default=None, help="runs (default: results/table6_paper)")
    p.add_argument("--doc", type=Path, default=None, help="document (default: docs/table6_paper.md)")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    out = (args.out or ROOT / ("results/table6_dry" if args.dry_run else "results/table6_paper")).resolve()
    doc = args.doc or (out / "table6_paper.md" if args.dry_run else ROOT / "docs" / "table6_paper.md")
    if args.prepare:
        return prepare(args.kit, args.shared)
    state = load_state(out)
    if args.status or args.collect:
        if state is None:
            return fail(f"no kit run in {out}; start one with scripts/gpu_table6.sh")
        env = python_env(args.kit)
        if args.collect:
            return collect(state, env, doc)
        return 0 if wait(state, args.wait) or not args.wait else 1
    env = python_env(args.kit)
    if state is not None:  # resumable: restart what stopped, keep what runs
        launch(state, env)
        save_state(state)
        say(status_line(state)[0])
        return 0
    device = "cpu" if args.dry_run else "cuda"
    if not args.dry_run:
        import torch

        if not torch.cuda.is_available():
            return fail("no CUDA device; use --dry-run to check the kit on CPU")
    out.mkdir(parents=True, exist_ok=True)
    dataroot = dry_run_data(args.kit, args.shared, out) if args.dry_run else args.kit / "facades"
    backbone = args.kit / "alexnet_owt_features.pth"
    if not backbone.is_file():
        backbone = args.shared / "weights" / "alexnet_owt_features.pth"
    if not dataroot.is_dir() or not backbone.is_file():
        return fail(
            f"kit incomplete ({dataroot}, {backbone}); run scripts/gpu_table6.sh --prepare here first"
        )
    bench = bench_rates(env, out, device, args.dry_run)
    schedule, full_min, planned_min = plan_schedule(bench["rates"], args.configs, args.seeds, args.budget_min)
    if args.dry_run:
        schedule = (1, 0)
    rates = ", ".join(f"{c} {bench['rates'][c]:.2f} it/s" for c in args.configs)
    say(f"{device} training speed (one process): {rates}; {describe_settings(bench['settings'])}")
    say(
        f"projected wall time, paper schedule (100 + 100 epochs, {len(args.configs) * len(args.seeds)} runs): "
        f"{full_min:.1f} min; running {schedule[0]} + {schedule[1]} epochs (~{planned_min:.1f} min)"
    )
    commit_file = args.kit / "commit.txt"
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    state = {
        "command": "bash scripts/gpu_table6.sh " + " ".join(argv),
        "commit": git.stdout.strip() or (commit_file.read_text() if commit_file.is_file() else "unknown"),
        "out": str(out),
        "dataroot": str(dataroot),
        "backbone": str(backbone),
        "device": device,
        "configs": args.configs,
        "seeds": args.seeds,
        "schedule": list(schedule),
        "overrides": TINY if args.dry_run else {},
        "eval_limit": 2 if args.dry_run else None,
        "budget_min": args.budget_min,
        "projected_full_min": full_min,
        "bench": bench,
        "dry_run": args.dry_run,
        "started": time.time(),
        "runs": [{"config": c, "seed": s, "name": f"{c}_seed{s}"} for s in args.seeds for c in args.configs],
    }
    launch(state, env)
    save_state(state)
    if not args.dry_run:
        say("detached; check with: bash scripts/gpu_table6.sh --status [--wait 540]; then --collect")
        return 0
    if not wait(state, 600, interval=0.5):
        return fail("dry run: the runs did not finish")
    return collect(state, env, doc)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(main(sys.argv[1:]))
