"""The `textclf` console command."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import sys
from pathlib import Path

from textclf.paths import BUNDLE  # import-light: paths only


def _cmd_params(args: argparse.Namespace) -> int:
    from textclf.errors import ParamsError
    from textclf.params import SECTIONS, load_params

    try:
        for name in SECTIONS if not args.section else [args.section]:
            print(f"{name}: {load_params(name, args.file).model_dump()}")
    except ParamsError as err:
        print(err, file=sys.stderr)
        return 2
    return 0


def _registry_rev(repo: str, rev: str | None) -> str | None:
    """A registry reference (classifier#prod, classifier@v0.3.0) as its commit; else `rev`."""
    from textclf import registry

    ref = registry.parse_ref(rev) if rev else None
    return registry.resolve(Path(repo), ref)[0] if ref else rev


def _cmd_diff(args: argparse.Namespace) -> int:
    from textclf.artifacts import setup_logging
    from textclf.diff.core import DiffError
    from textclf.diff.read import diff_revisions
    from textclf.diff.render import render_json, render_markdown, render_text
    from textclf.errors import InputError

    if args.verbose:
        setup_logging()
    else:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s", stream=sys.stderr)
    try:
        rev_a, rev_b = (_registry_rev(args.repo, r) for r in (args.rev_a, args.rev_b))
        diff = diff_revisions(
            args.repo,
            rev_a,
            rev_b,
            examples=args.examples,
            top=args.top,
            metric=None if args.no_explain else args.metric,
        )
    except (DiffError, InputError) as err:
        print(f"textclf diff: {err}", file=sys.stderr)
        return 2
    render = render_json if args.json else render_markdown if args.md else render_text
    try:
        sys.stdout.write(render(diff))
        sys.stdout.flush()
    except BrokenPipeError:  # `textclf diff | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def _cmd_labels(args: argparse.Namespace) -> int:
    from textclf import labels
    from textclf.errors import TextclfError, exit_code_for
    from textclf.paths import CORRECTIONS, DOCUMENTS, SUSPECTS

    root = Path(args.repo)
    try:
        if args.action == "suspects":
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
        current, known = labels.current_label(root / DOCUMENTS, args.doc_id)
        label = current if args.action == "accept" else args.label
        if label not in known:
            raise labels.InputError(f"label {label!r} is not a label of the corpus ({', '.join(sorted(known))})")
        note = args.note if args.note is not None else ("accepted" if args.action == "accept" else "")
        labels.append_correction(root / CORRECTIONS, args.doc_id, label, note, args.reviewer)
        what = "confirmed as" if label == current else f"relabelled {current} ->"
        print(f"{args.doc_id}: {what} {label} in {CORRECTIONS}; `dvc repro` applies it")
        return 0
    except TextclfError as err:
        print(f"textclf labels: {err}", file=sys.stderr)
        return exit_code_for(err)


def _resolve_model(args: argparse.Namespace) -> None:
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


def _load_predictor(args: argparse.Namespace, threads: int = 0):
    """The bundle (+ ONNX graph) the command asked for; a user-facing error message if not."""
    from textclf.predict import Predictor

    _resolve_model(args)

    return Predictor(
        args.bundle,
        runtime=args.runtime,
        onnx_path=args.onnx,
        batch_size=args.batch_size,
        threads=threads,
    )


def _cmd_predict(args: argparse.Namespace) -> int:
    from textclf.artifacts import atomic_path
    from textclf.errors import InputError
    from textclf.predict import RecordWriter, TextSource, chunks, predict_rows

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s", stream=sys.stderr)
    if args.texts and args.input is not None:
        print("textclf predict: give texts as arguments or --input, not both", file=sys.stderr)
        return 2
    if not args.texts and args.input is None and sys.stdin.isatty():
        print(
            "textclf predict: reading texts from stdin, one per line (end with Ctrl-D)",
            file=sys.stderr,
        )
    out_path = Path(args.output) if args.output and args.output != "-" else None
    try:
        blank = [i + 1 for i, t in enumerate(args.texts or []) if not t.strip()]
        if blank:  # as the server answers 422: an empty text has nothing to classify
            raise InputError(f"text argument(s) {blank} are empty or whitespace only")
        predictor = _load_predictor(args)
        source = (
            list(args.texts)
            if args.texts
            else TextSource(
                args.input,
                fmt=args.input_format,
                column=args.column,
                encoding=args.encoding,
                skip_empty=args.skip_empty,
            )
        )
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
    except InputError as err:  # BundleError is an InputError
        print(f"textclf predict: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `textclf predict ... | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        return 130
    skipped = getattr(source, "skipped_blank", 0)
    if skipped and args.skip_empty:
        print(f"textclf predict: skipped {skipped} blank row(s) (--skip-empty)", file=sys.stderr)
    elif skipped:
        print(f'textclf predict: {skipped} blank row(s) have no label ("skipped": "empty")', file=sys.stderr)
    return 0


def _progress(enabled: bool):
    """A progress bar on stderr for long inputs; silent when stderr is not a terminal."""
    from tqdm import tqdm

    return tqdm(unit=" docs", disable=not (enabled and sys.stderr.isatty()), leave=False, file=sys.stderr)


def _cmd_promote(args: argparse.Namespace) -> int:
    from textclf import registry
    from textclf.errors import TextclfError, exit_code_for

    try:
        done = registry.promote(
            Path(args.repo), stage=args.stage, version=args.version, bump=args.bump, rev=args.rev, message=args.message
        )
    except TextclfError as err:
        print(f"textclf promote: {err}", file=sys.stderr)
        return exit_code_for(err)
    if args.json:
        print(json.dumps([dataclasses.asdict(d) for d in done], indent=2))
    else:
        for d in done:
            how = "registered" if d.new_version else "already registered"
            print(f"{d.artifact}: {d.version} {how} ({d.version_tag}), stage {d.stage} assigned ({d.stage_tag})")
        print("push the tags with: git push --tags", file=sys.stderr)
    for name in registry.unreadable(Path(args.repo), args.rev):
        print(
            f"textclf promote: warning: {name}'s files at {args.rev} are not in this repository's DVC cache "
            f"(this clone built another model, or it was never pulled): `--model {name}#{args.stage}` "
            "can read them only from a remote that has them (`dvc push` from where they were built)",
            file=sys.stderr,
        )
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from textclf import serve
    from textclf.artifacts import setup_logging
    from textclf.errors import InputError

    setup_logging()
    limits = serve.Limits(
        max_body_bytes=args.max_body_bytes,
        max_texts=args.max_texts,
        max_chars=args.max_chars,
        body_timeout_s=args.body_timeout,
        concurrency=args.concurrency,
    )
    try:
        predictor = _load_predictor(args, threads=1)  # one thread per request: they run side by side
    except InputError as err:  # BundleError is an InputError
        print(f"textclf serve: {err}", file=sys.stderr)
        return 2
    try:
        if args.workers > 1:  # the bundle was checked above; each worker process loads its own
            spec = {
                "bundle": str(Path(args.bundle).resolve()),
                "runtime": args.runtime,
                "onnx": str(Path(args.onnx).resolve()) if args.onnx else None,
                "batch_size": args.batch_size,
                "metrics": str(Path(args.metrics).resolve()) if args.metrics else None,
                "limits": dataclasses.asdict(limits),
            }
            serve.run_workers(spec, args.workers, host=args.host, port=args.port, log_level=args.log_level)
            return 0
        serve.run(
            predictor,
            host=args.host,
            port=args.port,
            limits=limits,
            metrics_path=Path(args.metrics) if args.metrics else None,
            log_level=args.log_level,
        )
    except OSError as err:
        print(f"textclf serve: {err}", file=sys.stderr)
        return 1
    return 0


def _positive(value: str) -> int:
    n = int(value)
    if n <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {n}")
    return n


def _model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--bundle",
        default=str(BUNDLE),
        help=f"the model bundle (default: {BUNDLE})",
    )
    p.add_argument(
        "--model",
        default=None,
        metavar="REF",
        help="a registered model instead of --bundle: classifier#STAGE (e.g. classifier#prod) or "
        "classifier@vX.Y.Z, read through DVC at its commit (see textclf promote)",
    )
    p.add_argument("--repo", default=".", help="the project whose registry --model reads (default: .)")
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
    p.add_argument("--batch-size", type=_positive, default=1024, help="texts per batch (default 1024)")


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
    p = sub.add_parser("params", help="validate params.yaml and print the typed sections")
    p.add_argument("section", nargs="?", help="one section (default: all)")
    p.add_argument("--file", default="params.yaml", help="the params file (default: params.yaml)")
    p.set_defaults(func=_cmd_params)

    p = sub.add_parser(
        "diff",
        help="what changed in the data between two revisions",
        description="Row-level diff of the pipeline's data between two git revisions "
        "(default: HEAD vs the workspace): documents added/removed/relabelled, "
        "labels, splits, quarantine, vocabulary, params and metrics. Outputs "
        "are read through DVC (workspace, local cache or remote).",
    )
    p.add_argument(
        "rev_a",
        nargs="?",
        default="HEAD",
        metavar="REV_A",
        help="the older revision (default: HEAD)",
    )
    p.add_argument(
        "rev_b",
        nargs="?",
        default=None,
        metavar="REV_B",
        help="the newer revision (default: the workspace)",
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
    p.add_argument("--repo", default=".", help="the project (default: the current directory)")
    p.add_argument("-v", "--verbose", action="store_true", help="log what is read")
    p.set_defaults(func=_cmd_diff)

    p = sub.add_parser(
        "labels",
        help="review suspect labels: list the queue, fix or confirm a label",
        description="The review queue of likely mislabelled documents (the labels stage's "
        "reports/labels/suspects.parquet) and the corrections file it feeds "
        "(data/labels/corrections.csv, applied by ingest on the next dvc repro).",
    )
    lsub = p.add_subparsers(dest="action", required=True)
    q = lsub.add_parser("suspects", help="print the queue, most suspicious first")
    q.add_argument("--split", choices=("train", "valid", "test"), help="one split's suspects only")
    q.add_argument("--top", type=int, default=20, help="how many (default 20; 0 = all)")
    q.add_argument("--width", type=_positive, default=60, help="characters of text shown (default 60)")
    q.add_argument("--json", action="store_true", help="JSON lines with every column")
    f = lsub.add_parser("fix", help="record the right label of a document")
    f.add_argument("doc_id", metavar="DOC_ID", help="the document (16 hex characters, from `suspects`)")
    f.add_argument("label", metavar="LABEL", help="its right label (one of the corpus's labels)")
    a = lsub.add_parser("accept", help="confirm a document's label: it leaves the queue for good")
    a.add_argument("doc_id", metavar="DOC_ID", help="the document (16 hex characters, from `suspects`)")
    for sp in (q, f, a):
        sp.add_argument("--repo", default=".", help="the project (default: the current directory)")
    for sp in (f, a):
        sp.add_argument("--note", default=None, help="why (kept in the corrections file)")
        sp.add_argument(
            "--reviewer",
            default=os.environ.get("USER", ""),
            help="who reviewed it (default: $USER)",
        )
    p.set_defaults(func=_cmd_labels)

    p = sub.add_parser(
        "promote",
        help="register the committed model in the registry and assign a stage (GTO tags)",
        description="Register the models committed at --rev (the dvc.yaml artifacts classifier and "
        "classifier-onnx) as a new version, e.g. classifier@v0.2.0, and assign --stage, e.g. "
        "classifier#prod#3, as GTO git tags in this repository (push them with git push --tags). "
        "`gto show` lists the registry; `dvc artifacts get . classifier --stage prod` fetches one.",
    )
    p.add_argument("--repo", default=".", help="project root (default: .)")
    p.add_argument("--stage", default="prod", help="the stage to assign (default: prod)")
    p.add_argument("--rev", default="HEAD", help="the commit whose models are promoted (default: HEAD)")
    v = p.add_mutually_exclusive_group()
    v.add_argument("--version", default=None, help="the version to register, vMAJOR.MINOR.PATCH (default: next)")
    v.add_argument(
        "--bump", choices=("major", "minor", "patch"), default=None, help="which part of the version to bump"
    )
    p.add_argument("-m", "--message", default=None, help="tag message")
    p.add_argument("--json", action="store_true", help="print the tags as JSON")
    p.set_defaults(func=_cmd_promote)

    p = sub.add_parser(
        "predict",
        help="classify texts with the trained model",
        description="Classify texts with a model bundle, cleaning them exactly as the "
        "pipeline cleaned its training data. Texts come from the arguments, "
        "--input FILE, or stdin (one per line; blank lines are skipped). "
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
    p.add_argument(
        "--column",
        default="text",
        help="CSV/TSV column or JSONL field holding the text (default: text)",
    )
    p.add_argument("--encoding", default="utf-8", help="input encoding (default utf-8)")
    p.add_argument(
        "--skip-empty",
        action="store_true",
        help='drop blank rows (default: each gets a record with "skipped": "empty", so output row N is input row N)',
    )
    p.add_argument("-o", "--output", default=None, metavar="FILE", help="write here instead of stdout")
    p.add_argument("--format", choices=("jsonl", "csv"), default="jsonl", help="output format (default jsonl)")
    _model_options(p)
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser(
        "serve",
        help="serve the model over HTTP (FastAPI + uvicorn)",
        description='HTTP API: POST /predict {"texts": [...]}, GET /health, GET /ready, GET /metadata. '
        "Binds 127.0.0.1 by default; there is no authentication.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    _model_options(p)
    p.add_argument(
        "--metrics",
        default="reports/metrics.json",
        help="evaluation metrics shown by /metadata (default reports/metrics.json; '' = none)",
    )
    p.add_argument("--max-texts", type=_positive, default=256, help="texts per request (default 256)")
    p.add_argument("--max-chars", type=_positive, default=20_000, help="characters per text (default 20000)")
    p.add_argument(
        "--max-body-bytes",
        type=_positive,
        default=1 << 20,
        help="request body size (default 1 MiB)",
    )
    p.add_argument(
        "--body-timeout",
        type=float,
        default=10.0,
        help="seconds for a request body to arrive, else 408 (default 10)",
    )
    p.add_argument(
        "--concurrency",
        type=int,
        default=0,
        help="predictions at once, one thread each (default 0: the CPU count, at most 8)",
    )
    p.add_argument(
        "--workers",
        type=_positive,
        default=1,
        help="server processes sharing the port, each with its own copy of the model (default 1)",
    )
    p.add_argument(
        "--log-level",
        choices=("critical", "error", "warning", "info", "debug"),
        default="info",
        help="uvicorn's log level (default info)",
    )
    p.set_defaults(func=_cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
