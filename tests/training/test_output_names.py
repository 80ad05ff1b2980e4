"""File and run names: odd characters pass through train, test, HTML and eval unchanged; outputs stay inside."""

from __future__ import annotations

import json
import os

import pytest

from pix2pix_ilm.cli import main
from tests.faults import (
    args_for_test,
    cli_error,
    train_args,
    write_folder,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def inside_tmp_path(tmp_path):
    """Run the test with ``tmp_path`` as working directory (where an injected shell command would write)."""
    previous = os.getcwd()
    os.chdir(tmp_path)
    try:
        yield tmp_path
    finally:
        os.chdir(previous)


def test_file_names_with_spaces_unicode_shell_and_html_characters(pairs, inside_tmp_path):
    """Names pass through train, test, the HTML page and eval unchanged; nothing is run; the page is escaped."""
    tmp_path = inside_tmp_path
    names = [
        "with space",
        "façade_日本語_ü",
        "$(touch PWNED); `touch PWNED2` & | > out",
        "-rf --help",
        "<script>alert('x')",
        'quote"double',
        "100%20 #hash?q",
    ]
    files = {
        f"{stem}.jpg": pairs[key]
        for stem, key in zip(
            names, ["train1", "train2", "train3", "train4", "test1", "test2", "train1"], strict=True
        )
    }
    root = write_folder(tmp_path / "data", "train", files)
    write_folder(root, "test", files)
    assert main(train_args(root, tmp_path / "ckpt", "names")) == 0
    results = tmp_path / "results"
    code = main(
        [
            "test",
            "--name",
            "names",
            "--dataroot",
            str(root),
            "--checkpoints-dir",
            str(tmp_path / "ckpt"),
            "--results-dir",
            str(results),
        ]
    )
    assert code == 0
    out = results / "names" / "test_latest"
    written = {p.name for p in (out / "images").iterdir()}
    assert written == {f"{stem}_{label}.png" for stem in names for label in ("real_A", "fake_B", "real_B")}
    page = (out / "index.html").read_text()
    assert "<script>" not in page and "alert('x')" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)" in page
    assert 'quote"double' not in page and "quote&quot;double" in page
    assert 'src="images/%3Cscript%3Ealert%28%27x%27%29_fake_B.png"' in page
    assert main(["eval", "--results-dir", str(out), "--metrics", "rmse"]) == 0
    assert set(json.loads((out / "metrics.json").read_text())["per_image"]) == set(names)
    assert not list(tmp_path.rglob("PWNED*")) and not (tmp_path / "out").exists()


# -- outputs -------------------------------------------------------------------------------------------
def test_output_names_cannot_leave_the_results_folder(trained, tmp_path, capsys):
    data, ckpt = trained
    results = tmp_path / "box" / "results"
    for extra in (
        ["--name", "../base"],
        ["--name", "base/../../x"],
        ["--phase", "../../x"],
        ["--phase", ".."],
    ):
        args = args_for_test(data, ckpt, results, *extra)
        msg = cli_error(capsys, *args)
        assert "must be a plain folder name" in msg, msg
    assert not (tmp_path / "box").exists()
