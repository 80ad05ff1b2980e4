"""Interleaved measurement: the contestants of a group take turns, one block each per round, so a slow drift
of the machine (clock, other processes) hits them alike, and each ratio gets an interval over the rounds.

Design notes: docs/bench.md ("Interleaved rounds").
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Hashable
from typing import Any, Protocol, TypeVar

from pix2pix_ilm.bench.probes import CONTENDED, summarize
from pix2pix_ilm.cpu_speed import RETAIN_MEMORY_ENV
from pix2pix_ilm.errors import first_line
from pix2pix_ilm.stats import ratio_interval

Key = TypeVar("Key", bound=Hashable)

#: half-width of a ratio's interval above which it cannot tell a 2 % difference: marked "too wide to judge"
RESOLUTION = 0.02


class ContestantFailed(RuntimeError):
    """A contestant could not be set up or died; the others go on and the report names the error."""


class Timed(Protocol):
    def block(self) -> dict: ...
    def finish(self) -> dict: ...
    def close(self) -> None: ...


class RemoteContestant:
    """A contestant served by its own process: ``python -m pix2pix_ilm bench --worker JOB`` (worker.serve), or
    ``command`` when given (any program that answers the same protocol, e.g. scripts/compare_commits.py)."""

    def __init__(self, job: dict, command: list[str] | None = None) -> None:
        env = dict(os.environ)
        if "system_malloc" in job.get("path", "").split("+"):
            env[RETAIN_MEMORY_ENV] = "0"
        self._stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (closed in close())
        cmd = command or [sys.executable, "-m", "pix2pix_ilm", "bench", "--worker", json.dumps(job)]
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, text=True, env=env
        )
        first = self._read()
        if "error" in first:
            self.close()
            raise ContestantFailed(first["error"])

    def _read(self) -> dict:
        """The next JSON object the process prints (other lines, e.g. a library's, are skipped)."""
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with contextlib.suppress(json.JSONDecodeError):
                answer = json.loads(line)
                if isinstance(answer, dict):
                    return answer
        self.proc.wait()
        self._stderr.seek(0)
        errors = [line for line in self._stderr.read().splitlines() if line.strip()]
        self.close()
        raise ContestantFailed((errors[-1] if errors else f"exit code {self.proc.returncode}")[:300])

    def _ask(self, command: str) -> dict:
        assert self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):  # the process ended: _read says why
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()
        return self._read()

    def block(self) -> dict:
        return self._ask("block")

    def finish(self) -> dict:
        result = self._ask("finish")
        self.close()
        return result

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()  # type: ignore[union-attr]
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._stderr.close()


class InProcessContestant:
    """A contestant in this process (``--in-process``): set-up errors become ContestantFailed too."""

    def __init__(self, job: dict) -> None:
        from pix2pix_ilm.bench.worker import make_contestant

        try:
            self.inner = make_contestant(job)
        except Exception as err:  # a failing path (e.g. compile without a compiler) must not stop the others
            raise ContestantFailed(f"{type(err).__name__}: {first_line(err)}") from err

    def block(self) -> dict:
        try:
            return self.inner.block()
        except Exception as err:
            raise ContestantFailed(f"{type(err).__name__}: {first_line(err)}") from err

    def finish(self) -> dict:
        return self.inner.finish()

    def close(self) -> None:
        self.inner.close()


def run_rounds(
    contestants: dict[Key, Timed],
    rounds: int,
    retries: int,
    *,
    resolved: Callable[[dict[Key, list[dict]]], bool] | None = None,
    max_rounds: int = 0,
) -> tuple[dict[Key, list[dict]], dict[Key, str], int]:
    """``rounds`` rounds; in each, every live contestant times one block, the order rotating by one per round.
    With ``resolved``, more rounds follow until it says the blocks so far are enough, at most ``max_rounds``
    in all.

    A round in which some block waited for a CPU more than ``CONTENDED`` of its time is made again, at most
    ``retries`` times in all. Returns the kept blocks per contestant (index = round), the contestants that
    failed (with the reason) and the number of rounds discarded.
    """
    keys = list(contestants)
    blocks: dict[Key, list[dict]] = {key: [] for key in keys}
    failed: dict[Key, str] = {}
    discarded = kept = 0

    def more() -> bool:
        if kept < rounds:
            return True
        return resolved is not None and kept < max_rounds and not resolved(blocks)

    while more():
        order = keys[kept % len(keys) :] + keys[: kept % len(keys)]
        this_round = {}
        for key in order:
            if key in failed:
                continue
            try:
                this_round[key] = contestants[key].block()
            except ContestantFailed as err:
                failed[key] = str(err)
        if not this_round:
            break
        if any((b.get("cpu_wait") or 0) > CONTENDED for b in this_round.values()) and discarded < retries:
            discarded += 1
            continue
        for key, block in this_round.items():
            blocks[key].append(block)
        kept += 1
    return blocks, failed, discarded


def all_resolved(pairs: list[tuple[Hashable, Hashable]]) -> Callable[[dict[Any, list[dict]]], bool]:
    """A ``resolved`` test for run_rounds: every (slower, faster) pair's paired ratio is narrower than
    ``RESOLUTION``; a pair with a missing contestant does not hold the rounds up."""

    def test(blocks: dict[Any, list[dict]]) -> bool:
        for slower, faster in pairs:
            if not blocks.get(slower) or not blocks.get(faster):
                continue
            interval = paired_ratio(blocks[slower], blocks[faster])
            if interval is None or interval["too_wide"]:
                return False
        return True

    return test


def summarize_blocks(blocks: list[dict], units: float) -> dict[str, Any]:
    """Rate per block (``units`` per block ÷ its seconds): median, min, max, and the worst CPU wait."""
    waits = [b["cpu_wait"] for b in blocks if b.get("cpu_wait") is not None]
    return summarize([units / b["seconds"] for b in blocks]) | {
        "cpu_wait": max(waits) if waits else None,
        "cpu_wait_repeats": [b.get("cpu_wait") for b in blocks],
    }


def paired_ratio(slower: list[dict], faster: list[dict], field: str = "seconds") -> dict[str, Any] | None:
    """time(slower) ÷ time(faster) over the rounds both have (geometric mean, t interval); None if none.

    Rounds with a non-positive time are left out (a derived time, such as the per-image time of two test
    runs' difference, can come out ≤ 0 when the runs are tiny and noisy)."""
    pairs = [
        (a[field], b[field]) for a, b in zip(slower, faster, strict=False) if a[field] > 0 and b[field] > 0
    ]
    if not pairs:
        return None
    out = ratio_interval([a for a, _ in pairs], [b for _, b in pairs])
    out["too_wide"] = out["low"] is None or (out["high"] - out["low"]) / 2 > RESOLUTION * out["ratio"]
    return out


def measure_once(job: dict, in_process: bool) -> dict[str, Any]:
    """A job measured alone (``bench --profile``): one block, then the contestant's own figures; or its error."""
    try:
        contestant: Timed = InProcessContestant(job) if in_process else RemoteContestant(job)
    except ContestantFailed as err:
        return {"error": str(err)}
    try:
        return contestant.block() | contestant.finish()
    except ContestantFailed as err:
        contestant.close()
        return {"error": str(err)}
