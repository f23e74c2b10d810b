"""`textclf predict`: classify texts with a bundle, one record per input row, in input order."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from pathlib import Path

from textclf.cli.options import load_predictor, model_options


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "predict",
        parents=[model_options()],
        help="classify texts with the trained model",
        description="Classify texts with a model bundle, cleaning them exactly as the "
        "pipeline cleaned its training data. Texts come from the arguments, "
        "--input FILE, or stdin (one per line; a blank line gets a record marked skipped). "
        "Writes one record per text, in input order: JSONL "
        '{"label", "probabilities"} or CSV (label, prob_<label>...).',
    )
    p.add_argument("texts", nargs="*", metavar="TEXT", help="texts to classify")
    p.add_argument(
        "-i",
        "--input",
        default=None,
        metavar="FILE",
        help="a file of texts: one per line, or CSV/TSV/JSONL (by extension) with --column; - = stdin",
    )
    p.add_argument(
        "--input-format",
        choices=("auto", "text", "csv", "tsv", "jsonl"),
        default="auto",
        help="how to read --input (default: by extension; else one text per line)",
    )
    p.add_argument("--column", default="text", help="CSV/TSV column or JSONL field holding the text (default: text)")
    p.add_argument("--encoding", default="utf-8", help="input encoding (default utf-8)")
    p.add_argument(
        "--skip-empty",
        action="store_true",
        help='drop blank rows (default: each gets a record with "skipped": "empty", so output row N is input row N)',
    )
    p.add_argument("-o", "--output", default=None, metavar="FILE", help="write here instead of stdout")
    p.add_argument("--format", choices=("jsonl", "csv"), default="jsonl", help="output format (default jsonl)")
    return p


def _progress(enabled: bool):
    """A progress bar on stderr for long inputs; silent when stderr is not a terminal."""
    from tqdm import tqdm

    return tqdm(unit=" docs", disable=not (enabled and sys.stderr.isatty()), leave=False, file=sys.stderr)


def _source(args: argparse.Namespace):
    """The texts: the arguments, or a TextSource over --input / stdin."""
    from textclf.errors import InputError
    from textclf.predict import TextSource

    if args.texts and args.input is not None:
        raise InputError("give texts as arguments or --input, not both")
    if args.texts:
        blank = [i + 1 for i, t in enumerate(args.texts) if not t.strip()]
        if blank:  # as the server answers 422: an empty text has nothing to classify
            raise InputError(f"text argument(s) {blank} are empty or whitespace only")
        return list(args.texts)
    if args.input is None and sys.stdin.isatty():
        print("textclf predict: reading texts from stdin, one per line (end with Ctrl-D)", file=sys.stderr)
    return TextSource(
        args.input, fmt=args.input_format, column=args.column, encoding=args.encoding, skip_empty=args.skip_empty
    )


def run(args: argparse.Namespace) -> int:
    from textclf.artifacts import atomic_path
    from textclf.errors import InputError
    from textclf.predict import RecordWriter, chunks, predict_rows

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s", stream=sys.stderr)
    source = _source(args)
    predictor = load_predictor(args)
    out_path = Path(args.output) if args.output and args.output != "-" else None
    with contextlib.ExitStack() as stack:
        if out_path is not None:
            tmp = stack.enter_context(atomic_path(out_path))
            out = stack.enter_context(open(tmp, "w", encoding="utf-8", newline=""))
        else:
            out = sys.stdout
        writer = RecordWriter(out, args.format, predictor.labels)
        bar = stack.enter_context(_progress(enabled=not args.texts))
        n, pending = 0, []  # blank rows before the first text wait: an all-blank input writes nothing
        for batch in chunks(source, args.batch_size):
            records = predict_rows(predictor, batch)
            n += sum(1 for t in batch if t.strip())
            if n == 0:
                pending += records
            else:
                writer.write(pending + records)
                pending = []
            bar.update(len(batch))
        if n == 0:
            raise InputError("no input texts (give TEXT arguments, --input FILE, or lines on stdin)")
        out.flush()
    skipped = getattr(source, "skipped_blank", 0)
    if skipped and args.skip_empty:
        print(f"textclf predict: skipped {skipped} blank row(s) (--skip-empty)", file=sys.stderr)
    elif skipped:
        print(f'textclf predict: {skipped} blank row(s) have no label ("skipped": "empty")', file=sys.stderr)
    return 0
