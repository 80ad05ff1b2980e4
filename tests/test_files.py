"""The output policy of every command: atomic writes (with the mode any other file of the process gets, 0o666
less the umask), outputs that never replace an input or, unasked, an existing file, and the output place
checked before any work; a read-only folder refused in one line by every command, as an unprivileged user."""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from pix2pix_ilm.cli import main
from pix2pix_ilm.errors import UsageError
from pix2pix_ilm.files import (
    atomic_write_bytes,
    atomic_write_text,
    check_output_files,
    check_output_folder,
    replacing_folder,
)
from pix2pix_ilm.training.checkpoint import load_checkpoint
from tests.faults import NET, QUICK, args_for_test, wait_for_file
from tests.helpers import fill, small_disk, unavailable

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_respect_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        atomic_write_bytes(tmp_path / "a.bin", b"x")
        atomic_write_text(tmp_path / "a.bin", "replaced")  # replacing keeps the rule
        atomic_write_text(tmp_path / "sub" / "b.txt", "y")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.bin").stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "sub" / "b.txt").stat().st_mode) == mode
    assert (tmp_path / "a.bin").read_text() == "replaced"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "sub"]  # no temp file left


# -- the output policy ------------------------------------------------------------------------------------
def test_an_output_file_never_replaces_an_input_and_an_existing_file_only_with_overwrite(tmp_path):
    source, existing = tmp_path / "in.png", tmp_path / "old.png"
    source.write_bytes(b"input")
    existing.write_bytes(b"old")
    (tmp_path / "folder").mkdir()
    for overwrite in (False, True):  # an input, however it is spelled, is never an output
        for spelled in (source, tmp_path / "folder" / ".." / "in.png"):
            with pytest.raises(UsageError, match="is the input"):
                check_output_files([spelled], "--out", [source], overwrite=overwrite)
    link = tmp_path / "link.png"
    link.symlink_to(source)
    with pytest.raises(UsageError, match="is the input"):
        check_output_files([link], "--out", [source], overwrite=True)
    with pytest.raises(UsageError, match="old.png exists; use --overwrite"):
        check_output_files([existing], "--out")
    assert check_output_files([existing], "--out", overwrite=True) == [existing]
    with pytest.raises(UsageError, match="is a folder"):
        check_output_files([tmp_path / "folder"], "--out", overwrite=True)
    with pytest.raises(UsageError, match=r"lies below .*old.png, which is a file"):
        check_output_files([existing / "sub" / "x.onnx"], "--out")
    assert source.read_bytes() == b"input" and existing.read_bytes() == b"old"


def test_an_output_folder_is_a_folder_and_never_an_input(tmp_path):
    (tmp_path / "file").write_text("x")
    (tmp_path / "data" / "train").mkdir(parents=True)
    with pytest.raises(UsageError, match="--out .*file is a file, not a folder"):
        check_output_folder(tmp_path / "file", "--out")
    with pytest.raises(UsageError, match=r"lies below .*file, which is a file"):
        check_output_folder(tmp_path / "file" / "a" / "b", "--out")
    with pytest.raises(UsageError, match="is the input"):
        check_output_folder(tmp_path / "data" / "train" / ".", "--out", [tmp_path / "data" / "train"])
    # A folder that is replaced as a whole must not even hold an input.
    assert check_output_folder(tmp_path / "data", "--out", [tmp_path / "data" / "train"])
    with pytest.raises(UsageError, match="holds the input"):
        check_output_folder(tmp_path / "data", "--out", [tmp_path / "data" / "train"], replaced=True)
    assert check_output_folder(tmp_path / "new" / "deeper", "--out") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()  # checking makes nothing


@pytest.mark.parametrize("in_place", [False, True])
def test_a_replaced_folder_is_complete_or_untouched(tmp_path, in_place):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), replacing_folder(out, in_place=in_place) as new:
        (new / "half.txt").write_text("half")
        raise RuntimeError("fails half-way")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert sorted(p.name for p in out.iterdir()) == ["old.txt"]
    with replacing_folder(out, in_place=in_place) as new:
        (new / "new.txt").write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]
    with pytest.raises(RuntimeError), replacing_folder(tmp_path / "fresh", in_place=in_place):
        raise RuntimeError("fails")
    assert not (tmp_path / "fresh").exists()


def test_a_write_the_disk_refuses_keeps_the_old_file_and_names_it(tmp_path):
    with small_disk(tmp_path / "disk") as disk:
        path = disk / "model.onnx"
        atomic_write_bytes(path, b"previous")
        fill(disk)
        with pytest.raises(OSError) as refused:
            atomic_write_bytes(path, b"new" * 2**16)
        assert refused.value.errno == errno.ENOSPC and refused.value.filename == str(path)
        assert path.read_bytes() == b"previous" and sorted(p.name for p in disk.iterdir()) == [
            "filler",
            "model.onnx",
        ]


_EVERY_COMMAND = """
import contextlib, io, json, sys
from pix2pix_ilm.cli import main
results = {}
for name, argv in json.loads(sys.argv[1]).items():
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(argv)
    results[name] = [code, err.getvalue()]
print(json.dumps(results))
"""


def _as_nobody(base: Path, commands: dict[str, list[str]]) -> dict[str, list]:
    """Run each command line in one child process without the right to ignore permissions, importing the package
    from ``base/src``; {name: [exit code, stderr]}. Root (as in CI) runs it as user nobody, or, where nobody
    cannot read the interpreter, as root without capabilities (owner permissions then apply to root too)."""
    prefixes: list[list[str]] = [[]]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            unavailable("setpriv (util-linux) is needed to test read-only folders as an unprivileged user")
        prefixes = [
            [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"],
            [setpriv, "--inh-caps=-all", "--bounding-set=-all"],
        ]
    home = base / "home"  # the child's own, for matplotlib's cache
    home.mkdir(mode=0o777)
    home.chmod(0o777)
    env = {**os.environ, "PYTHONPATH": str(base / "src"), "HOME": str(home), "OMP_NUM_THREADS": "1"}
    failures = []
    for prefix in prefixes:
        done = subprocess.run(
            [*prefix, sys.executable, "-c", _EVERY_COMMAND, json.dumps(commands)],
            capture_output=True,
            text=True,
            cwd=base,
            env=env,
            timeout=600,
        )
        if done.returncode == 0:
            return json.loads(done.stdout.strip().splitlines()[-1])
        failures.append(
            f"{' '.join(prefix[1:]) or 'as this user'}: exit {done.returncode}, {done.stderr[-300:]}"
        )
    unavailable(f"cannot run the package without the right to ignore permissions: {'; '.join(failures)}")
    raise AssertionError  # unavailable() does not return


def test_every_command_refuses_a_read_only_folder_in_one_line(trained):
    data, ckpt = trained
    base = Path(tempfile.mkdtemp(prefix="pix2pix-ilm-read-only-"))  # pytest's own folders are private to root
    try:
        shutil.copytree(PROJECT_ROOT / "pix2pix_ilm", base / "src" / "pix2pix_ilm")
        shutil.copytree(data, base / "data")
        shutil.copytree(ckpt, base / "ckpt")
        torch.save(load_checkpoint(base / "ckpt" / "base" / "latest.pt")["generator"], base / "g.pth")
        from pix2pix_ilm.cli import main

        assert main(args_for_test(base / "data", base / "ckpt", base / "results", "--no-progress")) == 0
        read_only = base / "read-only"
        read_only.mkdir()
        for path in [base, *base.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        read_only.chmod(0o555)
        run = ["--name", "base", "--checkpoints-dir", str(base / "ckpt")]
        commands = {
            "train": ["train", "--dataroot", str(base / "data"), "--name", "new", *QUICK],
            "test": args_for_test(base / "data", base / "ckpt", read_only / "results"),
            "translate": ["translate", *run, str(base / "data" / "test"), "--out", str(read_only / "out")],
            "export": ["export", *run, "--format", "torchscript", "--out", str(read_only / "g.pt")],
            "import": ["import", "--name", "new", "--G", str(base / "g.pth"), *NET[:4], "--ndf", "4"],
            "eval": ["eval", "--results-dir", str(base / "results" / "base" / "test_latest")],
            "table6": [
                "table6",
                "--dry-run",
                "--dataroot",
                str(base / "data"),
                "--out",
                str(read_only / "t6"),
            ],
            "bench": ["bench", "--json", str(read_only / "bench.json")],
        }
        commands["train"] += ["--checkpoints-dir", str(read_only)]
        commands["import"] += ["--checkpoints-dir", str(read_only / "ckpt")]
        commands["eval"] += ["--metrics", "rmse", "--json", str(read_only / "scores.json")]
        secret = base / "secret.png"  # an input the child may not read
        shutil.copy(next((base / "data" / "test").iterdir()), secret)
        secret.chmod(0o200)
        commands["unreadable"] = ["translate", *run, str(secret), "--out", str(base / "home" / "out")]
        # A folder whose page would get the scores, not writable either.
        scored = base / "results" / "base" / "test_latest"
        scored.chmod(0o555)
        commands["page"] = ["eval", "--results-dir", str(scored), "--metrics", "rmse"]
        commands["page"] += ["--json", str(base / "home" / "scores.json")]
        results = _as_nobody(base, commands)
        code, err = results.pop("page")
        assert code == 2 and f"--results-dir {scored}: {scored} is not writable" in err, err
        assert not (base / "home" / "scores.json").exists()
        code, err = results.pop("unreadable")
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert f"cannot read image {secret}: permission denied" in err, err
        for name, (code, err) in results.items():
            assert code == 2 and len(err.strip().splitlines()) == 1, (name, code, err)
            assert "not writable" in err and str(read_only) in err and "Traceback" not in err, (name, err)
        assert list(read_only.iterdir()) == []
    finally:
        for path in [base, *base.rglob("*")]:
            if path.is_dir():
                path.chmod(0o755)
        shutil.rmtree(base)


def test_bench_checks_its_report_file_before_measuring(tmp_path, capsys, monkeypatch):
    from pix2pix_ilm.bench import run
    from tests.faults import cli_error

    monkeypatch.setattr(run, "resolve_device", lambda name: pytest.fail("measured before the check"))
    report = tmp_path / "bench.json"
    report.write_text("mine")
    assert "bench.json exists; use --overwrite" in cli_error(capsys, "bench", "--json", str(report))
    assert "is a folder" in cli_error(capsys, "bench", "--json", str(tmp_path), "--overwrite")
    assert "which is a file" in cli_error(capsys, "bench", "--json", str(report / "b.json"))
    assert report.read_text() == "mine"


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_full_disk_ends_every_command_in_one_line_and_keeps_what_was_there(trained, tmp_path, capsys):
    """On a real full disk (a tmpfs): test, eval, eval --json, export over an existing file (ONNX and
    TorchScript) and translate each end in one line naming the file and the space left, exit 2; the results,
    scores and models written before are untouched, no staging or temp file is left, and once there is room
    again eval writes its plot and scores."""
    from tests.faults import cli_error

    data, ckpt = trained
    run = ["--name", "base", "--checkpoints-dir", str(ckpt)]
    with small_disk(tmp_path / "disk") as disk:
        test = args_for_test(data, ckpt, disk / "results", "--no-progress")
        folder = disk / "results" / "base" / "test_latest"
        evaluate = ["eval", "--results-dir", str(folder), "--metrics", "rmse,ssim"]
        models = {"onnx": disk / "g.onnx", "torchscript": disk / "g.pt"}
        assert main(test) == 0 and main(evaluate) == 0
        for fmt, model in models.items():
            assert main(["export", *run, "--format", fmt, "--out", str(model)]) == 0
        before = _files(disk)
        filler = fill(disk)
        commands = [
            test,
            evaluate,
            [*evaluate, "--json", str(disk / "other.json")],
            *(["export", *run, "--format", fmt, "--out", str(m), "--overwrite"] for fmt, m in models.items()),
            ["translate", *run, str(data / "test"), "--out", str(disk / "translated")],
        ]
        for command in commands:
            err = cli_error(capsys, *command)
            assert "No space left on device" in err and "MiB free there" in err, err
            assert str(disk) in err and ".tmp" not in err, err
        assert {k: v for k, v in _files(disk).items() if k != "filler"} == before  # the lock file included
        hidden = [p.name for p in disk.rglob(".*")]  # no staging folder, no temp file: the folder's lock only
        assert hidden == [".test_latest.lock"]
        filler.unlink()
        (folder / "metrics.png").unlink()
        assert main(evaluate) == 0 and (folder / "metrics.png").is_file()


def test_training_on_a_disk_that_fills_up_tries_its_checkpoint_and_keeps_the_last(trained, tmp_path):
    """The disk fills up while the run trains: its page and log stop with a warning each, the run trains on
    to the epoch's end, tries its checkpoint and ends in one line (exit 2); the previous latest.pt is kept."""
    from tests.faults import start_paused_training

    data, ckpt = trained
    with small_disk(tmp_path / "disk", "8m") as disk:
        shutil.copytree(ckpt / "base", disk / "base")
        latest = (disk / "base" / "latest.pt").read_bytes()
        more = ["--checkpoints-dir", str(disk), "--continue", "--n-epochs", "2", "--display-freq", "1"]
        flag = tmp_path / "flag"
        training = start_paused_training(["train", "--dataroot", str(data), "--name", "base", *more], 3, flag)
        wait_for_file(flag.with_suffix(".paused"), training)
        fill(disk)
        flag.with_suffix(".go").touch()
        _, err = training.communicate(timeout=300)
        lines = err.strip().splitlines()
        assert training.returncode == 2 and "Traceback" not in err, err
        assert any(
            "warning: WebPage stopped:" in line and "No space left on device" in line for line in lines
        )
        assert (
            "cannot write checkpoint" in lines[-1]
            and "No space left on device: 0.0 MiB free there" in lines[-1]
        )
        assert "MiB needed" in lines[-1] and "the previous latest.pt, if any, is unchanged" in lines[-1]
        assert (disk / "base" / "latest.pt").read_bytes() == latest
