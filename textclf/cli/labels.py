"""`textclf labels`: the review queue of suspect labels, and the corrections it feeds."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from textclf.cli.options import positive, repo_option


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "labels",
        help="review suspect labels: list the queue, fix or confirm a label",
        description="The review queue of likely mislabelled documents (the labels stage's "
        "reports/labels/suspects.parquet) and the corrections file it feeds "
        "(data/labels/corrections.csv, applied by ingest on the next dvc repro).",
    )
    actions = p.add_subparsers(dest="action", required=True)
    repo = repo_option()
    q = actions.add_parser("suspects", parents=[repo], help="print the queue, most suspicious first")
    q.add_argument("--split", choices=("train", "valid", "test"), help="one split's suspects only")
    q.add_argument("--top", type=int, default=20, help="how many (default 20; 0 = all)")
    q.add_argument("--width", type=positive, default=60, help="characters of text shown (default 60)")
    q.add_argument("--json", action="store_true", help="JSON lines with every column")
    f = actions.add_parser("fix", parents=[repo], help="record the right label of a document")
    f.add_argument("doc_id", metavar="DOC_ID", help="the document (16 hex characters, from `suspects`)")
    f.add_argument("label", metavar="LABEL", help="its right label (one of the corpus's labels)")
    a = actions.add_parser("accept", parents=[repo], help="confirm a document's label: it leaves the queue for good")
    a.add_argument("doc_id", metavar="DOC_ID", help="the document (16 hex characters, from `suspects`)")
    for sp in (f, a):
        sp.add_argument("--note", default=None, help="why (kept in the corrections file)")
        sp.add_argument("--reviewer", default=os.environ.get("USER", ""), help="who reviewed it (default: $USER)")
    return p


def run(args: argparse.Namespace) -> int:
    root = Path(args.repo)
    return _suspects(args, root) if args.action == "suspects" else _record(args, root)


def _suspects(args: argparse.Namespace, root: Path) -> int:
    from textclf import labels
    from textclf.paths import SUSPECTS

    q = labels.queue(root / SUSPECTS, args.split, args.top)
    if args.json:
        print(q.to_json(orient="records", force_ascii=False, lines=True), end="")
        return 0
    for row in q.itertuples():
        text = " ".join(row.text.split())
        text = text if len(text) <= args.width else text[: args.width - 1] + "…"
        print(
            f"{row.rank:>5}  {row.doc_id}  {row.split:<5}  {row.label} -> {row.suggested}"
            f"  ({row.self_confidence:.3f})  {text}"
        )
    print(
        f"{len(q)} shown. Fix one: textclf labels fix DOC_ID LABEL; confirm its label: "
        "textclf labels accept DOC_ID; then dvc repro.",
        file=sys.stderr,
    )
    return 0


def _record(args: argparse.Namespace, root: Path) -> int:
    """`fix` or `accept`: one row appended to the corrections file."""
    from textclf import labels
    from textclf.errors import InputError
    from textclf.paths import CORRECTIONS, DOCUMENTS

    current, known = labels.current_label(root / DOCUMENTS, args.doc_id)
    label = current if args.action == "accept" else args.label
    if label not in known:
        raise InputError(f"label {label!r} is not a label of the corpus ({', '.join(sorted(known))})")
    note = args.note if args.note is not None else ("accepted" if args.action == "accept" else "")
    labels.append_correction(root / CORRECTIONS, args.doc_id, label, note, args.reviewer)
    what = "confirmed as" if label == current else f"relabelled {current} ->"
    print(f"{args.doc_id}: {what} {label} in {CORRECTIONS}; `dvc repro` applies it")
    return 0
