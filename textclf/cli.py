"""The `textclf` console command."""

from __future__ import annotations

import argparse
import sys


def _cmd_params(args: argparse.Namespace) -> int:
    from stages.params import SECTIONS, ParamsError, load_params

    try:
        for name in SECTIONS if not args.section else [args.section]:
            print(f"{name}: {load_params(name, args.file).model_dump()}")
    except ParamsError as err:
        print(err, file=sys.stderr)
        return 2
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="textclf", description="Text classification pipeline tools.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("params", help="validate params.yaml and print the typed sections")
    p.add_argument("section", nargs="?", help="one section (default: all)")
    p.add_argument("--file", default="params.yaml")
    p.set_defaults(func=_cmd_params)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
