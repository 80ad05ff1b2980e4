"""benchmarks/compare_commits.py: two checkouts alternated in fresh processes, a paired ratio with its interval."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # four fresh processes
def test_a_checkout_against_itself_gives_a_paired_ratio():
    tiny = ["--size", "32", "--netG", "unet_32", "--ngf", "4", "--ndf", "4", "--warmup", "0", "--steps", "1"]
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "compare_commits.py"), str(ROOT), str(ROOT), *tiny]
        + ["--rounds", "2", "--norms", "ilm_in/instance"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    results = [json.loads(line) for line in lines if line.startswith("{")]
    assert [r["options"]["norms"] for r in results] == ["ilm_in/instance"]
    ratio, old, new = results[0]["new_over_old"], results[0]["old_s"], results[0]["new_s"]
    assert len(old) == len(new) == ratio["n"] == 2
    # By hand: the geometric mean of the per-round ratios; for two rounds a 95 % t interval on their logs with
    # t(0.975, 1 d.f.) = tan(0.475 pi) = 12.7062... (t with 1 d.f. is the Cauchy distribution) and
    # sd / sqrt(2) = |difference of the two logs| / 2. Exact: on a busy machine the interval is wide, and
    # exp() turns a rounded t into a visible relative error.
    logs = [math.log(n / o) for n, o in zip(new, old, strict=True)]
    half = math.tan(0.475 * math.pi) * abs(logs[0] - logs[1]) / 2
    assert ratio["ratio"] == pytest.approx(math.sqrt(new[0] * new[1] / (old[0] * old[1])))
    assert [ratio["low"], ratio["high"]] == pytest.approx(
        [math.exp(sum(logs) / 2 - half), math.exp(sum(logs) / 2 + half)], rel=1e-4
    )
    # The same code on both sides: the ratio is 1 but for the machine's noise (a factor 2 is load, not code).
    assert 0.5 < ratio["ratio"] < 2
    assert (
        f"new / old step time {ratio['ratio']:.3f} [{ratio['low']:.3f}-{ratio['high']:.3f}] over 2 rounds"
        in lines[-1]
    )
    assert lines[-1].startswith("ilm_in/instance: new / old step time")
