"""`textclf diff`: what changed in the data between two revisions, and why the metric moved."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from textclf.cli.options import repo_option


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "diff",
        parents=[repo_option()],
        help="what changed in the data between two revisions",
        description="Row-level diff of the pipeline's data between two git revisions "
        "(default: HEAD vs the workspace): documents added/removed/relabelled, "
        "labels, splits, quarantine, vocabulary, params and metrics. Outputs "
        "are read through DVC (workspace, local cache or remote).",
    )
    p.add_argument("rev_a", nargs="?", default="HEAD", metavar="REV_A", help="the older revision (default: HEAD)")
    p.add_argument(
        "rev_b", nargs="?", default=None, metavar="REV_B", help="the newer revision (default: the workspace)"
    )
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--md", action="store_true", help="Markdown (PR comments, Prefect artifacts)")
    fmt.add_argument("--json", action="store_true", help="JSON (for machines)")
    p.add_argument("--examples", type=int, default=5, help="example documents per change (default 5)")
    p.add_argument("--top", type=int, default=10, help="vocabulary tokens listed per change (default 10)")
    p.add_argument(
        "--metric",
        choices=("macro_f1", "accuracy"),
        default="macro_f1",
        help="the test metric whose change is explained: test split vs model, flips, likely causes (default macro_f1)",
    )
    p.add_argument("--no-explain", action="store_true", help="leave out the explanation of the metric's change")
    p.add_argument("-v", "--verbose", action="store_true", help="log what is read")
    return p


def _registry_rev(repo: str, rev: str | None) -> str | None:
    """A registry reference (classifier#prod, classifier@v0.3.0) as its commit; else `rev`."""
    from textclf import registry

    ref = registry.parse_ref(rev) if rev else None
    return registry.resolve(Path(repo), ref)[0] if ref else rev


def run(args: argparse.Namespace) -> int:
    from textclf.artifacts import setup_logging
    from textclf.diff.read import diff_revisions
    from textclf.diff.render import render_json, render_markdown, render_text

    if args.verbose:
        setup_logging()
    else:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s", stream=sys.stderr)
    rev_a, rev_b = (_registry_rev(args.repo, r) for r in (args.rev_a, args.rev_b))
    metric = None if args.no_explain else args.metric
    diff = diff_revisions(args.repo, rev_a, rev_b, examples=args.examples, top=args.top, metric=metric)
    render = render_json if args.json else render_markdown if args.md else render_text
    sys.stdout.write(render(diff))
    sys.stdout.flush()
    return 0
