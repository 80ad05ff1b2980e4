"""Table 6's training runs as child processes, ``--jobs`` at a time: started, logged, timed, stopped together."""

from __future__ import annotations

import contextvars
import ctypes
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from pix2pix_ilm.config import TrainConfig
from pix2pix_ilm.errors import UsageError
from pix2pix_ilm.files import atomic_write_text
from pix2pix_ilm.flags import flag_name
from pix2pix_ilm.training.stopping import TrainingStopped


def train_command(run: TrainConfig) -> list[str]:
    """``python -m pix2pix_ilm train`` with the run's non-default options; resumed from ``latest.pt`` if any."""
    resume = (run.run_dir / "latest.pt").is_file()
    run = dataclasses.replace(run, continue_train=resume, overwrite=not resume and run.run_dir.exists())
    flags: list[str] = []
    for f in dataclasses.fields(run):
        value = getattr(run, f.name)
        if value != f.default:  # a bool differing as False is an optional one: --no-<flag>
            name = flag_name(f)
            flags += (
                [name if value else "--no-" + name[2:]] if isinstance(value, bool) else [name, str(value)]
            )
    return [sys.executable, "-m", "pix2pix_ilm", "train", *flags]


def child_env(jobs: int) -> dict[str, str]:
    """This package first on the path, and each run's share of the CPU threads (torch reads OMP_NUM_THREADS)."""
    import torch

    threads = str(max(1, torch.get_num_threads() // jobs))
    path = os.pathsep.join(p for p in (str(Path(__file__).parents[2]), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}


COMMAND: contextvars.ContextVar[str] = contextvars.ContextVar("command", default="table6")
"""The command whose progress lines :func:`say` prints (``compare`` or ``table6``)."""


def say(message: str) -> None:
    """A progress line of the command (the runs' own output goes to their logs)."""
    print(f"[{COMMAND.get()}] {message}", file=sys.stderr, flush=True)


Monitor = Callable[[list[tuple[TrainConfig, float]], float], "list[TrainConfig] | None"]


def train_runs(runs: list[TrainConfig], jobs: int, logs: Path, monitor: Monitor | None = None) -> None:
    """Train ``runs``, ``jobs`` at a time, logging to ``logs/<name>.log``; a failed run, Ctrl+C or SIGTERM
    stops the others (they save ``latest.pt``) and ends the command, and so does this process's death, however
    it dies. ``monitor`` sees the active runs with their start times; when it returns new runs, the active
    ones stop and the new ones train instead. Each run's training time is recorded as it goes."""
    env, pending, active = child_env(min(jobs, len(runs) or 1)), list(runs), []
    logs.mkdir(parents=True, exist_ok=True)
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        while pending or active:
            while pending and len(active) < jobs:
                active.append(_start(pending.pop(0), env, logs))
            time.sleep(0.2)
            for child in [child for child in active if child.process.poll() is not None]:
                active.remove(child)
                _finished(child)
            for child in active:
                if time.time() - child.recorded >= RECORD_SECONDS:
                    child.record(finished=False)
            replaced = (
                monitor([(child.run, child.started) for child in active], time.time()) if monitor else None
            )
            if replaced is not None:
                _stop(active)
                active, pending = [], [run for run in replaced if not run_finished(run)]
    except TrainingStopped as stopped:
        say(
            f"{stopped.signal_name}: stopping the runs; each saves latest.pt, and the same command resumes them"
        )
        raise
    finally:
        _stop(active)
        signal.signal(signal.SIGTERM, previous)


RECORD_SECONDS = 10.0  # how often a run's training time is added to its record while it trains


def _terminated(signum: int, frame: object) -> None:
    raise TrainingStopped(signal.Signals(signum).name)


@dataclasses.dataclass
class _Child:
    """A run training in a child process, and when its training time was last recorded."""

    process: subprocess.Popen
    run: TrainConfig
    log: Path
    started: float
    recorded: float

    def record(self, finished: bool) -> None:
        """Add the time since the last record to ``table6_timing.json``."""
        now = time.time()
        _add_time(self.run, now - self.recorded, finished)
        self.recorded = now


def _start(run: TrainConfig, env: dict[str, str], logs: Path) -> _Child:
    log = logs / f"{run.name}.log"
    say(f"{run.name}: {'resuming' if (run.run_dir / 'latest.pt').is_file() else 'training'} (log: {log})")
    # Its own process group: a Ctrl+C reaches this process only, which then stops each run once.
    with open(log, "ab") as out:
        process = subprocess.Popen(
            train_command(run),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=_terminated_with(os.getpid()),
        )
    now = time.time()
    return _Child(process, run, log, now, now)


def _terminated_with(parent: int) -> Callable[[], None]:
    """For the child, before it runs: SIGTERM (save ``latest.pt``, stop) when ``parent`` dies, however it dies
    (Linux's ``PR_SET_PDEATHSIG``); a parent already gone ends it at once."""

    def arrange() -> None:
        if sys.platform.startswith("linux"):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:
            os._exit(128 + signal.SIGTERM)

    return arrange


PR_SET_PDEATHSIG = 1


def _finished(child: _Child) -> None:
    """Record a finished run's training time; a failed run ends the command with its log's end."""
    if child.process.returncode != 0:
        print("\n".join(child.log.read_text(errors="replace").splitlines()[-20:]), file=sys.stderr)
        raise UsageError(
            f"{child.run.name}: training failed with exit code {child.process.returncode} (log: {child.log})"
        )
    say(f"{child.run.name}: trained in {(time.time() - child.started) / 60:.1f} min")
    child.record(finished=True)


def _add_time(run: TrainConfig, seconds: float, finished: bool) -> None:
    """Add ``seconds`` of training to the run's ``table6_timing.json``."""
    path = run.run_dir / "table6_timing.json"
    seconds += json.loads(path.read_text())["train_seconds"] if path.is_file() else 0.0
    atomic_write_text(path, json.dumps({"train_seconds": round(seconds, 1), "finished": finished}) + "\n")


def run_finished(run: TrainConfig) -> bool:
    """Its training returned (resumed at the very end, it writes no checkpoint) or its last epoch's exists."""
    timing = run.run_dir / "table6_timing.json"
    finished = timing.is_file() and json.loads(timing.read_text()).get("finished", False)
    return finished or (run.run_dir / f"epoch_{run.total_epochs}.pt").is_file()


def _stop(children: list[_Child]) -> None:
    """One SIGTERM each: a run finishes its step and saves ``latest.pt``; a second Ctrl+C kills them. Their
    training time is recorded."""
    for child in children:
        child.process.terminate()
    try:
        for child in children:
            child.process.wait()
    except KeyboardInterrupt:
        for child in children:
            child.process.kill()
            child.process.wait()
        raise
    finally:
        for child in children:
            child.record(finished=False)
