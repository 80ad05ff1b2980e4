"""benchmarks/compare_commits.py: two checkouts alternated in fresh processes, one paired ratio per norm pair."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_checkout_against_itself_gives_a_paired_ratio_per_norm_pair():
    tiny = ["--size", "32", "--netG", "unet_32", "--ngf", "4", "--ndf", "4", "--warmup", "0", "--steps", "1"]
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "compare_commits.py"), str(ROOT), str(ROOT), *tiny]
        + ["--rounds", "2", "--norms", "instance/instance,ilm_in/instance"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    results = [json.loads(line) for line in lines if line.startswith("{")]
    assert [r["options"]["norms"] for r in results] == ["instance/instance", "ilm_in/instance"]
    for result in results:
        ratio = result["new_over_old"]
        assert len(result["old_s"]) == len(result["new_s"]) == ratio["n"] == 2
        assert ratio["low"] <= ratio["ratio"] <= ratio["high"]
    assert lines[-1].startswith("ilm_in/instance: new / old step time")
