"""The `textclf` console command: one module per command, each with its `add_parser` beside its
`run`, and one error path for all of them (`main`).

A command raises; it does not print its own errors. `main` turns what it raises into one line on
stderr and the command's exit code: 0, or 2 for any error textclf detected and can explain (bad
params, an unreadable input or bundle, a refused promotion: a `TextclfError`), 1 when the OS
failed it (a port in use, a full disk), 130 on Ctrl-C. argparse's own usage errors are 2 too.

Every command module keeps its heavy imports inside `run`, so `textclf --help` and a serving
image (`pip install 'textclf[serve]'`) import no pipeline dependency.
"""

from __future__ import annotations

import argparse
import os
import sys

from textclf.cli import diff, labels, params, predict, promote, serve
from textclf.errors import USAGE, TextclfError

COMMANDS = (params, diff, labels, promote, predict, serve)
OS_FAILURE = 1
INTERRUPTED = 130


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("textclf")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="textclf", description="Text classification pipeline tools.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub).set_defaults(run=command.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except TextclfError as err:  # InputError, ParamsError, BundleError, DiffError, ...
        print(f"textclf {args.command}: {err}", file=sys.stderr)
        return USAGE
    except BrokenPipeError:  # `textclf ... | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        return INTERRUPTED
    except OSError as err:
        print(f"textclf {args.command}: {err}", file=sys.stderr)
        return OS_FAILURE
