"""``pix2pix-ilm`` command line: one subcommand per job.

Each subcommand's flags are the fields of its options dataclass (:mod:`pix2pix_ilm.config`), parsed once here;
the command calls one function of the module that owns the job with that dataclass. A
:class:`~pix2pix_ilm.errors.UsageError`, or an ``OSError`` on a named file (a permission, a full disk), becomes
one line on stderr and exit code 2; anything else is a bug and keeps its traceback. Building the parser imports
no torch, so ``--help`` is instant.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import logging
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from pix2pix_ilm.config import BenchConfig, ModelsConfig, TestConfig, TrainConfig, VisdomConfig
from pix2pix_ilm.deploy.options import ExportConfig, ImportConfig, TranslateConfig
from pix2pix_ilm.errors import UsageError, first_line
from pix2pix_ilm.evaluation.options import CompareConfig, EvalConfig, Table6Config
from pix2pix_ilm.flags import add_dataclass_arguments, dataclass_from_args
from pix2pix_ilm.version import __version__


class _Parser(argparse.ArgumentParser):
    """Bad flags end in one line (``prog: error: ...``) and exit code 2, like every other user error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    def _get_help_string(self, action: argparse.Action) -> str:
        return action.help or ""  # defaults are already written into the help texts


def _retain_heap_on_cpu(device: str) -> None:
    """Commands that train or translate on CPU keep freed memory in the process (``heap``); this is a
    process-wide setting, so the command line opts in and the library never does it behind a caller's back."""
    from pix2pix_ilm.device import resolve_device
    from pix2pix_ilm.heap import retain_freed_memory

    try:
        on_cpu = resolve_device(device).type == "cpu"
    except UsageError:
        return  # the command itself reports the bad --device
    if on_cpu:
        retain_freed_memory()


# Each command imports its job only when it runs: building the parser must not load torch.
def _cmd_train(config: TrainConfig, explicit: set[str]) -> int:
    from pix2pix_ilm.training.loop import train

    _retain_heap_on_cpu(config.device)
    train(config, explicit=explicit)
    return 0


def _cmd_test(config: TestConfig, explicit: set[str]) -> int:
    from pix2pix_ilm.training.inference import run_test

    _retain_heap_on_cpu(config.device)
    run_test(config)
    return 0


def _cmd_translate(config: TranslateConfig, explicit: set[str]) -> int:
    from pix2pix_ilm.deploy.translator import run_translate

    run_translate(config)
    return 0


def _cmd_export(config: ExportConfig, explicit: set[str]) -> int:
    from pix2pix_ilm.deploy.export import export_generator

    export_generator(config)
    return 0


def _cmd_import(config: ImportConfig, explicit: set[str]) -> int:
    from pix2pix_ilm.deploy.reference import import_reference

    import_reference(config)
    return 0


def _cmd_eval(config: EvalConfig, explicit: set[str]) -> int:
    from pix2pix_ilm.evaluation.evaluate import run_eval

    run_eval(config)
    return 0


def _cmd_table6(config: Table6Config, explicit: set[str]) -> int:
    from pix2pix_ilm.evaluation.table6 import run_table6

    _retain_heap_on_cpu(config.device)
    run_table6(config)
    return 0


def _cmd_compare(config: CompareConfig, explicit: set[str]) -> int:
    from pix2pix_ilm.evaluation.compare import run_compare

    _retain_heap_on_cpu(config.device)
    run_compare(config)
    return 0


def _cmd_models(config: ModelsConfig, explicit: set[str]) -> int:
    from pix2pix_ilm.models.networks import parameter_table

    print(
        parameter_table(
            config.netG, config.netD, ngf=config.ngf, ndf=config.ndf, ilm_group_size=config.ilm_group_size
        )
    )
    return 0


def _cmd_visdom(config: VisdomConfig, explicit: set[str]) -> int:
    if not config.fetch_assets:
        from pix2pix_ilm.viz.server import serve_visdom

        serve_visdom(host=config.host, port=config.port, env_path=config.env_path)
        return 0
    from pix2pix_ilm.viz.assets import ASSETS, asset_dir, fetch_assets, missing_assets_message

    directory = asset_dir()
    missing = fetch_assets(directory, log=lambda line: print(f"visdom assets: {line}", flush=True))
    if missing:
        print(f"pix2pix-ilm visdom: error: {missing_assets_message(missing, directory)}", file=sys.stderr)
        return 1
    print(f"visdom assets: all {len(ASSETS)} browser files are in {directory}")
    return 0


def _cmd_bench(config: BenchConfig, explicit: set[str]) -> int:
    from pix2pix_ilm.bench.run import run_bench

    run_bench(config)
    return 0


@dataclasses.dataclass(frozen=True)
class Command:
    run: Callable[[Any, set[str]], int]
    options: type
    help: str
    description: str = ""


COMMANDS: dict[str, Command] = {
    "train": Command(
        _cmd_train,
        TrainConfig,
        "train a pix2pix model",
        "Train pix2pix on aligned A|B images or paired A/B folders (--dataset-mode). Writes <checkpoints-dir>/<name>/: config.json, latest.pt, "
        "epoch_<n>.pt, loss_log.jsonl, web/index.html.",
    ),
    "test": Command(
        _cmd_test,
        TestConfig,
        "translate images with a trained run",
        "Translate images with a trained run; the architecture is read from the run's config.json. "
        "Writes <results-dir>/<name>/<phase>_<epoch>/images/ and index.html.",
    ),
    "translate": Command(
        _cmd_translate,
        TranslateConfig,
        "translate plain images with a trained run or an exported ONNX file",
        "Translate image files (or the images of folders) one by one with a run's generator (--name) or an "
        "exported ONNX file (--onnx). Each input goes through the run's test-time preprocessing (resized, or "
        "resized and centre-cropped, to the crop size the run trained on; any input size), and its output is "
        "resized back to the input's size: <out>/<stem>.png. In Python: "
        "pix2pix_ilm.Translator.from_run('checkpoints/RUN')(pil_image).",
    ),
    "export": Command(
        _cmd_export,
        ExportConfig,
        "export a run's generator to ONNX or TorchScript",
        "Write the generator (eval mode, fp32) as ONNX (run it with onnxruntime; needs "
        "pip install 'pix2pix-ilm[export]') or TorchScript (torch.jit.load, without this package). The file's "
        "metadata (ONNX metadata_props / TorchScript extra file, key pix2pix_ilm) holds the contract: input "
        "(N, C, H, W) float32 in [-1, 1] = pixel / 127.5 - 1, the size (the run's crop size, or with --dynamic "
        "any multiple of the generator's size step), channels, direction and the run's preprocessing.",
    ),
    "import": Command(
        _cmd_import,
        ImportConfig,
        "import a model trained with the pix2pix reference code",
        "Make a run folder (config.json, latest.pt) from latest_net_G.pth [and latest_net_D.pth] of "
        "junyanz/pytorch-CycleGAN-and-pix2pix, given the options it was trained with; every key and shape is "
        "checked. test, eval, export, translate and train --continue --dataroot DIR then take it like any run.",
    ),
    "eval": Command(
        _cmd_eval,
        EvalConfig,
        "score test outputs: RMSE, PSNR, MAE, SSIM, LPIPS",
        "Pair every <stem>_fake_B.png with <stem>_real_B.png under <results-dir>/images/, print "
        "mean ± std per metric and write the scores as JSON (default: <results-dir>/metrics.json).",
    ),
    "table6": Command(
        _cmd_table6,
        Table6Config,
        "reproduce the paper's Table 6 (train, test and eval three configurations)",
        "The paper's Table 6 protocol: train, test and score each configuration for every seed (resumable). "
        "Writes table6.md, table6.json, table6.png, sample grids, and the runs' folders and logs to --out.",
    ),
    "compare": Command(
        _cmd_compare,
        CompareConfig,
        "compare training options (norms, ...) over seeds on any paired data, with paired intervals",
        "Train every --row for every seed on --dataroot (any layout train reads), test and score each run on "
        "every --eval-phase, and pair each row with the baseline row per seed: mean +- std, the paired "
        "difference with its 95 % Student-t interval over seeds (n, df) and a verdict per metric. A row is a "
        "name and the training options that differ from every run's (--preset, then --set):\n\n"
        "  pix2pix-ilm compare --dataroot datasets/facades --out results/norms --seeds 0 1 2 --preset quick \\\n"
        "      --set direction=BtoA --row in:netG_norm=instance --row gn:netG_norm=group,num_groups=8 \\\n"
        "      --row ilm_gn16:netG_norm=ilm_gn,ilm_group_size=16 --eval-phase test val\n\n"
        "Resumable (finished runs trained with the same options are reused). Writes compare.md, compare.json, "
        "compare.png, sample grids, and the runs' folders and logs to --out (docs/table6.md).",
    ),
    "visdom": Command(
        _cmd_visdom,
        VisdomConfig,
        "start a local visdom server that works offline",
        "Start a visdom server for live previews. Unlike 'python -m visdom.server' it downloads nothing, so it "
        "starts without internet: visdom's browser files (JavaScript, CSS, fonts) come from a local cache that "
        "'pix2pix-ilm visdom --fetch-assets' fills once (scripts/setup.sh does it). It binds to 127.0.0.1 (this "
        "machine only) unless --host says otherwise.",
    ),
    "bench": Command(
        _cmd_bench,
        BenchConfig,
        "measure training and inference speed per speed setting and norm pair",
        "Time the training step (warm-up excluded; median and IQR) and the inference forward for every speed "
        "setting x norm pair, each in a fresh process: it/s, the ILM cost, the step's memory, the convolutions' "
        "GFLOP/s and their share of the machine's fp32 peak. Prints a table, then one JSON line (docs/bench.md).",
    ),
    "models": Command(_cmd_models, ModelsConfig, "print parameter counts of G and D for every norm choice"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="pix2pix-ilm",
        description="pix2pix image-to-image translation with Instance-Level Meta Normalization (ILM Norm).",
        epilog="Run 'pix2pix-ilm <command> --help' for the options of a command.",
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"pix2pix-ilm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="command", parser_class=_Parser)
    for name, command in COMMANDS.items():
        p = sub.add_parser(
            name, help=command.help, description=command.description, formatter_class=_Formatter
        )
        add_dataclass_arguments(p, command.options)
    return parser


_UNTYPED = object()


def _explicit_options(parser: argparse.ArgumentParser, argv: Sequence[str]) -> set[str]:
    """Destinations of the options actually typed (``--continue`` keeps the saved values of the others).

    Taken from a second parse into a namespace that already holds a marker for every option, so argparse
    sets only the typed ones, however they were spelled (abbreviated, ``--opt=value``, an alias).
    """
    appending = {a.dest for a in parser._actions if isinstance(a, argparse._AppendAction)}
    namespace = argparse.Namespace(
        **{a.dest: None if a.dest in appending else _UNTYPED for a in parser._actions}
    )
    parser.parse_args(argv, namespace=namespace)
    return {dest for dest, value in vars(namespace).items() if value is not _UNTYPED and value is not None}


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


def _refused(err: OSError) -> str:
    """Why the system refused a file, and what to do."""
    reason = err.strerror or first_line(err)
    if err.errno not in (errno.ENOSPC, errno.EDQUOT):
        return f"{reason} (check the path and its permissions)"
    from pix2pix_ilm.files import no_space_advice

    return f"{reason}: {no_space_advice(err.filename)}"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``pix2pix-ilm`` and ``python -m pix2pix_ilm``."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    command = COMMANDS[args.command]
    subparser = parser._subparsers._group_actions[0].choices[args.command]  # type: ignore[union-attr]
    explicit = _explicit_options(subparser, argv[argv.index(args.command) + 1 :])
    options = dataclass_from_args(command.options, args)
    try:
        with _one_line_warnings(args.command):
            return command.run(options, explicit)
    except UsageError as err:
        print(f"pix2pix-ilm {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        if err.filename is None:
            raise
        # A file the system refuses that no check foresaw (a permission, a full disk): the user's to fix.
        print(f"pix2pix-ilm {args.command}: error: {err.filename}: {_refused(err)}", file=sys.stderr)
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


__all__ = ["main", "build_parser"]
