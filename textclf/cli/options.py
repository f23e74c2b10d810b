"""What several commands share: `--repo`, the model options and how they load a predictor."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from textclf.paths import BUNDLE  # import-light: paths only


def positive(value: str) -> int:
    n = int(value)
    if n <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {n}")
    return n


def repo_option() -> argparse.ArgumentParser:
    """`--repo`, declared once: a parent parser for every command that reads the project."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--repo",
        default=".",
        help="the project: its data, registry and reports (default: the current directory)",
    )
    return parent


def model_options() -> argparse.ArgumentParser:
    """Which model a command loads (predict, serve): a parent parser, `--repo` included."""
    p = argparse.ArgumentParser(add_help=False, parents=[repo_option()])
    p.add_argument("--bundle", default=str(BUNDLE), help=f"the model bundle (default: {BUNDLE})")
    p.add_argument(
        "--model",
        default=None,
        metavar="REF",
        help="a registered model instead of --bundle: classifier#STAGE (e.g. classifier#prod) or "
        "classifier@vX.Y.Z, read through DVC at its commit (see textclf promote)",
    )
    p.add_argument(
        "--runtime",
        choices=("torch", "onnx"),
        default="torch",
        help="torch (default) or onnx: ONNX Runtime on CPU, the graph `dvc repro export` wrote",
    )
    p.add_argument(
        "--onnx",
        default=None,
        metavar="PATH",
        help="the ONNX graph for --runtime onnx (default: models/onnx/model.onnx; int8: models/onnx/model.int8.onnx)",
    )
    p.add_argument("--batch-size", type=positive, default=1024, help="texts per batch (default 1024)")
    return p


def resolve_model(args: argparse.Namespace) -> None:
    """`--model classifier#prod|classifier@vX.Y.Z`: the registered bundle (and, for --runtime
    onnx, the ONNX export of the same commit) read through DVC; sets args.bundle/args.onnx."""
    if not args.model:
        return
    from textclf.errors import InputError

    if args.bundle != str(BUNDLE):
        raise InputError("give --model or --bundle, not both")
    try:
        from textclf import registry

        bundle, graph, what = registry.model_paths(Path(args.repo), args.model, onnx=args.runtime == "onnx")
    except ImportError as err:
        raise InputError(f"--model reads the registry through DVC and GTO, which are not installed ({err})") from err
    args.bundle = str(bundle)
    if graph is not None and args.onnx is None:
        args.onnx = str(graph / "model.onnx")
    elif graph is not None:  # --onnx names a file of the export (e.g. model.int8.onnx)
        args.onnx = str(graph / Path(args.onnx).name)
    print(f"model {what} ({args.bundle})", file=sys.stderr)


def load_predictor(args: argparse.Namespace, threads: int = 0):
    """The bundle (+ ONNX graph) the command asked for; raises InputError (BundleError) if not."""
    from textclf.predict import Predictor

    resolve_model(args)
    return Predictor(
        args.bundle, runtime=args.runtime, onnx_path=args.onnx, batch_size=args.batch_size, threads=threads
    )
