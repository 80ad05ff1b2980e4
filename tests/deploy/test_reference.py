"""Checkpoints of the pix2pix reference code: a state dict laid out as its ``UnetSkipConnectionBlock`` nesting
and ``NLayerDiscriminator`` name their modules (built here from that rule), imported, checked against an
independent functional forward, then tested, exported and trained on; mismatches refused with the keys."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pix2pix_ilm.cli import main
from pix2pix_ilm.training.inference import load_generator_for_inference
from tests.faults import cli_error

pytestmark = pytest.mark.usefixtures("one_thread")
NGF = NDF = 4
DOWNS = 5  # unet_32


def reference_unet(ngf: int, downs: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """The reference's unet state dict with instance norm (no affine, so only convolutions, all with bias):
    ``model.model.`` is the outermost block's Sequential (0 down conv, 1 submodule, 3 up conv); a middle block's
    is (1 down conv, 2 norm, 3 submodule, 5 up conv, 6 norm), the innermost's (1 down conv, 3 up conv, 4 norm)."""
    gen = torch.Generator().manual_seed(seed)
    widths = [ngf, ngf * 2, ngf * 4] + [ngf * 8] * (downs - 3)  # inner_nc per level, outermost first
    state, prefix = {}, "model.model."

    def conv(name: str, shape: tuple[int, ...], transposed: bool) -> None:
        state[name + ".weight"] = torch.randn(shape, generator=gen) * 0.1
        state[name + ".bias"] = torch.randn(shape[1] if transposed else shape[0], generator=gen) * 0.1

    for level, inner in enumerate(widths):
        outer = 3 if level == 0 else widths[level - 1]
        last = level == len(widths) - 1
        down, up = (0, 3) if level == 0 else ((1, 3) if last else (1, 5))
        conv(f"{prefix}{down}", (inner, outer, 4, 4), transposed=False)
        conv(f"{prefix}{up}", (inner if last else inner * 2, outer, 4, 4), transposed=True)
        prefix += ("1" if level == 0 else "3") + ".model."
    return state


def reference_forward(state: dict[str, torch.Tensor], x: torch.Tensor, downs: int) -> torch.Tensor:
    """The reference U-Net's eval forward from its state dict alone (instance norm, no dropout in eval)."""

    def block(prefix: str, x: torch.Tensor, level: int) -> torch.Tensor:
        w = lambda i: (state[f"{prefix}{i}.weight"], state[f"{prefix}{i}.bias"])  # noqa: E731
        if level == 0:
            h = F.conv2d(x, *w(0), stride=2, padding=1)
            h = block(prefix + "1.model.", h, 1)
            return torch.tanh(F.conv_transpose2d(F.relu(h), *w(3), stride=2, padding=1))
        h = F.conv2d(F.leaky_relu(x, 0.2), *w(1), stride=2, padding=1)
        if level == downs - 1:
            h = F.instance_norm(F.conv_transpose2d(F.relu(h), *w(3), stride=2, padding=1))
        else:
            h = block(prefix + "3.model.", F.instance_norm(h), level + 1)
            h = F.instance_norm(F.conv_transpose2d(F.relu(h), *w(5), stride=2, padding=1))
        return torch.cat([x, h], 1)

    return block("model.model.", x, 0)


def reference_patchgan(ndf: int, seed: int = 1) -> dict[str, torch.Tensor]:
    """The reference's 3-layer PatchGAN with instance norm: convs at model.0, 2, 5, 8 and 11 (norms have no
    parameters), plus the running statistics older PyTorch saved for InstanceNorm2d."""
    gen = torch.Generator().manual_seed(seed)
    shapes = {0: (ndf, 6), 2: (ndf * 2, ndf), 5: (ndf * 4, ndf * 2), 8: (ndf * 8, ndf * 4), 11: (1, ndf * 8)}
    state = {}
    for index, (out_ch, in_ch) in shapes.items():
        state[f"model.{index}.weight"] = torch.randn(out_ch, in_ch, 4, 4, generator=gen) * 0.1
        state[f"model.{index}.bias"] = torch.randn(out_ch, generator=gen) * 0.1
    state["model.3.running_mean"], state["model.3.running_var"] = torch.zeros(ndf * 2), torch.ones(ndf * 2)
    return state


IMPORT = [
    "--netG",
    "unet_32",
    "--ngf",
    str(NGF),
    "--ndf",
    str(NDF),
    "--norm",
    "instance",
    "--direction",
    "BtoA",
]
IMPORT += ["--load-size", "36", "--crop-size", "32"]


def test_a_reference_unet_imports_tests_exports_and_trains_on(runs, tmp_path, capsys):
    data, _ = runs
    g, d = reference_unet(NGF, DOWNS), reference_patchgan(NDF)
    torch.save(g, tmp_path / "latest_net_G.pth")
    torch.save(d, tmp_path / "latest_net_D.pth")
    ckpt = tmp_path / "ckpt"
    files = ["--G", str(tmp_path / "latest_net_G.pth"), "--D", str(tmp_path / "latest_net_D.pth")]
    assert main(["import", "--name", "ref", "--checkpoints-dir", str(ckpt), *files, *IMPORT]) == 0

    generator, config, _ = load_generator_for_inference(ckpt / "ref", "latest", "cpu")
    assert (config.netG, config.netG_norm, config.netD_norm, config.direction) == (
        "unet_32",
        "instance",
        "instance",
        "BtoA",
    )
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(generator(x), reference_forward(g, x, DOWNS), atol=1e-5, rtol=0)

    results = tmp_path / "results"
    common = ["--name", "ref", "--checkpoints-dir", str(ckpt)]
    assert main(["test", *common, "--dataroot", str(data), "--results-dir", str(results)]) == 0
    assert len(list((results / "ref" / "test_latest" / "images").glob("*_fake_B.png"))) == 2
    assert main(["export", *common, "--format", "torchscript", "--out", str(tmp_path / "ref.pt")]) == 0
    more = [
        "--dataroot",
        str(data),
        "--n-epochs",
        "1",
        "--n-epochs-decay",
        "1",
        "--no-display",
        "--no-progress",
    ]
    assert main(["train", *common, "--continue", *more]) == 0
    state = torch.load(ckpt / "ref" / "latest.pt", weights_only=True)
    assert state["counters"]["epoch"] == 3
    assert not torch.equal(state["discriminator"]["model.0.weight"], d["model.0.weight"])  # D trained on
    assert json.loads((ckpt / "ref" / "config.json").read_text())["config"]["dataroot"] == str(data)


def test_mismatching_reference_files_are_refused_with_the_keys(tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    args = [
        "import",
        "--name",
        "bad",
        "--checkpoints-dir",
        str(ckpt),
        *IMPORT,
        "--G",
        str(tmp_path / "g.pth"),
    ]
    wider = reference_unet(NGF * 2, DOWNS)
    torch.save(wider, tmp_path / "g.pth")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "shapes differ: model.model.0.weight (8, 3, 4, 4) != (4, 3, 4, 4)" in err and "--ngf" in err
    g = reference_unet(NGF, DOWNS)
    g["model.model.9.weight"] = torch.zeros(1)
    del g["model.model.3.bias"]
    torch.save(g, tmp_path / "g.pth")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "unknown keys model.model.9.weight" in err and "missing keys model.model.3.bias" in err
    np.save(tmp_path / "g.pth", np.zeros(3))  # not a state dict at all
    (tmp_path / "g.pth.npy").rename(tmp_path / "g.pth")
    assert main(args) == 2
    assert "g.pth" in capsys.readouterr().err
    assert not (ckpt / "bad").exists()


def test_a_failed_import_leaves_no_run_folder_and_never_an_input_lost(tmp_path, capsys, monkeypatch):
    ckpt = tmp_path / "ckpt"
    args = [
        "import",
        "--name",
        "ref",
        "--checkpoints-dir",
        str(ckpt),
        *IMPORT,
        "--G",
        str(tmp_path / "g.pth"),
    ]
    g = reference_unet(NGF, DOWNS)
    g["model.model.0.weight"][0, 0, 0, 0] = float("nan")  # the checkpoint of a diverged run
    torch.save(g, tmp_path / "g.pth")
    err = cli_error(capsys, *args)
    assert "g.pth holds NaN or infinite values" in err and "model.model.0.weight" in err
    assert "diverged" not in err and "--lr" not in err and "latest.pt" not in err
    assert not ckpt.exists() or list(ckpt.iterdir()) == []
    # A failure while the run folder is written leaves none (and a retry works).
    torch.save(reference_unet(NGF, DOWNS), tmp_path / "g.pth")
    from pix2pix_ilm.training import state

    def disk_full(self, counters, also=()):
        raise OSError(28, "No space left on device", str(self.config.run_dir / "latest.pt"))

    monkeypatch.setattr(state.CheckpointSaver, "save_latest", disk_full)
    assert "No space left on device" in cli_error(capsys, *args)
    assert not (ckpt / "ref").exists()
    monkeypatch.undo()
    assert main(args) == 0
    capsys.readouterr()
    # --overwrite replaces the run only when the new one is complete, and never the files it imports from.
    latest = (ckpt / "ref" / "latest.pt").read_bytes()
    monkeypatch.setattr(state.CheckpointSaver, "save_latest", disk_full)
    cli_error(capsys, *args, "--overwrite")
    assert (ckpt / "ref" / "latest.pt").read_bytes() == latest
    monkeypatch.undo()
    inside = ckpt / "ref" / "g.pth"
    inside.write_bytes((tmp_path / "g.pth").read_bytes())
    args[args.index("--G") + 1] = str(inside)
    assert "holds the input" in cli_error(capsys, *args, "--overwrite")
    assert inside.is_file() and (ckpt / "ref" / "latest.pt").read_bytes() == latest
    assert sorted(p.name for p in ckpt.iterdir()) == ["ref"]  # no temp or set-aside folder left
