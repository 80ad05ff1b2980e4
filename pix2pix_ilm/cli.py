"""``pix2pix-ilm`` command line: one subcommand per job.

Each subcommand parses its flags into a config dataclass (or plain arguments) and calls one function of
the module that owns the job. A :class:`~pix2pix_ilm.errors.UsageError` becomes one line on stderr and
exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from pix2pix_ilm import __version__
from pix2pix_ilm.config import (
    Table6Config,
    TestConfig,
    TrainConfig,
    add_dataclass_arguments,
    dataclass_from_args,
)
from pix2pix_ilm.errors import UsageError
from pix2pix_ilm.models.norms import NORM_NAMES


class _Parser(argparse.ArgumentParser):
    """Bad flags end in one line (``prog: error: ...``) and exit code 2, like every other user error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    def _get_help_string(self, action: argparse.Action) -> str:
        return action.help or ""  # defaults are already written into the help texts


def _retain_heap_on_cpu(device: str) -> None:
    """Commands that train or translate on CPU keep freed memory in the process (``cpu_speed``); this is a
    process-wide setting, so the command line opts in and the library never does it behind a caller's back."""
    from pix2pix_ilm.cpu_speed import retain_freed_memory
    from pix2pix_ilm.device import resolve_device

    try:
        on_cpu = resolve_device(device).type == "cpu"
    except UsageError:
        return  # the command itself reports the bad --device
    if on_cpu:
        retain_freed_memory()


def _cmd_train(args: argparse.Namespace) -> int:
    from pix2pix_ilm.training.loop import train

    _retain_heap_on_cpu(args.device)
    train(dataclass_from_args(TrainConfig, args), explicit=args.explicit_options)
    return 0


_UNTYPED = object()


def _explicit_options(parser: argparse.ArgumentParser, argv: Sequence[str]) -> set[str]:
    """Destinations of the options actually typed (``--continue`` keeps the saved values of the others).

    Taken from a second parse into a namespace that already holds a marker for every option, so argparse
    sets only the typed ones, however they were spelled (abbreviated, ``--opt=value``, an alias).
    """
    namespace = argparse.Namespace(**{a.dest: _UNTYPED for a in parser._actions})
    parser.parse_args(argv, namespace=namespace)
    return {dest for dest, value in vars(namespace).items() if value is not _UNTYPED}


def _cmd_test(args: argparse.Namespace) -> int:
    from pix2pix_ilm.training.inference import run_test

    _retain_heap_on_cpu(args.device)
    run_test(dataclass_from_args(TestConfig, args))
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from pix2pix_ilm.evaluation.evaluate import run_eval_command

    run_eval_command(
        results_dir=args.results_dir,
        metrics=args.metrics,
        lpips_backbone=args.lpips_backbone,
        json_path=args.json,
        device=args.device,
        batch_size=args.batch_size,
    )
    return 0


def _cmd_table6(args: argparse.Namespace) -> int:
    from pix2pix_ilm.evaluation.table6 import run_table6

    _retain_heap_on_cpu(args.device)
    run_table6(dataclass_from_args(Table6Config, args))
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from pix2pix_ilm.models.networks import parameter_table

    print(
        parameter_table(args.netG, args.netD, ngf=args.ngf, ndf=args.ndf, ilm_group_size=args.ilm_group_size)
    )
    return 0


def _fetch_visdom_assets() -> int:
    from pix2pix_ilm.viz.assets import ASSETS, asset_dir, fetch_assets, missing_assets_message

    directory = asset_dir()
    missing = fetch_assets(directory, log=lambda line: print(f"visdom assets: {line}", flush=True))
    if missing:
        print(f"pix2pix-ilm visdom: error: {missing_assets_message(missing, directory)}", file=sys.stderr)
        return 1
    print(f"visdom assets: all {len(ASSETS)} browser files are in {directory}")
    return 0


def _cmd_visdom(args: argparse.Namespace) -> int:
    from pix2pix_ilm.viz.server import serve_visdom

    if args.fetch_assets:
        return _fetch_visdom_assets()
    serve_visdom(host=args.host, port=args.port, env_path=args.env_path)
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from pix2pix_ilm.bench.runner import run_bench

    run_bench(args)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="pix2pix-ilm",
        description="pix2pix image-to-image translation with Instance-Level Meta Normalization (ILM Norm).",
        epilog="Run 'pix2pix-ilm <command> --help' for the options of a command.",
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"pix2pix-ilm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="command", parser_class=_Parser)
    for add_command in (_add_train, _add_test, _add_eval, _add_table6, _add_models, _add_visdom, _add_bench):
        add_command(sub)
    parser.train_parser = sub.choices["train"]  # type: ignore[attr-defined]
    return parser


def _command(
    sub: argparse._SubParsersAction, name: str, func: Callable, help: str, **kw: Any
) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=help, formatter_class=_Formatter, **kw)
    parser.set_defaults(func=func)
    return parser


def _add_train(sub: argparse._SubParsersAction) -> None:
    description = (
        "Train pix2pix on aligned A|B images. Writes <checkpoints-dir>/<name>/: config.json, latest.pt, "
        "epoch_<n>.pt, loss_log.jsonl, web/index.html."
    )
    add_dataclass_arguments(
        _command(sub, "train", _cmd_train, "train a pix2pix model", description=description), TrainConfig
    )


def _add_test(sub: argparse._SubParsersAction) -> None:
    description = (
        "Translate images with a trained run; the architecture is read from the run's config.json. "
        "Writes <results-dir>/<name>/<phase>_<epoch>/images/ and index.html."
    )
    p = _command(sub, "test", _cmd_test, "translate images with a trained run", description=description)
    add_dataclass_arguments(p, TestConfig)


def _add_eval(sub: argparse._SubParsersAction) -> None:
    description = (
        "Pair every <stem>_fake_B.png with <stem>_real_B.png under <results-dir>/images/, print "
        "mean ± std per metric and write the scores as JSON (default: <results-dir>/metrics.json)."
    )
    p = _command(
        sub, "eval", _cmd_eval, "score test outputs: RMSE, PSNR, MAE, SSIM, LPIPS", description=description
    )
    p.add_argument("--results-dir", required=True, help="a test output folder, e.g. results/RUN/test_latest")
    p.add_argument(
        "--metrics",
        default="rmse,rmse_rgb,ssim,lpips",
        help="comma-separated metric names (default: rmse,rmse_rgb,ssim,lpips)",
    )
    p.add_argument(
        "--lpips-backbone",
        default=None,
        help="local ImageNet AlexNet weights for LPIPS (torchvision's alexnet-owt-*.pth or a features-only file); "
        "default: $PIX2PIX_ILM_LPIPS_BACKBONE, else lpips' own download",
    )
    p.add_argument(
        "--json", default=None, help="where to write the scores (default: <results-dir>/metrics.json)"
    )
    p.add_argument("--device", default="auto", help="device for LPIPS: cpu, cuda or auto (default: auto)")
    p.add_argument("--batch-size", type=int, default=16, help="images per LPIPS batch (default: 16)")


def _add_table6(sub: argparse._SubParsersAction) -> None:
    description = (
        "The paper's Table 6 protocol: train, test and score each configuration for every seed (resumable). "
        "Writes table6.md, table6.json, table6.png, sample grids, and the runs' folders and logs to --out."
    )
    help = "reproduce the paper's Table 6 (train, test and eval three configurations)"
    add_dataclass_arguments(_command(sub, "table6", _cmd_table6, help, description=description), Table6Config)


def _add_models(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "models", _cmd_models, "print parameter counts of G and D for every norm choice")
    p.add_argument("--netG", default="unet_256", help="generator (default: unet_256)")
    p.add_argument("--netD", default="basic", help="discriminator (default: basic)")
    p.add_argument("--ngf", type=int, default=64, help="generator width (default: 64)")
    p.add_argument("--ndf", type=int, default=64, help="discriminator width (default: 64)")
    p.add_argument("--ilm-group-size", type=int, default=1, help="ILM key-group size K (default: 1)")


def _add_visdom(sub: argparse._SubParsersAction) -> None:
    description = (
        "Start a visdom server for live previews. Unlike 'python -m visdom.server' it downloads nothing, so it "
        "starts without internet: visdom's browser files (JavaScript, CSS, fonts) come from a local cache that "
        "'pix2pix-ilm visdom --fetch-assets' fills once (scripts/setup.sh does it). It binds to 127.0.0.1 (this "
        "machine only) unless --host says otherwise; use --host 0.0.0.0 only on a network you trust."
    )
    help = "start a local visdom server that works offline"
    p = _command(sub, "visdom", _cmd_visdom, help, description=description)
    p.add_argument("--port", type=int, default=8097, help="port (default: 8097)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    p.add_argument("--env-path", default=None, help="where visdom stores environments (default: ~/.visdom)")
    p.add_argument(
        "--fetch-assets",
        action="store_true",
        help="put visdom's browser files into their cache and exit: visdom's own download where its CDNs "
        "answer, else the npm registry (needs npm); the cache is $PIX2PIX_ILM_VISDOM_ASSETS, else "
        "<venv>/share/pix2pix-ilm/visdom-<version> (outside a venv: ~/.cache/pix2pix-ilm/...)",
    )


def _add_bench(sub: argparse._SubParsersAction) -> None:
    from pix2pix_ilm.bench.options import add_bench_arguments

    help = "benchmark training and inference against a plain eager baseline"
    add_bench_arguments(_command(sub, "bench", _cmd_bench, help))


@contextlib.contextmanager
def _one_line_warnings(command: str) -> Iterator[None]:
    """Warnings and the package's log messages as ``pix2pix-ilm <command>: warning: <message>``: one line of
    plain text, without the file path and source line that Python's warnings show by default."""

    def one_line(kind: str, message: object) -> str:
        return f"pix2pix-ilm {command}: {kind}: {' '.join(str(message).split())}"

    def formatted(message: Warning | str, category: type, filename: str, lineno: int, line=None) -> str:
        return one_line("warning", message) + "\n"

    class OneLine(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            return one_line(record.levelname.lower(), record.getMessage())

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(OneLine())
    handler.setLevel(logging.WARNING)
    package_logger = logging.getLogger("pix2pix_ilm")
    with warnings.catch_warnings():
        # formatwarning, not showwarning: code that records warnings (pytest.warns) keeps working
        warnings.formatwarning = formatted
        package_logger.addHandler(handler)
        try:
            yield
        finally:
            package_logger.removeHandler(handler)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``pix2pix-ilm`` and ``python -m pix2pix_ilm``."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if getattr(args, "command", None) == "train":
        args.explicit_options = _explicit_options(parser.train_parser, argv[argv.index("train") + 1 :])
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        with _one_line_warnings(args.command):
            return int(args.func(args) or 0)
    except UsageError as err:
        print(f"pix2pix-ilm {args.command}: error: {err}", file=sys.stderr)
        return 2
    except Exception as err:
        from pix2pix_ilm.training.stopping import TrainingDiverged, TrainingStopped

        if isinstance(err, TrainingStopped):  # latest.pt is saved and the message printed
            return err.exit_code
        if isinstance(err, TrainingDiverged):  # not the user's typing: its own exit code, one line
            print(f"pix2pix-ilm {args.command}: diverged: {err}", file=sys.stderr)
            return err.exit_code
        raise
    except KeyboardInterrupt:
        print(f"pix2pix-ilm {args.command}: interrupted", file=sys.stderr)
        return 130


__all__ = ["main", "build_parser", "NORM_NAMES"]
