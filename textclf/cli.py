"""The `textclf` console command."""

from __future__ import annotations

import argparse
import logging
import os
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


def _cmd_diff(args: argparse.Namespace) -> int:
    from stages.artifacts import setup_logging
    from textclf.datadiff import (
        DiffError,
        diff_revisions,
        render_json,
        render_markdown,
        render_text,
    )

    if args.verbose:
        setup_logging()
    else:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s", stream=sys.stderr)
    try:
        diff = diff_revisions(args.repo, args.rev_a, args.rev_b, examples=args.examples, top=args.top)
    except DiffError as err:
        print(f"textclf diff: {err}", file=sys.stderr)
        return 2
    render = render_json if args.json else render_markdown if args.md else render_text
    try:
        sys.stdout.write(render(diff))
        sys.stdout.flush()
    except BrokenPipeError:  # `textclf diff | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="textclf", description="Text classification pipeline tools.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("params", help="validate params.yaml and print the typed sections")
    p.add_argument("section", nargs="?", help="one section (default: all)")
    p.add_argument("--file", default="params.yaml")
    p.set_defaults(func=_cmd_params)

    p = sub.add_parser("diff", help="what changed in the data between two revisions",
                       description="Row-level diff of the pipeline's data between two git revisions "
                                   "(default: HEAD vs the workspace): documents added/removed/relabelled, "
                                   "labels, splits, quarantine, vocabulary, params and metrics. Outputs "
                                   "are read through DVC (workspace, local cache or remote).")
    p.add_argument("rev_a", nargs="?", default="HEAD", metavar="REV_A",
                   help="the older revision (default: HEAD)")
    p.add_argument("rev_b", nargs="?", default=None, metavar="REV_B",
                   help="the newer revision (default: the workspace)")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--md", action="store_true", help="Markdown (PR comments, Prefect artifacts)")
    fmt.add_argument("--json", action="store_true", help="JSON (for machines)")
    p.add_argument("--examples", type=int, default=5, help="example documents per change (default 5)")
    p.add_argument("--top", type=int, default=10, help="vocabulary tokens listed per change (default 10)")
    p.add_argument("--repo", default=".", help="the project (default: the current directory)")
    p.add_argument("-v", "--verbose", action="store_true", help="log what is read")
    p.set_defaults(func=_cmd_diff)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
