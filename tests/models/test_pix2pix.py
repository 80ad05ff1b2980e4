"""The pix2pix model's step: --compile under torchrun (also with WGAN-GP); the GPU fast path's flow on CPU."""

from __future__ import annotations

import copy
import dataclasses
import warnings

import pytest
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from pix2pix_ilm.config import TrainConfig
from pix2pix_ilm.models.pix2pix import Pix2PixModel, learning_rate_factor


def test_compile_under_torchrun_and_with_the_gradient_penalty(tmp_path, monkeypatch):
    """--compile under DDP compiles the DDP-wrapped G and D (torch's recommended order) and the frozen D; the
    penalty, which differentiates D twice, goes through D uncompiled. The step equals the plain eager one.

    A process group of one gloo process; torch.compile runs its "aot_eager" backend: the same tracing and
    autograd as the default one (which refuses double backward alike), without generating kernels.
    """
    compiled = []
    real_compile = torch.compile

    def compile_aot_eager(module, **kwargs):
        compiled.append(module)
        return real_compile(module, backend="aot_eager")

    monkeypatch.setattr(torch, "compile", compile_aot_eager)
    config = TrainConfig(
        name="c",
        dataroot="d",
        netG="unet_32",
        ngf=4,
        ndf=4,
        load_size=36,
        crop_size=32,
        no_dropout=True,
        device="cpu",
        gan_mode="wgangp",
        compile=True,
    )
    gen = torch.Generator().manual_seed(0)
    real_a, real_b = (torch.rand(2, 3, 32, 32, generator=gen) * 2 - 1 for _ in range(2))
    torch.manual_seed(1)
    plain = Pix2PixModel(dataclasses.replace(config, compile=False), torch.device("cpu"))
    expected = plain.optimize_parameters(real_a, real_b)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'group'}", rank=0, world_size=1)
    try:
        torch.manual_seed(1)
        model = Pix2PixModel(config, torch.device("cpu"))
        compiled.clear()
        model.wrap_distributed()
        assert [type(m) for m in compiled] == [
            DistributedDataParallel,
            DistributedDataParallel,
            type(model.discriminator),
        ]
        assert compiled[0].module is model.generator and compiled[1].module is model.discriminator
        assert compiled[2] is model.discriminator
        assert [f._orig_mod for f in (model.g_forward, model.d_forward, model.d_frozen_forward)] == compiled
        losses = model.optimize_parameters(real_a, real_b)
    finally:
        dist.destroy_process_group()
    assert losses.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.allclose(losses[key], value, rtol=1e-5, atol=1e-6), key
    for part in ("generator", "discriminator"):
        for key, value in getattr(plain, part).state_dict().items():
            assert torch.allclose(getattr(model, part).state_dict()[key], value, rtol=1e-5, atol=1e-6), key


# -- the CUDA fast path's flow, on CPU -----------------------------------------------------------------
CPU = torch.device("cpu")
#: Tensor methods that copy a value to the host: on CUDA each one waits for every queued kernel.
HOST_READS = ("item", "tolist", "numpy", "cpu", "__float__", "__int__", "__bool__", "__index__")


def _tiny(**options) -> TrainConfig:
    """unet_64 (with dropout) at ngf/ndf 4 on 64² images: the whole step in a few tens of ms on one thread."""
    return TrainConfig(name="c", dataroot="d", netG="unet_64", ngf=4, ndf=4, device="cpu", **options)


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return tuple(torch.rand(2, 3, 64, 64, generator=gen) * 2 - 1 for _ in range(2))


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("norm", ["instance", "ilm_in"])
def test_bf16_channels_last_step_runs_on_cpu(norm):
    """The GPU default path (bf16 autocast + channels_last) end to end: fp32 weights, gradients, Adam state
    and losses; channels-last weights and activations; G's output in bf16; finite losses."""
    model = Pix2PixModel(_tiny(precision="bf16", channels_last=True, netG_norm=norm, netD_norm=norm), CPU)
    losses = model.optimize_parameters(*_batch())
    assert set(losses) == {"G_GAN", "G_L1", "D_real", "D_fake"}
    for name, value in losses.items():
        assert value.dtype == torch.float32 and value.shape == () and torch.isfinite(value), name
    visuals = model.last_visuals
    assert visuals["fake_B"].dtype == torch.bfloat16 and visuals["real_A"].dtype == torch.float32
    for name, tensor in visuals.items():
        assert tensor.shape == (2, 3, 64, 64), name
        assert tensor.is_contiguous(memory_format=torch.channels_last), name
    for net, opt in ((model.generator, model.opt_g), (model.discriminator, model.opt_d)):
        for name, param in net.named_parameters():
            assert param.dtype == torch.float32 and param.grad.dtype == torch.float32, name
            if param.dim() == 4:
                assert param.is_contiguous(memory_format=torch.channels_last), name
        assert all(s["exp_avg"].dtype == torch.float32 for s in opt.state.values())


def test_the_cpu_default_is_the_eager_setting():
    """An unresolved config (auto) becomes fp32 and contiguous on CPU, as before the automatic defaults."""
    model = Pix2PixModel(_tiny(), CPU)
    config = model.config
    assert (config.precision, config.channels_last, config.compile) == ("fp32", False, False)
    weight = model.generator.model.model[0].weight
    assert weight.is_contiguous() and not weight.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize(
    "options",
    [{}, {"precision": "bf16", "channels_last": True}, {"gan_mode": "wgangp"}],
    ids=["default", "bf16+channels_last", "wgangp"],
)
def test_a_step_never_reads_a_value_back_to_the_host(monkeypatch, options):
    """A step only queues device work: no ``.item()``, ``float(t)``, ``if t:``, ``.cpu()`` ... (each would
    make the host wait for the GPU at every step; the loop reads losses at logged steps only)."""
    model = Pix2PixModel(_tiny(**options), CPU)
    real_a, real_b = _batch()
    model.optimize_parameters(real_a, real_b)  # the first step also creates Adam's state
    calls: list[str] = []

    def counting(name: str, method):
        def counted(self, *args, **kwargs):
            calls.append(name)
            return method(self, *args, **kwargs)

        return counted

    for name in HOST_READS:
        monkeypatch.setattr(torch.Tensor, name, counting(name, getattr(torch.Tensor, name)))
    for _ in range(3):
        model.optimize_parameters(real_a, real_b)
    monkeypatch.undo()
    assert calls == []


def test_a_resume_in_another_memory_format_takes_the_same_step():
    """Adam's moments follow their parameters' layout on load: resuming a channels_last run contiguous gives the
    step the channels_last resume gives (to float rounding), not a step on mismatched elements."""
    real_a, real_b = _batch()
    torch.manual_seed(0)
    trained = Pix2PixModel(_tiny(channels_last=True, no_dropout=True))
    for _ in range(3):
        trained.optimize_parameters(real_a, real_b)
    state = trained.state_dict()
    steps = {}
    for channels_last in (True, False):
        model = Pix2PixModel(_tiny(channels_last=channels_last, no_dropout=True))
        model.load_state_dict(copy.deepcopy(state))  # as read from a file: nothing shared with `trained`
        for param in model.generator.parameters():
            assert model.opt_g.state[param]["exp_avg"].stride() == param.stride()
        before = [p.detach().clone() for p in model.generator.parameters()]
        model.optimize_parameters(real_a, real_b)
        steps[channels_last] = torch.cat(
            [(p - b).flatten() for p, b in zip(model.generator.parameters(), before, strict=True)]
        )
    size = steps[True].norm()  # Adam's steps are about lr everywhere, so the norm weighs every element alike
    assert size > 0 and (steps[False] - steps[True]).norm() <= 0.1 * size


def _reference_factors(n_epochs: int, n_epochs_decay: int, epoch_count: int = 1) -> list[float]:
    """The pix2pix code's schedule: a ``LambdaLR`` stepped at the start of every epoch from ``epoch_count``
    (its option for resumed runs) to ``n_epochs + n_epochs_decay``."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda epoch: 1.0 - max(0, epoch + epoch_count - n_epochs) / float(n_epochs_decay + 1)
    )
    factors = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "scheduler.step() before optimizer.step()": as there
        for _ in range(epoch_count, n_epochs + n_epochs_decay + 1):
            scheduler.step()
            factors.append(optimizer.param_groups[0]["lr"])
    return factors


@pytest.mark.parametrize(("n", "d"), [(3, 3), (10, 10), (100, 100), (5, 0)])
def test_the_pix2pix_schedule_is_the_reference_codes_factor_by_factor(n, d):
    ours = [learning_rate_factor(e, n, d, "pix2pix") for e in range(1, n + d + 1)]
    assert ours == pytest.approx(_reference_factors(n, d), abs=1e-12)
    # A resumed run (the reference's --epoch_count) gets the same factors for its remaining epochs.
    for start in (2, n + 1, n + d):
        assert ours[start - 1 :] == pytest.approx(_reference_factors(n, d, epoch_count=start), abs=1e-12)
    # The delayed schedule is the same one epoch later.
    delayed = [learning_rate_factor(e, n, d, "delayed") for e in range(1, n + d + 1)]
    assert delayed == pytest.approx(
        [learning_rate_factor(e - 1, n, d, "pix2pix") for e in range(1, n + d + 1)]
    )


def test_the_schedules_for_three_plus_three_epochs():
    assert [learning_rate_factor(e, 3, 3) for e in range(1, 7)] == pytest.approx([1, 1, 0.75, 0.5, 0.25, 0])
    assert [learning_rate_factor(e, 3, 3, "delayed") for e in range(1, 7)] == pytest.approx(
        [1, 1, 1, 0.75, 0.5, 0.25]
    )


def test_a_run_saved_before_the_schedule_option_keeps_its_schedule():
    from pix2pix_ilm.config import TrainConfig, config_to_dict
    from pix2pix_ilm.flags import config_from_dict

    saved = config_to_dict(TrainConfig(name="old"))
    del saved["lr_schedule"]
    assert config_from_dict(TrainConfig, saved).lr_schedule == "delayed"
    assert TrainConfig(name="new").lr_schedule == "pix2pix"


# -- the learning rate as one tensor, set in place (what a captured CUDA graph reads) -----------------------
def _weights(model: Pix2PixModel) -> list[torch.Tensor]:
    return [p.detach().clone() for net in (model.generator, model.discriminator) for p in net.parameters()]


@pytest.mark.usefixtures("one_thread")
def test_the_learning_rate_tensor_gives_torchs_float_learning_rate_steps_bit_for_bit():
    """Our Adam (fused, capturable, the learning rate one float64 tensor both optimizers share, filled in place
    at each epoch) against torch's fused Adam with a plain float learning rate: the same weights, bit for bit,
    through a change of rate."""
    config = _tiny(n_epochs=2, n_epochs_decay=3)
    real_a, real_b = _batch()
    torch.manual_seed(0)
    ours = Pix2PixModel(config, CPU)
    torch.manual_seed(0)
    reference = Pix2PixModel(config, CPU)
    for name, net in (("opt_g", reference.generator), ("opt_d", reference.discriminator)):
        setattr(
            reference, name, torch.optim.Adam(net.parameters(), lr=config.lr, betas=(0.5, 0.999), fused=True)
        )
    lr_tensor = ours.lr
    assert isinstance(lr_tensor, torch.Tensor) and lr_tensor.dtype == torch.float64
    for epoch in (1, 2, 3):
        lr = ours.set_learning_rate(epoch)
        assert lr == pytest.approx(2e-4 * (1, 0.75, 0.5)[epoch - 1])
        for opt in (reference.opt_g, reference.opt_d):
            opt.param_groups[0]["lr"] = lr
        for model in (ours, reference):
            torch.manual_seed(epoch)  # the same dropout masks
            model.optimize_parameters(real_a, real_b)
    assert ours.lr is lr_tensor and float(lr_tensor) == 2e-4 * 0.5
    assert all(g["lr"] is lr_tensor for opt in (ours.opt_g, ours.opt_d) for g in opt.param_groups)
    for mine, theirs in zip(_weights(ours), _weights(reference), strict=True):
        assert torch.equal(mine, theirs)


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("saved_lr", ["tensor", "float"], ids=["saved-now", "saved-with-a-float-rate"])
def test_capturable_optimizer_state_is_saved_and_loaded_exactly(tmp_path, saved_lr):
    """A checkpoint of the capturable optimizers (their step counts are tensors) read back with
    weights_only=True continues bit for bit; a checkpoint whose rate is a float (an older one) loads too, and
    the loaded model keeps its one rate tensor."""
    from pix2pix_ilm.training.checkpoint import load_checkpoint, save_checkpoint

    config = _tiny(no_dropout=True)
    real_a, real_b = _batch()
    torch.manual_seed(0)
    trained = Pix2PixModel(config, CPU)
    trained.set_learning_rate(1)
    for _ in range(2):
        trained.optimize_parameters(real_a, real_b)
    state = trained.state_dict()
    assert state["opt_g"]["state"][0]["step"].tolist() == 2.0
    if saved_lr == "float":
        for key in ("opt_g", "opt_d"):
            state[key]["param_groups"][0]["lr"] = 2e-4
    save_checkpoint(state, tmp_path / "latest.pt")
    resumed = Pix2PixModel(config, CPU)
    rate = resumed.lr
    resumed.load_state_dict(load_checkpoint(tmp_path / "latest.pt"))
    resumed.set_learning_rate(1)
    assert all(g["lr"] is rate for opt in (resumed.opt_g, resumed.opt_d) for g in opt.param_groups)
    for model in (trained, resumed):
        model.optimize_parameters(real_a, real_b)
    assert resumed.opt_g.state[resumed.generator.model.model[0].weight]["step"].tolist() == 3.0
    for mine, theirs in zip(_weights(resumed), _weights(trained), strict=True):
        assert torch.equal(mine, theirs)
