"""Benchmark: `textclf serve` under load, against fastText behind the same FastAPI app.

Each server runs in its own process on 127.0.0.1: `textclf serve` itself (the command a user
types, torch and `--runtime onnx`), and fastText in `textclf.serve.create_app` with the same
limits and uvicorn settings (`--serve-fasttext`, below), fed textclf's cleaned tokens (the
features it was trained on). A client in this process keeps `clients` HTTP/1.1 keep-alive
connections busy for `seconds` with POST /predict of `batch` test documents each, and reports
requests/s, documents/s and the latency p50/p99 of a request. Client and server share this
machine's cores, as a sidecar would: the figures are for the pair.

    .venv/bin/python bench/serve_load.py [--bundle models/classifier] [--seconds 3] [--json out.json]

`bench/inference.py` runs it too (its `serve` section).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CLIENTS = (1, 8, 64)
BATCHES = (1, 32)


# ---------------------------------------------------------------------------------------------
# the fastText server: the same app, another predictor


class FastTextPredictor:
    """What `create_app` needs of a predictor (`predict`, `digest`, `metadata`), with fastText's
    model on textclf's cleaning of the text."""

    def __init__(self, model_path: str, bundle: str):
        import fasttext

        from textclf.predict import Predictor

        self.model = fasttext.load_model(model_path)
        self.cleaner = Predictor(bundle)
        self.labels = self.cleaner.labels
        self.digest = "fasttext:" + hashlib.sha256(Path(model_path).read_bytes()).hexdigest()[:16]

    def predict(self, texts: list[str], digits: int = 6) -> list[dict]:
        lines = [" ".join(t) for t in self.cleaner.tokenize(texts).to_pylist()]
        # the C++ binding: the Python wrapper's np.array(..., copy=False) fails under NumPy 2
        out = []
        for labels, probs in zip(*self.model.f.multilinePredict(lines, -1, 0.0, "strict"), strict=True):
            p = {lab.removeprefix("__label__"): round(float(q), digits) for lab, q in zip(labels, probs, strict=True)}
            full = {lab: p.get(lab, 0.0) for lab in self.labels}
            out.append({"label": max(full, key=full.get), "probabilities": full})
        return out

    def metadata(self) -> dict:
        return {"labels": self.labels, "bundle": {"sha256": self.digest}, "model": {"type": "fasttext"}}


def serve_fasttext(model_path: str, bundle: str, port: int) -> None:
    import uvicorn

    from textclf.serve import Limits, create_app, server_config

    app = create_app(FastTextPredictor(model_path, bundle), Limits(), metrics_path=None, run_path=None)
    uvicorn.Server(server_config(app, port=port, log_level="warning")).run()


def train_fasttext(train_path: Path, out: Path) -> Path:
    """fastText on the train split's tokens (10 epochs, word bigrams, dim 100), saved to `out`."""
    import fasttext

    from textclf.artifacts import arrow_values, read_parquet

    train = read_parquet(train_path, columns=["label", "tokens"])
    with tempfile.NamedTemporaryFile("w", suffix=".txt", encoding="utf-8", delete=False) as f:
        for label, toks in zip(train["label"], arrow_values(train["tokens"]).to_pylist(), strict=True):
            f.write(f"__label__{label} {' '.join(toks)}\n")
    model = fasttext.train_supervised(f.name, epoch=10, wordNgrams=2, dim=100, thread=os.cpu_count() or 1, verbose=0)
    os.unlink(f.name)
    model.save_model(str(out))
    return out


# ---------------------------------------------------------------------------------------------
# the client: raw HTTP/1.1 on asyncio streams (httpx would spend more CPU than the servers)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request_bytes(port: int, texts: list[str]) -> bytes:
    body = json.dumps({"texts": texts}, ensure_ascii=False).encode("utf-8")
    head = (
        f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("ascii") + body


async def _one(reader, writer, payload: bytes) -> int:
    writer.write(payload)
    await writer.drain()
    status = await reader.readline()
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    await reader.readexactly(length)
    return int(status.split()[1])


async def _load(port: int, payloads: list[bytes], clients: int, seconds: float, warmup: float) -> dict:
    latencies: list[float] = []
    errors = 0
    start = time.perf_counter()
    measure_from, stop = start + warmup, start + warmup + seconds

    async def client(k: int):
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        i = k
        try:
            while (now := time.perf_counter()) < stop:
                status = await _one(reader, writer, payloads[i % len(payloads)])
                i += clients
                if now >= measure_from:
                    latencies.append(time.perf_counter() - now)
                    errors += status != 200
        finally:
            writer.close()

    await asyncio.gather(*(client(k) for k in range(clients)))
    lat = np.array(latencies) * 1e3
    return {
        "requests": len(lat),
        "errors": errors,
        "requests_per_s": len(lat) / seconds,
        "p50_ms": float(np.percentile(lat, 50)) if len(lat) else None,
        "p99_ms": float(np.percentile(lat, 99)) if len(lat) else None,
    }


def load(port: int, texts: list[str], clients: int, batch: int, seconds: float, warmup: float = 0.5) -> dict:
    payloads = [request_bytes(port, texts[i : i + batch]) for i in range(0, len(texts) - batch + 1, batch)]
    out = asyncio.run(_load(port, payloads, clients, seconds, warmup))
    out["docs_per_s"] = out["requests_per_s"] * batch
    return out


def wait_ready(port: int, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"no server on port {port} after {timeout:.0f} s")


def servers(bundle: str, onnx: Path | None, fasttext_model: Path | None) -> dict[str, list[str]]:
    """name → the command that serves on {port}."""
    cli = [sys.executable, "-m", "textclf.cli", "serve", "--bundle", bundle, "--log-level", "warning"]
    out = {"textclf torch": cli}
    if onnx is not None and onnx.is_file():
        out["textclf onnx"] = [*cli, "--runtime", "onnx", "--onnx", str(onnx)]
    if fasttext_model is not None:
        out["fastText"] = [sys.executable, str(Path(__file__).resolve()), "--serve-fasttext", str(fasttext_model)]
    return out


def run_all(bundle: str, onnx: Path | None, fasttext_model: Path | None, texts: list[str], seconds: float) -> dict:
    results: dict[str, dict] = {}
    for name, cmd in servers(bundle, onnx, fasttext_model).items():
        port = free_port()
        argv = (
            [*cmd, "--port", str(port)]
            if "--serve-fasttext" not in cmd
            else [*cmd, "--bundle", bundle, "--port", str(port)]
        )
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            wait_ready(port, proc)
            results[name] = {f"c{c}_b{b}": load(port, texts, c, b, seconds) for b in BATCHES for c in CLIENTS}
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
    return results


def print_table(results: dict, out=None) -> None:
    out = out or sys.stdout
    print("serve under load (requests/s | docs/s | p50 / p99 ms per request):", file=out)
    for b in BATCHES:
        for c in CLIENTS:
            cells = []
            for name, r in results.items():
                x = r[f"c{c}_b{b}"]
                err = f", {x['errors']} errors" if x["errors"] else ""
                cells.append(
                    f"{name} {x['requests_per_s']:>7,.0f} | {x['docs_per_s']:>7,.0f} | "
                    f"{x['p50_ms']:.2f} / {x['p99_ms']:.2f}{err}"
                )
            print(f"  {c:>2} clients x {b:>2} docs: " + "   ".join(cells), file=out)
    if "fastText" in results:
        for name in results:
            if name == "fastText":
                continue
            ratios = [
                results[name][k]["docs_per_s"] / results["fastText"][k]["docs_per_s"] for k in results["fastText"]
            ]
            print(f"  {name} / fastText docs/s: {min(ratios):.2f}x .. {max(ratios):.2f}x over the six loads", file=out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", default="models/classifier")
    ap.add_argument("--onnx", default="models/onnx/model.onnx")
    ap.add_argument("--test", default="data/processed/test.parquet")
    ap.add_argument("--train", default="data/processed/train.parquet", help="fastText's training data")
    ap.add_argument("--seconds", type=float, default=3.0, help="measured seconds per load")
    ap.add_argument("--json", default=None, metavar="PATH", help="write the figures as JSON")
    ap.add_argument("--serve-fasttext", default=None, metavar="MODEL", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_fasttext:
        serve_fasttext(args.serve_fasttext, args.bundle, args.port)
        return 0
    from textclf.artifacts import read_parquet

    texts = read_parquet(args.test, columns=["text"])["text"].tolist()
    with tempfile.TemporaryDirectory() as tmp:
        try:
            ft = train_fasttext(Path(args.train), Path(tmp) / "fasttext.bin")
        except ImportError:
            ft = None
        results = run_all(args.bundle, Path(args.onnx), ft, texts, args.seconds)
    print_table(results)
    if args.json:
        Path(args.json).write_text(json.dumps({"serve": results}, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
