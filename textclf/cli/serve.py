"""`textclf serve`: the model over HTTP (FastAPI + uvicorn), bound to this machine by default."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from textclf.cli.options import load_predictor, model_options, positive


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "serve",
        parents=[model_options()],
        help="serve the model over HTTP (FastAPI + uvicorn)",
        description='HTTP API: POST /predict {"texts": [...]}, GET /health, GET /ready, GET /metadata. '
        "Binds 127.0.0.1 by default; there is no authentication.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument(
        "--metrics",
        default="reports/metrics.json",
        help="evaluation metrics shown by /metadata (default reports/metrics.json; '' = none)",
    )
    p.add_argument("--max-texts", type=positive, default=256, help="texts per request (default 256)")
    p.add_argument("--max-chars", type=positive, default=20_000, help="characters per text (default 20000)")
    p.add_argument("--max-body-bytes", type=positive, default=1 << 20, help="request body size (default 1 MiB)")
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
        type=positive,
        default=1,
        help="server processes sharing the port, each with its own copy of the model (default 1)",
    )
    p.add_argument(
        "--log-level",
        choices=("critical", "error", "warning", "info", "debug"),
        default="info",
        help="uvicorn's log level (default info)",
    )
    return p


def run(args: argparse.Namespace) -> int:
    from textclf import serve
    from textclf.artifacts import setup_logging

    setup_logging()
    limits = serve.Limits(
        max_body_bytes=args.max_body_bytes,
        max_texts=args.max_texts,
        max_chars=args.max_chars,
        body_timeout_s=args.body_timeout,
        concurrency=args.concurrency,
    )
    predictor = load_predictor(args, threads=1)  # one thread per request: they run side by side
    metrics = Path(args.metrics) if args.metrics else None
    if args.workers > 1:  # the bundle was checked above; each worker process loads its own
        spec = {
            "bundle": str(Path(args.bundle).resolve()),
            "runtime": args.runtime,
            "onnx": str(Path(args.onnx).resolve()) if args.onnx else None,
            "batch_size": args.batch_size,
            "metrics": str(metrics.resolve()) if metrics else None,
            "limits": dataclasses.asdict(limits),
        }
        serve.run_workers(spec, args.workers, host=args.host, port=args.port, log_level=args.log_level)
        return 0
    serve.run(predictor, host=args.host, port=args.port, limits=limits, metrics_path=metrics, log_level=args.log_level)
    return 0
