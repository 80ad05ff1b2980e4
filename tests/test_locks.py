"""Folders owned by one command at a time: a test replacing a results folder and evals reading it never mix
(an eval scores one whole test, or is refused in one line), in a loop of many tries."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

from pix2pix_ilm.cli import main
from pix2pix_ilm.errors import UsageError
from pix2pix_ilm.evaluation.evaluate import score_to_json
from tests.faults import CHILD_ENV, args_for_test


def _rmse_by_stem(folder: Path) -> tuple[str, dict[str, float]]:
    """A finished test's id and each image's RMSE, computed here from its PNGs."""
    info = json.loads((folder / "test.json").read_text())
    scores = {}
    for stem in info["images"]:
        fake, real = (
            np.asarray(Image.open(folder / "images" / f"{stem}_{k}.png"), float) for k in ("fake_B", "real_B")
        )
        scores[stem] = float(np.sqrt(np.mean((fake - real) ** 2)))
    return info["test_id"], scores


def test_evals_racing_tests_score_one_whole_test_or_are_refused(trained, tmp_path):
    trained_data, ckpt = trained
    data = tmp_path / "data"  # 40 test images: reading and writing them takes long enough for a race to show
    originals = sorted((trained_data / "test").iterdir())

    def link_test_images(shift: int) -> None:
        """Image n is original (n + shift) % 2: each test of a shift other than the last one's differs."""
        shutil.rmtree(data / "test", ignore_errors=True)
        (data / "test").mkdir(parents=True)
        for n in range(40):
            (data / "test" / f"{n}.png").symlink_to(originals[(n + shift) % 2])

    link_test_images(0)
    results = tmp_path / "results"
    folder = results / "base" / "test_latest"
    tests_done = threading.Event()
    evals: list[tuple[int, str, Path]] = []

    def evaluate_until_the_tests_end() -> None:
        """eval's own code path (as table6 scores too), over and over, each into a JSON of its own."""
        while not tests_done.is_set():
            out = tmp_path / f"eval{len(evals)}.json"
            try:
                score_to_json(folder, "rmse", json_path=out, device="cpu")
                evals.append((0, "", out))
            except UsageError as err:
                evals.append((2, str(err), out))
            time.sleep(0.2)  # the tests get their turns too

    assert main(args_for_test(data, ckpt, results, "--no-progress")) == 0
    tests = dict([_rmse_by_stem(folder)])
    racer = threading.Thread(target=evaluate_until_the_tests_end)
    racer.start()
    try:
        for shift in range(1, 7):
            link_test_images(shift)
            for _ in range(50):  # until this test gets the folder; refused while an eval holds it
                done = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "pix2pix_ilm",
                        *args_for_test(data, ckpt, results, "--no-progress"),
                    ],
                    capture_output=True,
                    text=True,
                    env=CHILD_ENV,
                )
                if done.returncode == 0:
                    break
                assert done.returncode == 2, done.stderr
                assert "is in use by another test or eval" in done.stderr.strip().splitlines()[-1], (
                    done.stderr
                )
            test_id, scores = _rmse_by_stem(folder)
            tests[test_id] = scores
    finally:
        tests_done.set()
        racer.join()
    scored = [json.loads(out.read_text()) for code, _, out in evals if code == 0]
    refused = [err for code, err, _ in evals if code != 0]
    assert len(tests) == 7 and len(scored) >= 10, (len(tests), len(scored))
    for err in refused:
        assert err.startswith(f"results folder {folder} is in use by another test or eval (pid "), err
    for document in scored:
        expected = tests[document["test_id"]]
        got = {stem: scores["rmse"] for stem, scores in document["per_image"].items()}
        assert got.keys() == expected.keys()
        assert all(abs(got[stem] - expected[stem]) < 1e-6 for stem in got), (got, expected)
