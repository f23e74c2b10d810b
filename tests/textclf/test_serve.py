"""`textclf serve`: the FastAPI app over real HTTP on 127.0.0.1 (uvicorn in a thread, on a port
the OS picked), and the command itself in a subprocess."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.fixtures import ROOT
from tests.pipelines import LIMITS, build_pipeline, serving
from textclf.bundle import load_bundle
from textclf.cli import main
from textclf.onnx_runtime import bundle_digest
from textclf.predict import Predictor
from textclf.serve import Limits, create_app

METRICS = {
    "test": {"accuracy": 0.91, "macro_f1": 0.9},
    "baseline": {"accuracy": 0.8, "macro_f1": 0.79},
}
RUN = {"created": "2026-11-01T12:00:00+00:00", "device": "cpu", "versions": {"torch": "2.13.0"}}


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    return build_pipeline(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def predictor(pipe):
    return Predictor(pipe.bundle)


@pytest.fixture(scope="module")
def url(predictor, tmp_path_factory):
    reports = tmp_path_factory.mktemp("reports")
    metrics = reports / "metrics.json"
    metrics.write_text(json.dumps(METRICS), encoding="utf-8")
    (reports / "run.json").write_text(json.dumps(RUN), encoding="utf-8")
    with serving(create_app(predictor, LIMITS, metrics, reports / "run.json")) as base:
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
    assert meta["training"]["date"] == RUN["created"] and "created" not in bundle.config  # not in the hashed bundle
    assert meta["training"]["best_epoch"] == bundle.config["training"]["best_epoch"]
    assert meta["metrics"] == METRICS
    assert meta["limits"] == {
        "max_body_bytes": 4096,
        "max_texts": 8,
        "max_chars": 200,
        "max_batch_chars": 1 << 20,
        "body_timeout_s": 10.0,
        "concurrency": 0,
    }
    assert client.get("/ready").json() == {"status": "ready", "bundle": bundle_digest(bundle)}
    assert meta["model"] == {"type": "bag", "runtime": "torch", "onnx": None, "onnx_variant": None}


def test_predict_in_order(client, predictor):
    texts = ["房间很好，喜欢！", "手机很差，失望，退货", "<b>book</b> 不错 http://x.cn"]
    r = client.post("/predict", json={"texts": texts})
    assert r.status_code == 200, r.text
    assert r.json() == {"predictions": predictor.predict(texts), "bundle": predictor.digest}
    assert [p["label"] for p in r.json()["predictions"][:2]] == ["pos", "neg"]


def test_openapi_documents_typed_responses_and_error_bodies(client):
    spec = client.get("/openapi.json").json()
    post = spec["paths"]["/predict"]["post"]

    def ref(status):
        return post["responses"][status]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]

    assert ref("200") == "PredictResponse"
    assert {ref(s) for s in ("408", "413", "422", "500")} == {"ErrorBody"}
    schemas = spec["components"]["schemas"]
    assert "HTTPValidationError" not in schemas  # FastAPI's default 422 body is not what we send
    assert schemas["PredictResponse"]["required"] == ["predictions", "bundle"]
    item = schemas["Prediction"]["properties"]
    assert item["label"]["type"] == "string"
    assert item["probabilities"]["additionalProperties"]["type"] == "number"
    assert schemas["ErrorBody"]["required"] == ["error", "detail"]
    for path, model in (("/health", "Health"), ("/ready", "Ready")):
        got = spec["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
        assert got.endswith(model)
    # and the bodies the server sends match them
    bad = client.post("/predict", json={"texts": "not a list"})
    assert bad.status_code == 422 and set(bad.json()) == {"error", "detail"}


@pytest.mark.parametrize(
    "body, status, code",
    [
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
    ],
)
def test_bad_requests_get_json_errors_and_the_server_stays_up(client, body, status, code):
    assert_error(
        client.post("/predict", content=body, headers={"content-type": "application/json"}),
        status,
        code,
    )
    assert client.get("/health").status_code == 200


def test_a_lone_surrogate_is_a_422_not_a_500(client):
    for body in (b'{"texts": ["\\ud800"]}', b'{"texts": ["ok", "a\\udfffb"]}'):
        assert_error(
            client.post("/predict", content=body, headers={"content-type": "application/json"}),
            422,
            "invalid_text",
        )
    assert client.post("/predict", json={"texts": ["\U0001f600 好"]}).status_code == 200  # a real pair is fine


def test_the_length_limit_applies_after_normalisation(client):
    """U+FDFA becomes 18 characters under NFKC: 12 of them are 216 after it (limit 200)."""
    body = json.dumps({"texts": ["\ufdfa" * 12]}).encode()
    assert len(body) < 4096
    r = assert_error(
        client.post("/predict", content=body, headers={"content-type": "application/json"}),
        413,
        "text_too_long",
    )
    assert "after normalisation" in r["detail"]
    assert client.post("/predict", json={"texts": ["\ufdfa" * 11]}).status_code == 200  # 198 after NFKC


def test_the_batch_limit_bounds_the_work_after_normalisation(predictor):
    from textclf.serve import ApiError, Limits, checked_texts

    limits = Limits(max_chars=20_000, max_batch_chars=100_000)
    texts = ["\ufdfa" * 1111] * 17  # 19,998 characters each after NFKC: under max_chars, 340k together
    with pytest.raises(ApiError) as err:
        checked_texts(texts, limits)
    assert err.value.status == 413 and err.value.code == "batch_too_long"


def test_a_body_that_trickles_in_gets_408_and_the_server_stays_up(predictor):
    app = create_app(predictor, Limits(max_body_bytes=4096, body_timeout_s=0.5), None)
    with serving(app) as base:
        host, port = base.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(
                b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b'Content-Length: 100\r\n\r\n{"texts": ['
            )
            t0 = time.monotonic()
            reply = b""
            while b"body_timeout" not in reply and time.monotonic() - t0 < 5:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                reply += chunk
            reply = reply.decode()
            assert time.monotonic() - t0 < 5
        assert reply.startswith("HTTP/1.1 408") and "body_timeout" in reply
        with httpx.Client(base_url=base, timeout=10) as c:
            assert c.get("/health").status_code == 200


def test_health_answers_within_a_second_while_64_predictions_are_in_flight(predictor, monkeypatch):
    """Predictions held in flight (0.5 s each, two at a time: the last ends after 16 s); /health,
    /ready and /metadata still answer within a second."""
    real = predictor.predict

    def slow(texts, *a, **k):
        time.sleep(0.5)
        return real(texts, *a, **k)

    monkeypatch.setattr(predictor, "predict", slow)
    app = create_app(predictor, Limits(concurrency=2), None)
    with serving(app) as base:

        def call(_):
            with httpx.Client(base_url=base, timeout=120) as c:
                return c.post("/predict", json={"texts": ["房间很好"]}).status_code

        with ThreadPoolExecutor(max_workers=64) as pool:
            futures = [pool.submit(call, i) for i in range(64)]
            time.sleep(1.0)  # let them arrive
            with httpx.Client(base_url=base, timeout=5) as c:
                for path in ("/health", "/ready", "/metadata"):
                    t0 = time.monotonic()
                    assert c.get(path).status_code == 200
                    assert time.monotonic() - t0 < 1.0, path
            in_flight = sum(not f.done() for f in futures)
            assert in_flight >= 48  # they really were waiting
            assert [f.result() for f in futures] == [200] * 64


def test_oversized_body_without_content_length_is_cut_off(client):
    def chunks():  # chunked transfer: the limit is enforced on the bytes as they arrive
        yield b'{"texts": ["'
        for _ in range(8):
            yield b"a" * 1000
        yield b'"]}'

    assert_error(
        client.post("/predict", content=chunks(), headers={"content-type": "application/json"}),
        413,
        "body_too_large",
    )
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
    """`textclf serve --workers 2` as a user starts it: binds 127.0.0.1 by default, runs two
    worker processes that each answer with the bundle and the command's limits, and SIGTERM
    stops them all."""
    import psutil

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "textclf.cli",
            "serve",
            "--bundle",
            str(pipe.bundle),
            "--port",
            str(port),
            "--workers",
            "2",
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    workers = []
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
        workers = [p for p in psutil.Process(proc.pid).children(recursive=True) if "python" in p.name().lower()]
        assert len(workers) >= 2, workers
        digest = bundle_digest(load_bundle(pipe.bundle))
        for _ in range(6):
            r = httpx.post(f"http://127.0.0.1:{port}/predict", json={"texts": ["房间很好"]}, timeout=10)
            assert r.status_code == 200 and r.json()["predictions"][0]["label"] in ("neg", "pos")
            assert r.json()["bundle"] == digest
        meta = httpx.get(f"http://127.0.0.1:{port}/metadata", timeout=10).json()
        assert meta["limits"] == {
            "max_body_bytes": 1 << 20,
            "max_texts": 256,
            "max_chars": 20_000,
            "max_batch_chars": 1 << 20,
            "body_timeout_s": 10.0,
            "concurrency": 0,
        }
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    _, alive = psutil.wait_procs(workers, timeout=20)
    assert not alive, [(p.pid, p.cmdline()) for p in alive]


def test_idle_connections_do_not_starve_health(predictor):
    """Issue 27: 128 sockets that connect and send nothing (or half a request line) must not hold
    the server: /health still answers 200, and promptly, with them all open."""
    with serving(create_app(predictor, LIMITS, None, None)) as base:
        port = int(base.rsplit(":", 1)[1])
        idle = []
        try:
            for i in range(128):
                s = socket.create_connection(("127.0.0.1", port), timeout=5)
                if i % 2:
                    s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\n")  # a request that never ends
                idle.append(s)
            t0 = time.monotonic()
            r = httpx.get(f"{base}/health", timeout=10)
            elapsed = time.monotonic() - t0
            assert r.status_code == 200 and r.json() == {"status": "ok"}
            assert elapsed < 2.0, elapsed  # 1 s is a liveness probe's default; margin for a loaded CI
        finally:
            for s in idle:
                s.close()
