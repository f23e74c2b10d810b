"""`textclf serve`: the FastAPI app over real HTTP on 127.0.0.1 (uvicorn in a thread, on a port
the OS picked), and the command itself in a subprocess."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import httpx
import pytest
import uvicorn

from stages.bundle import load_bundle
from stages.export import bundle_digest
from tests.fixtures import ROOT
from tests.textclf.test_predict import build_pipeline
from textclf.cli import main
from textclf.predict import Predictor
from textclf.serve import Limits, create_app, server_config

LIMITS = Limits(max_body_bytes=4096, max_texts=8, max_chars=200)
METRICS = {"test": {"accuracy": 0.91, "macro_f1": 0.9}, "baseline": {"accuracy": 0.8, "macro_f1": 0.79}}


@contextmanager
def serving(app, timeout: float = 20.0):
    """uvicorn serving `app` on 127.0.0.1 in a thread; stopped (and joined) on exit."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(server_config(app, "127.0.0.1", port, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + timeout
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()
        assert not thread.is_alive(), "the test server did not stop"


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    return build_pipeline(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def predictor(pipe):
    return Predictor(pipe.bundle)


@pytest.fixture(scope="module")
def url(predictor, tmp_path_factory):
    metrics = tmp_path_factory.mktemp("reports") / "metrics.json"
    metrics.write_text(json.dumps(METRICS), encoding="utf-8")
    with serving(create_app(predictor, LIMITS, metrics)) as base:
        yield base


@pytest.fixture()
def client(url):
    with httpx.Client(base_url=url, timeout=20) as c:
        yield c


def assert_error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["error"] == code and body["detail"]
    return body


def test_health_and_metadata(client, pipe):
    assert client.get("/health").json() == {"status": "ok"}
    meta = client.get("/metadata").json()
    bundle = load_bundle(pipe.bundle)
    assert meta["labels"] == ["neg", "pos"]
    assert meta["bundle"]["sha256"] == bundle_digest(bundle)
    assert meta["training"]["date"] == bundle.config["created"]
    assert meta["training"]["best_epoch"] == bundle.config["training"]["best_epoch"]
    assert meta["metrics"] == METRICS
    assert meta["limits"] == {"max_body_bytes": 4096, "max_texts": 8, "max_chars": 200}
    assert meta["model"] == {"type": "bag", "runtime": "torch", "onnx": None, "onnx_variant": None}


def test_predict_in_order(client, predictor):
    texts = ["房间很好，喜欢！", "手机很差，失望，退货", "<b>book</b> 不错 http://x.cn"]
    r = client.post("/predict", json={"texts": texts})
    assert r.status_code == 200, r.text
    assert r.json() == {"predictions": predictor.predict(texts)}
    assert [p["label"] for p in r.json()["predictions"][:2]] == ["pos", "neg"]


@pytest.mark.parametrize("body, status, code", [
    (b'{"texts": ["ok", ', 422, "invalid_json"),
    (b"\xff\xfe not json", 422, "invalid_json"),
    (b'{"texts": ["fine", ""]}', 422, "empty_text"),
    (b'{"texts": ["   \\t"]}', 422, "empty_text"),
    (b'{"texts": []}', 422, "empty_batch"),
    (b'{"texts": "one string"}', 422, "invalid_request"),
    (b'{"texts": ["ok", 3]}', 422, "invalid_request"),
    (b'{"texts": ["ok", null]}', 422, "invalid_request"),
    (b'{"text": ["ok"]}', 422, "invalid_request"),
    (b'["ok"]', 422, "invalid_request"),
    (json.dumps({"texts": ["好"] * 9}).encode(), 413, "too_many_texts"),
    (json.dumps({"texts": ["ok", "好" * 201]}).encode(), 413, "text_too_long"),
    (json.dumps({"texts": ["好" * 150] * 8}).encode(), 413, "body_too_large"),
])
def test_bad_requests_get_json_errors_and_the_server_stays_up(client, body, status, code):
    assert_error(client.post("/predict", content=body, headers={"content-type": "application/json"}), status, code)
    assert client.get("/health").status_code == 200


def test_oversized_body_without_content_length_is_cut_off(client):
    def chunks():  # chunked transfer: the limit is enforced on the bytes as they arrive
        yield b'{"texts": ["'
        for _ in range(8):
            yield b"a" * 1000
        yield b'"]}'

    assert_error(client.post("/predict", content=chunks(), headers={"content-type": "application/json"}),
                 413, "body_too_large")
    assert client.post("/predict", json={"texts": ["ok"]}).status_code == 200


def test_unknown_routes_and_methods(client):
    assert_error(client.get("/nope"), 404, "not_found")
    assert_error(client.get("/predict"), 405, "method_not_allowed")


def test_an_unexpected_failure_is_a_500_and_the_server_keeps_serving(client, predictor, monkeypatch):
    real = predictor.predict

    def flaky(texts, *a, **k):
        if "boom" in texts:
            raise RuntimeError("boom")
        return real(texts, *a, **k)

    monkeypatch.setattr(predictor, "predict", flaky)
    assert_error(client.post("/predict", json={"texts": ["boom"]}), 500, "internal_error")
    assert client.post("/predict", json={"texts": ["好"]}).status_code == 200


def test_concurrent_requests(url, predictor):
    batches = [[f"房间{'很好' if i % 2 else '很差'} {i}", "退货 失望", "喜欢"][: 1 + i % 3] for i in range(48)]
    expected = [predictor.predict(b) for b in batches]

    def call(texts):
        with httpx.Client(base_url=url, timeout=30) as c:
            return c.post("/predict", json={"texts": texts})

    with ThreadPoolExecutor(max_workers=12) as pool:
        responses = list(pool.map(call, batches))
    assert [r.status_code for r in responses] == [200] * len(batches)
    assert [r.json()["predictions"] for r in responses] == expected


def test_serve_command_refuses_a_missing_bundle(tmp_path, capsys):
    assert main(["serve", "--bundle", str(tmp_path / "none"), "--port", "1"]) == 2
    assert "no model bundle here" in capsys.readouterr().err


def test_serve_command_end_to_end(pipe):
    """`textclf serve` as a user starts it: binds 127.0.0.1 by default and answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "textclf.cli", "serve", "--bundle", str(pipe.bundle),
                             "--port", str(port), "--log-level", "warning"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"server did not come up: {proc.communicate(timeout=5)}") from None
                time.sleep(0.2)
        assert r.json() == {"status": "ok"}
        r = httpx.post(f"http://127.0.0.1:{port}/predict", json={"texts": ["房间很好"]}, timeout=10)
        assert r.status_code == 200 and r.json()["predictions"][0]["label"] in ("neg", "pos")
        meta = httpx.get(f"http://127.0.0.1:{port}/metadata", timeout=10).json()
        assert meta["limits"] == {"max_body_bytes": 1 << 20, "max_texts": 256, "max_chars": 20_000}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
