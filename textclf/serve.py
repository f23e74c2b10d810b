"""HTTP serving: a FastAPI app around one `Predictor`, run by uvicorn (`textclf serve`).

  POST /predict   {"texts": ["...", ...]} → {"predictions": [{"label", "probabilities"}, ...], "bundle": sha256}
  GET  /health    {"status": "ok"}                      liveness
  GET  /ready     {"status": "ready", "bundle": sha256}  readiness: the bundle is loaded
  GET  /metadata  labels, bundle hash and date, model, text settings, limits, evaluation metrics

Every error is JSON `{"error": <code>, "detail": <message>}`: 413 when a limit is exceeded (body
bytes — checked before the body is parsed —, number of texts, characters in one text *after*
NFKC normalisation, which can expand a character 18-fold, and characters in the whole batch
after it), 408 when the body does not arrive within `body_timeout_s`, 422 for a request that is
not `{"texts": [non-empty strings]}` (bad JSON, and text that is not valid Unicode such as a lone
surrogate, included), 404/405 for unknown routes, 500 (logged; the server and the client's
connection carry on) for anything unexpected.

Health, readiness and metadata are answered on the event loop and never wait behind
predictions; predictions run in worker threads, at most `concurrency` at a time (the others wait
their turn without holding a thread), with torch and ONNX Runtime at one thread each so that
concurrent requests do not oversubscribe the CPU. Binds 127.0.0.1 unless told otherwise: there
is no authentication.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import time
import unicodedata
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from textclf import paths
from textclf.predict import Predictor

log = logging.getLogger("textclf.serve")

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8000
METRICS = paths.METRICS
RUN = paths.RUN_METADATA  # when, where and with what the bundle was trained (not in the bundle)


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 1 << 20
    max_texts: int = 256
    max_chars: int = 20_000  # ingest.max_chars' default: longer documents never trained the model
    max_batch_chars: int = 1 << 20  # all texts of a request together, after normalisation
    body_timeout_s: float = 10.0  # the whole body must arrive within this
    concurrency: int = 0  # predictions at once (0: the CPU count, at most 8)

    def workers(self) -> int:
        return self.concurrency or max(1, min(8, os.cpu_count() or 1))


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    texts: list[str] = Field(description="the texts to classify, raw (cleaned here as in training)")


class Prediction(BaseModel):
    label: str = Field(description="the most likely label")
    probabilities: dict[str, float] = Field(description="every label's probability (they sum to 1)")


class PredictResponse(BaseModel):
    predictions: list[Prediction] = Field(description="one per text, in request order")
    bundle: str = Field(description="sha256 of the model bundle that answered (as in /ready and /metadata)")


class Health(BaseModel):
    status: Literal["ok"] = Field(description="the process answers (liveness)")


class Ready(BaseModel):
    status: Literal["ready"] = Field(description="the bundle is loaded and predictions are served")
    bundle: str = Field(description="sha256 of the loaded bundle")


class ErrorBody(BaseModel):
    """Every error the API answers has this body."""

    error: str = Field(description="a stable code, e.g. body_too_large, too_many_texts, invalid_json")
    detail: str = Field(description="what was wrong, in words")


ERRORS = {
    408: {"model": ErrorBody, "description": "the request body did not arrive in time (`body_timeout`)"},
    413: {
        "model": ErrorBody,
        "description": "a limit was exceeded: `body_too_large`, `too_many_texts`, `text_too_long`, `batch_too_long`",
    },
    422: {
        "model": ErrorBody,
        "description": 'not `{"texts": [non-empty strings]}`: `invalid_json`, `invalid_request`, `empty_batch`, '
        "`empty_text`, `invalid_text`",
    },
    500: {"model": ErrorBody, "description": "an unexpected error (`internal_error`, logged by the server)"},
}


class ApiError(Exception):
    def __init__(self, status: int, code: str, detail: str):
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


def _error(status: int, code: str, detail: str) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status)


class Guard:
    """ASGI middleware in front of the app. A request body over `max_bytes` is answered 413 before
    anything parses it — by its Content-Length, or, for a chunked body, as soon as the bytes read
    exceed it. An unexpected exception is logged and answered 500 here: past this point Starlette
    would re-raise it to uvicorn, which drops the client's keep-alive connection."""

    def __init__(self, app, max_bytes: int, timeout_s: float = 10.0):
        self.app, self.max_bytes, self.timeout_s = app, max_bytes, timeout_s

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_large = _error(413, "body_too_large", f"request body over {self.max_bytes} bytes")
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None:
            if not length.isdigit():
                return await _error(400, "bad_request", "invalid Content-Length")(scope, receive, send)
            if int(length) > self.max_bytes:
                return await too_large(scope, receive, send)
        body, more = bytearray(), True
        deadline = time.monotonic() + self.timeout_s
        while more:
            try:  # a client that trickles its body must not hold a connection forever
                message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                return await _error(
                    408,
                    "body_timeout",
                    f"the request body did not arrive within {self.timeout_s:g} s",
                )(scope, receive, send)
            if message["type"] == "http.disconnect":
                return None
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                return await too_large(scope, receive, send)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        started = False

        async def tracking_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            return await self.app(scope, replay, tracking_send)
        except Exception:
            log.exception("unexpected error on %s %s", scope.get("method"), scope.get("path"))
            if not started:
                await _error(500, "internal_error", "internal error (logged by the server)")(scope, replay, send)
            return None


def read_metrics(path: Path | None) -> dict | None:
    """A JSON report (reports/metrics.json, reports/train/run.json), or None when absent/unreadable."""
    if path is None or not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        log.warning("%s: not readable as JSON (%s); /metadata reports no metrics", path, err)
        return None


def create_app(
    predictor: Predictor,
    limits: Limits = Limits(),
    metrics_path: Path | None = METRICS,
    run_path: Path | None = RUN,
) -> FastAPI:
    app = FastAPI(title="textclf", summary="Text classification", version="1")
    metadata = {
        **predictor.metadata(),
        "limits": asdict(limits),
        "metrics": read_metrics(metrics_path),
        "metrics_source": str(metrics_path) if metrics_path else None,
    }
    run_info = read_metrics(run_path) or {}
    if run_info.get("created"):  # the bundle itself records no time (it must rebuild byte-identically)
        metadata["training"] = {
            **metadata["training"],
            "date": run_info.get("created"),
            "device": run_info.get("device"),
            "versions": run_info.get("versions"),
        }

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return _error(exc.status, exc.code, exc.detail)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return _error(422, "invalid_json", "the request body is not valid JSON")
        parts = []
        for e in errors[:5]:
            loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body")
            parts.append(f"{loc or 'body'}: {e.get('msg')}")
        return _error(422, "invalid_request", 'expected {"texts": [string, ...]}; ' + "; ".join(parts))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 400 and "parsing the body" in str(exc.detail):
            # FastAPI's answer to a body that is not even text (bad UTF-8): bad JSON like any other
            return _error(422, "invalid_json", "the request body is not valid JSON")
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error(exc.status_code, code, str(exc.detail))

    limiter = anyio.CapacityLimiter(limits.workers())
    ready = {"status": "ready", "bundle": predictor.digest}

    # async: answered on the event loop, never queued behind predictions in the thread pool
    @app.get("/health", response_model=Health, summary="liveness")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/ready", response_model=Ready, summary="readiness: the bundle is loaded")
    async def get_ready() -> dict:
        return ready

    @app.get("/metadata", summary="labels, bundle, model, text settings, limits, evaluation metrics")
    async def get_metadata() -> dict:
        return metadata

    @app.post("/predict", response_model=PredictResponse, responses=ERRORS, summary="classify texts")
    async def predict(request: PredictRequest) -> dict:
        texts = checked_texts(request.texts, limits)
        return await anyio.to_thread.run_sync(_predict, predictor, texts, limiter=limiter)

    app.add_middleware(Guard, max_bytes=limits.max_body_bytes, timeout_s=limits.body_timeout_s)
    return app


def _predict(predictor: Predictor, texts: list[str]) -> dict:
    return {"predictions": predictor.predict(texts), "bundle": predictor.digest}


def checked_texts(texts: list[str], limits: Limits) -> list[str]:
    """The request's texts, or an ApiError: counts first, then each text's length before and
    after NFKC normalisation (one character can become 18), then the batch's total after it —
    so a request never costs more than its limits allow. Text that is not valid Unicode (a lone
    surrogate, which JSON's \\ud800 escapes can carry) is a 422."""
    if not texts:
        raise ApiError(422, "empty_batch", "texts: give at least one text")
    if len(texts) > limits.max_texts:
        raise ApiError(413, "too_many_texts", f"{len(texts)} texts; at most {limits.max_texts} per request")
    long = [i for i, t in enumerate(texts) if len(t) > limits.max_chars]
    if long:
        raise ApiError(413, "text_too_long", f"texts {long[:10]} are over {limits.max_chars} characters")
    bad = []
    for i, t in enumerate(texts):
        try:
            t.encode("utf-8")
        except UnicodeEncodeError:
            bad.append(i)
    if bad:
        raise ApiError(422, "invalid_text", f"texts {bad[:10]} are not valid Unicode (a lone surrogate?)")
    total = 0
    for i, t in enumerate(texts):
        n = len(unicodedata.normalize("NFKC", t))
        if n > limits.max_chars:
            raise ApiError(
                413,
                "text_too_long",
                f"text {i} is {n} characters after normalisation (NFKC); at most {limits.max_chars}",
            )
        total += n
        if total > limits.max_batch_chars:
            raise ApiError(
                413,
                "batch_too_long",
                f"the texts are over {limits.max_batch_chars} characters together after normalisation (NFKC)",
            )
    blank = [i for i, t in enumerate(texts) if not t.strip()]
    if blank:
        raise ApiError(422, "empty_text", f"texts {blank[:10]} are empty or whitespace only")
    return texts


# uvicorn settings of every way we serve: idle keep-alive 5 s, 128 connections, no Server header
# limit_concurrency counts open connections, idle ones included: at 128, 128 sockets that sent
# nothing made every request, /health too, a 503 (tests/textclf/test_serve.py). The work is
# bounded by --concurrency (predictions at a time) and the body limits, not by this.
SERVER_OPTIONS = {"timeout_keep_alive": 5, "limit_concurrency": 512, "server_header": False}


def server_config(app, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, log_level: str = "info"):
    import uvicorn

    return uvicorn.Config(app, host=host, port=port, log_level=log_level, **SERVER_OPTIONS)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


WORKER_SPEC = "TEXTCLF_SERVE_WORKER"  # how `run_workers` hands each worker process its settings


def worker_app() -> FastAPI:
    """uvicorn's app factory in each `--workers` process: the bundle and limits from WORKER_SPEC."""
    import torch

    spec = json.loads(os.environ[WORKER_SPEC])
    torch.set_num_threads(1)
    predictor = Predictor(
        spec["bundle"],
        runtime=spec["runtime"],
        onnx_path=spec["onnx"],
        batch_size=spec["batch_size"],
        threads=1,
    )
    metrics = Path(spec["metrics"]) if spec["metrics"] else None
    return create_app(predictor, Limits(**spec["limits"]), metrics)


def run_workers(
    spec: dict,
    workers: int,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    log_level: str = "info",
) -> None:
    """Serve with `workers` processes on one socket (uvicorn's supervisor restarts a worker that
    dies); each loads the bundle itself. `spec`: bundle, runtime, onnx, batch_size, metrics,
    limits (a Limits as a dict)."""
    import uvicorn

    if not is_loopback(host):
        log.warning("binding %s: reachable from other machines, and there is no authentication", host)
    os.environ[WORKER_SPEC] = json.dumps(spec)
    uvicorn.run(
        "textclf.serve:worker_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        **SERVER_OPTIONS,
    )


def run(
    predictor: Predictor,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    limits: Limits = Limits(),
    metrics_path: Path | None = METRICS,
    log_level: str = "info",
) -> None:
    """Serve until interrupted (Ctrl-C / SIGTERM)."""
    import uvicorn

    if not is_loopback(host):
        log.warning("binding %s: reachable from other machines, and there is no authentication", host)
    import torch

    torch.set_num_threads(1)  # requests run side by side (Limits.concurrency): one thread each
    server = uvicorn.Server(server_config(create_app(predictor, limits, metrics_path), host, port, log_level))
    server.run()
    if not server.started:
        raise OSError(f"could not serve on {host}:{port} (see the log above)")
