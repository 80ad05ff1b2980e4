"""End to end on real facades: train → test without architecture flags, exact resume, user errors."""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.metrics import structural_similarity

from pix2pix_ilm.cli import main
from pix2pix_ilm.training.checkpoint import load_checkpoint, save_checkpoint
from tests.faults import start_paused_training, wait_for_file

NET = [
    "--netG",
    "unet_64",
    "--ngf",
    "8",
    "--ndf",
    "8",
    "--load-size",
    "72",
    "--crop-size",
    "64",
    "--direction",
    "BtoA",
]
TINY = [*NET, "--no-display", "--no-progress", "--print-freq", "1"]


@pytest.fixture(scope="module")
def small_facades(facades_dir: Path, tmp_path_factory) -> Path:
    """Four train and three test facades copied to a temporary data root."""
    root = tmp_path_factory.mktemp("facades")
    for phase, names in (("train", ["1", "2", "3", "4"]), ("test", ["1", "2", "3"])):
        (root / phase).mkdir()
        for n in names:
            shutil.copy(facades_dir / phase / f"{n}.jpg", root / phase / f"{n}.jpg")
    return root


def _train_args(data: Path, ckpt: Path, name: str, *extra: str) -> list[str]:
    return ["train", "--dataroot", str(data), "--name", name, "--checkpoints-dir", str(ckpt), *extra]


def _train(data: Path, ckpt: Path, name: str, *extra: str) -> int:
    return main(_train_args(data, ckpt, name, *TINY, *extra))


def _test_run(ckpt: Path, data: Path, results: Path, *extra: str) -> int:
    """``test`` of run ``ilm``: no architecture flags."""
    args = ["--checkpoints-dir", str(ckpt), "--dataroot", str(data), "--results-dir", str(results), *extra]
    return main(["test", "--name", "ilm", *args])


def _resume(data: Path, ckpt: Path, name: str, *extra: str) -> int:
    """``train --continue`` with no architecture flags: the run's config.json must supply them."""
    return main(_train_args(data, ckpt, name, "--continue", *extra))


def test_train_then_test_without_architecture_flags(small_facades, tmp_path):
    ckpt = tmp_path / "ckpt"
    code = _train(
        small_facades,
        ckpt,
        "ilm",
        "--n-epochs",
        "1",
        "--n-epochs-decay",
        "1",
        "--netG-norm",
        "ilm_in",
        "--netD-norm",
        "ilm_in",
    )
    assert code == 0
    run = ckpt / "ilm"
    saved = json.loads((run / "config.json").read_text())
    assert saved["config"]["netG_norm"] == "ilm_in" and saved["environment"]["torch"] == torch.__version__
    assert {"latest.pt", "epoch_2.pt", "loss_log.jsonl"} <= {p.name for p in run.iterdir()}
    log = [json.loads(line) for line in (run / "loss_log.jsonl").read_text().splitlines()]
    assert [e["iteration"] for e in log] == list(range(1, 9))
    assert {"G_GAN", "G_L1", "D_real", "D_fake"} <= set(log[0])
    html = (run / "web" / "index.html").read_text()
    assert "epoch 2" in html and "epoch002_fake_B.png" in html

    results = tmp_path / "results"
    assert _test_run(ckpt, small_facades, results) == 0
    out = results / "ilm" / "test_latest"
    images = sorted(p.name for p in (out / "images").iterdir())
    assert len(images) == 9
    for stem in ("1", "2", "3"):
        for label in ("real_A", "fake_B", "real_B"):
            with Image.open(out / "images" / f"{stem}_{label}.png") as img:
                assert img.size == (64, 64) and img.mode == "RGB"
    index = (out / "index.html").read_text()
    assert all(f"images/{name}" in index for name in images)
    assert main(["eval", "--results-dir", str(out), "--metrics", "rmse,ssim,psnr,mae"]) == 0
    scores = json.loads((out / "metrics.json").read_text())
    assert scores["n"] == 3 and set(scores["per_image"]) == {"1", "2", "3"}
    # The scores of the written images, computed here: RMSE, MAE and PSNR on 8-bit RGB, SSIM by scikit-image.
    expected = {"rmse": [], "mae": [], "psnr": [], "ssim": []}
    for stem in ("1", "2", "3"):
        with (
            Image.open(out / "images" / f"{stem}_fake_B.png") as f,
            Image.open(out / "images" / f"{stem}_real_B.png") as r,
        ):
            fake, real = np.asarray(f, dtype=np.float64), np.asarray(r, dtype=np.float64)
        mse = np.mean((fake - real) ** 2)
        expected["rmse"].append(np.sqrt(mse))
        expected["mae"].append(np.mean(np.abs(fake - real)))
        expected["psnr"].append(10 * np.log10(255**2 / mse))
        expected["ssim"].append(structural_similarity(fake, real, channel_axis=2, data_range=255))
    for metric, values in expected.items():
        assert scores["mean"][metric] == pytest.approx(np.mean(values), rel=1e-6), metric

    # An older epoch by number, and --single on a folder of plain images.
    single = tmp_path / "single" / "test"
    single.mkdir(parents=True)
    with Image.open(small_facades / "test" / "1.jpg") as img:
        img.crop((256, 0, 512, 256)).save(single / "label map.png")
    assert _test_run(ckpt, single.parent, results, "--single", "--epoch", "2") == 0
    assert sorted(p.name for p in (results / "ilm" / "test_2_single" / "images").iterdir()) == [
        "label map_fake_B.png"
    ]


def test_train_mode_dropout_is_seeded_and_differs_from_the_deterministic_test(small_facades, tmp_path):
    """unet_64 has one dropout layer: ``test`` (eval mode) gives the same pixels every time; with
    --train-mode-dropout the outputs differ from those, repeat with the same --seed and change with another."""
    ckpt = tmp_path / "ckpt"
    assert _train(small_facades, ckpt, "ilm", "--n-epochs", "1", "--n-epochs-decay", "0") == 0

    def fakes(name: str, *extra: str) -> np.ndarray:
        assert _test_run(ckpt, small_facades, tmp_path / name, *extra) == 0
        images = sorted((tmp_path / name / "ilm" / "test_latest" / "images").glob("*_fake_B.png"))
        assert len(images) == 3
        return np.stack([np.asarray(Image.open(path), dtype=int) for path in images])

    deterministic = fakes("eval")
    assert np.array_equal(fakes("eval_again", "--seed", "5"), deterministic)  # no seed enters eval mode
    seeded = fakes("dropout", "--train-mode-dropout", "--seed", "1")
    assert np.array_equal(fakes("dropout_again", "--train-mode-dropout", "--seed", "1"), seeded)
    other = fakes("dropout_other", "--train-mode-dropout", "--seed", "2")
    for a, b in ((seeded, deterministic), (other, seeded)):
        assert np.abs(a - b).mean() > 0.5  # dropout changes the whole output, not a pixel or two


def _weights(path: Path) -> dict[str, torch.Tensor]:
    state = load_checkpoint(path)
    return {
        **{f"G.{k}": v for k, v in state["generator"].items()},
        **{f"D.{k}": v for k, v in state["discriminator"].items()},
    }


@pytest.mark.parametrize(
    ("norms", "workers"),
    [(("ilm_in", "ilm_in"), "0"), (("batch", "instance"), "0"), (("ilm_in", "ilm_in"), "2")],
)
def test_resume_is_exact(small_facades, tmp_path, norms, workers):
    """Also with data-loading workers (kept across epochs) in the straight run and after the resume: the same
    batches as decoded in the training process."""
    ckpt = tmp_path / "ckpt"
    common = ["--netG-norm", norms[0], "--netD-norm", norms[1], "--batch-size", "2", "--seed", "3"]
    common += ["--lr-schedule", "delayed"]  # the schedule under which an extended run keeps its past rates
    straight = ["--n-epochs", "1", "--n-epochs-decay", "1", "--num-workers", workers, *common]
    assert _train(small_facades, ckpt, "straight", *straight) == 0
    # 1 epoch, then --continue with the decay epoch added: no architecture flags needed to resume.
    assert _train(small_facades, ckpt, "resumed", "--n-epochs", "1", "--n-epochs-decay", "0", *common) == 0
    typed = ["--n-epochs-decay", "1", "--num-workers", workers, "--no-display", "--no-progress"]
    assert _resume(small_facades, ckpt, "resumed", *typed) == 0
    straight, resumed = _weights(ckpt / "straight" / "latest.pt"), _weights(ckpt / "resumed" / "latest.pt")
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    assert load_checkpoint(ckpt / "resumed" / "latest.pt")["counters"] == {
        "epoch": 3,
        "batches_done": 0,
        "iteration": 4,
    }
    log = [
        json.loads(line)["iteration"]
        for line in (ckpt / "resumed" / "loss_log.jsonl").read_text().splitlines()
    ]
    assert log == [1, 2, 3, 4]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_resume_after_kill_is_exact(small_facades, tmp_path, sig):
    """Killed mid-epoch, --continue ends with the straight run's weights. The child holds still after logging
    iteration 2 (before saving it), so the signal lands there on any machine."""
    ckpt = tmp_path / "ckpt"
    common = ["--n-epochs", "2", "--n-epochs-decay", "0", "--netG-norm", "ilm_in", "--save-latest-freq", "1"]
    assert _train(small_facades, ckpt, "straight", *common) == 0
    flag = tmp_path / "pause"
    proc = start_paused_training(_train_args(small_facades, ckpt, "killed", *TINY, *common), 2, flag)
    wait_for_file(flag.with_suffix(".paused"), proc)
    proc.send_signal(sig)
    if sig == signal.SIGTERM:  # taken by the stop handler: the step is finished, saved, and the run exits
        wait_for_file(flag.with_suffix(".signalled"), proc)
        flag.with_suffix(".go").touch()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == (-signal.SIGKILL if sig == signal.SIGKILL else 128 + signal.SIGTERM), err
    done = load_checkpoint(ckpt / "killed" / "latest.pt")["counters"]["iteration"]
    assert done == (1 if sig == signal.SIGKILL else 2)  # SIGKILL: iteration 2 was never saved
    assert _resume(small_facades, ckpt, "killed", "--no-progress") == 0
    straight, resumed = _weights(ckpt / "straight" / "latest.pt"), _weights(ckpt / "killed" / "latest.pt")
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key


def _train_with_display(data: Path, ckpt: Path, name: str, port: int, *extra: str) -> int:
    """One epoch of the tiny model with visdom previews on ``port``."""
    display = ["--print-freq", "1", "--no-progress", "--display-port", str(port)]
    return main(
        _train_args(data, ckpt, name, *NET, *display, "--n-epochs", "1", "--n-epochs-decay", "0", *extra)
    )


def test_live_previews_reach_a_real_visdom_server(small_facades, tmp_path):
    import visdom

    from pix2pix_ilm.viz.display import VisdomDisplay
    from tests.helpers import free_port, start_visdom_server, stop_visdom_server

    port = free_port()
    server = start_visdom_server(port, env_path=str(tmp_path / "visdom"))
    try:
        code = _train_with_display(
            small_facades, tmp_path / "ckpt", "live", port, "--display-freq", "2", "--display-env", "live_env"
        )
        assert code == 0
        client = visdom.Visdom(port=port, use_incoming_socket=False, raise_exceptions=True)
        windows = json.loads(client.get_window_data(win=None, env="live_env"))
    finally:
        stop_visdom_server(server)
    assert windows[VisdomDisplay.IMAGE_WINDOW]["type"] == "image"
    assert "real_A | fake_B | real_B" in windows[VisdomDisplay.IMAGE_WINDOW]["title"]
    lines = {
        trace["name"]: trace["x"]
        for window in (VisdomDisplay.LOSS_WINDOW, VisdomDisplay.L1_WINDOW)
        for trace in windows[window]["content"]["data"]
    }
    assert set(lines) == {"G_GAN", "G_L1", "D_real", "D_fake"}
    assert lines["G_L1"] == [0.5, 1.0]  # iterations 2 and 4 of a 4-image epoch


def test_training_continues_without_a_visdom_server(small_facades, tmp_path):
    from pix2pix_ilm.viz.display import VisdomUnavailableWarning
    from tests.helpers import free_port

    with pytest.warns(VisdomUnavailableWarning, match="pix2pix-ilm visdom"):
        code = _train_with_display(
            small_facades, tmp_path / "ckpt", "dark", free_port(), "--display-freq", "1"
        )
    assert code == 0
    assert load_checkpoint(tmp_path / "ckpt" / "dark" / "latest.pt")["counters"]["iteration"] == 4


def test_user_errors_are_one_line(small_facades, tmp_path, capsys):
    ckpt = str(tmp_path / "ckpt")

    def error(*args: str) -> str:
        assert main(list(args)) == 2
        err = capsys.readouterr().err.strip()
        assert "Traceback" not in err and len(err.splitlines()) == 1, err
        return err

    assert "not a folder" in error(
        "train", "--dataroot", str(tmp_path / "missing"), "--name", "x", "--checkpoints-dir", ckpt
    )
    empty = tmp_path / "empty"
    (empty / "train").mkdir(parents=True)
    assert "no images in" in error(
        "train", "--dataroot", str(empty), "--name", "x", "--checkpoints-dir", ckpt
    )
    bad = tmp_path / "bad"
    (bad / "train").mkdir(parents=True)
    shutil.copy(small_facades / "train" / "1.jpg", bad / "train" / "1.jpg")
    (bad / "train" / "2.jpg").write_bytes(b"not a jpeg at all")
    msg = error("train", "--dataroot", str(bad), "--name", "x", "--checkpoints-dir", ckpt)
    assert "2.jpg" in msg and "cannot decode" in msg
    (bad / "train" / "2.jpg").unlink()
    Image.new("RGB", (300, 256)).save(bad / "train" / "3.png")
    msg = error("train", "--dataroot", str(bad), "--name", "x", "--checkpoints-dir", ckpt)
    assert "3.png" in msg and "300x256" in msg and "twice its height" in msg
    assert "unknown generator" in error(
        "train", "--dataroot", str(small_facades), "--name", "x", "--checkpoints-dir", ckpt, "--netG", "vgg16"
    )
    assert "--crop-size 300 is larger than --load-size 286" in error(
        "train",
        "--dataroot",
        str(small_facades),
        "--name",
        "x",
        "--checkpoints-dir",
        ckpt,
        "--crop-size",
        "300",
    )
    assert "no run at" in error(
        "test", "--name", "nope", "--dataroot", str(small_facades), "--checkpoints-dir", ckpt
    )
    with pytest.raises(SystemExit) as exit_info:  # argparse lists the valid norms
        main(["train", "--dataroot", str(small_facades), "--name", "x", "--netG-norm", "weird"])
    assert exit_info.value.code == 2 and "invalid choice: 'weird'" in capsys.readouterr().err

    # A checkpoint whose stored config does not match config.json, and a refused overwrite.
    assert (
        _train(small_facades, tmp_path / "ckpt", "mismatch", "--n-epochs", "1", "--n-epochs-decay", "0") == 0
    )
    state = load_checkpoint(tmp_path / "ckpt" / "mismatch" / "epoch_1.pt")
    state["config"]["netG_norm"] = "ilm_in"
    save_checkpoint(state, tmp_path / "ckpt" / "mismatch" / "epoch_1.pt")
    msg = error(
        "test",
        "--name",
        "mismatch",
        "--dataroot",
        str(small_facades),
        "--checkpoints-dir",
        ckpt,
        "--epoch",
        "1",
        "--results-dir",
        str(tmp_path / "res"),
    )
    assert "epoch_1.pt does not match" in msg and "netG_norm: 'instance' != 'ilm_in'" in msg
    assert "already holds a run" in error(
        "train", "--dataroot", str(small_facades), "--name", "mismatch", "--checkpoints-dir", ckpt
    )


def test_resume_from_a_checkpoint_taken_right_before_the_epoch_end(small_facades, tmp_path):
    """A kill between the last step's save and the epoch-end save leaves an epoch with no batches left."""
    ckpt = tmp_path / "ckpt"
    common = [
        "--n-epochs-decay",
        "0",
        "--netG-norm",
        "ilm_in",
        "--batch-size",
        "2",
        "--lr-schedule",
        "delayed",
    ]
    assert _train(small_facades, ckpt, "straight", "--n-epochs", "2", *common) == 0
    assert _train(small_facades, ckpt, "edge", "--n-epochs", "1", *common) == 0
    state = load_checkpoint(ckpt / "edge" / "latest.pt")
    assert state["counters"] == {"epoch": 2, "batches_done": 0, "iteration": 2}
    state["counters"] = {"epoch": 1, "batches_done": 2, "iteration": 2}  # what the per-step save wrote
    save_checkpoint(state, ckpt / "edge" / "latest.pt")
    assert _resume(small_facades, ckpt, "edge", "--n-epochs", "2", "--no-progress") == 0
    straight, resumed = _weights(ckpt / "straight" / "latest.pt"), _weights(ckpt / "edge" / "latest.pt")
    assert all(torch.equal(straight[key], resumed[key]) for key in straight)


class _HostReadProbe:
    """A loss as the loop sees it, recording at which step the loop read its value back to the host."""

    def __init__(self, value: torch.Tensor, step: int, reads: set[int]) -> None:
        self.value, self.step, self.reads = value, step, reads

    def __float__(self) -> float:
        self.reads.add(self.step)
        return float(self.value)


def test_losses_are_read_back_only_when_logged(small_facades, tmp_path, monkeypatch):
    """Reading a loss waits for the device; the loop does it only for a log line (the first step, every
    --print-freq steps and at each epoch's end), not at every step."""
    from pix2pix_ilm.models.pix2pix import Pix2PixModel

    reads: set[int] = set()
    steps = iter(range(1, 1000))
    real_step = Pix2PixModel.optimize_parameters

    def probed_step(self, real_a, real_b):
        step = next(steps)
        return {k: _HostReadProbe(v, step, reads) for k, v in real_step(self, real_a, real_b).items()}

    monkeypatch.setattr(Pix2PixModel, "optimize_parameters", probed_step)
    assert (
        _train(
            small_facades,
            tmp_path / "ckpt",
            "sync",
            "--print-freq",
            "3",
            "--n-epochs",
            "2",
            "--n-epochs-decay",
            "0",
        )
        == 0
    )
    logged = [
        json.loads(line)["iteration"]
        for line in (tmp_path / "ckpt/sync/loss_log.jsonl").read_text().splitlines()
    ]
    assert logged == [1, 3, 4, 6, 8]  # 4 images: the first, every 3rd step and each epoch's last
    assert reads == set(logged)


def test_unlogged_steps_never_read_a_tensor_back(small_facades, tmp_path, monkeypatch):
    """The loop's work per step (the step, the reporter, the checkpoint and stop checks) reads no tensor value
    back to the host except at a logged step: on CUDA every such read waits for the queued kernels. Data
    loading (host tensors only) is outside the watched calls."""
    from pix2pix_ilm.models.pix2pix import Pix2PixModel
    from pix2pix_ilm.training.reporting import Reporter
    from pix2pix_ilm.training.state import CheckpointSaver
    from pix2pix_ilm.training.stopping import StopRequest
    from tests.models.test_pix2pix import HOST_READS

    step = {"number": 0, "watched": False}  # the step in progress; whether a watched call runs
    reads: set[int] = set()

    def read_counted(method):
        def counted(self, *args, **kwargs):
            if step["watched"]:
                reads.add(step["number"])
            return method(self, *args, **kwargs)

        return counted

    def watched(method, starts_step: bool = False):
        def run(self, *args, **kwargs):
            step["number"] += starts_step
            step["watched"] = True
            try:
                return method(self, *args, **kwargs)
            finally:
                step["watched"] = False

        return run

    for name in HOST_READS:
        monkeypatch.setattr(torch.Tensor, name, read_counted(getattr(torch.Tensor, name)))
    monkeypatch.setattr(Pix2PixModel, "optimize_parameters", watched(Pix2PixModel.optimize_parameters, True))
    for cls, name in ((Reporter, "step"), (CheckpointSaver, "step"), (StopRequest, "requested")):
        monkeypatch.setattr(cls, name, watched(getattr(cls, name)))
    extra = ["--print-freq", "3", "--n-epochs", "2", "--n-epochs-decay", "0", "--precision", "bf16"]
    assert _train(small_facades, tmp_path / "ckpt", "sync", *extra, "--channels-last") == 0
    monkeypatch.undo()
    assert step["number"] == 8
    assert reads == {1, 3, 4, 6, 8}  # the logged steps: the first, every 3rd and each epoch's last (4 images)
