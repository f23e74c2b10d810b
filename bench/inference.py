"""Benchmark: inference on the test split — torch eager, ONNX Runtime fp32, ONNX Runtime int8
(and fastText when the `fasttext` package is importable) on the same documents.

For every runtime:
  end-to-end batch throughput  all test documents in one `Predictor.predict_proba` call, raw text
                               → probabilities (normalise, clean, encode, model), docs/s, best of
                               --repeat runs;
  model-only batch throughput  the encoded ids → probabilities, docs/s (what fastText's predict on
                               pre-tokenised text compares to);
  single-document latency      one document per call, end to end, p50 / p99 over --single documents.
Then the ratios between runtimes, agreement of their labels with torch, and the issue's targets
(single-document p50 ≤ 1 ms; ONNX batch throughput ≥ fastText's).

The ONNX graphs are read from --onnx-dir (`dvc repro export` writes models/onnx/) if they were
exported from this bundle; otherwise they are exported into a temporary directory for this run.

    .venv/bin/python bench/inference.py [--bundle models/classifier] [--onnx-dir models/onnx]
        [--test data/processed/test.parquet] [--train data/processed/train.parquet]
        [--single 500] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from textclf.artifacts import arrow_values, read_parquet
from textclf.bundle import BundleError, load_bundle  # noqa: E402
from textclf.errors import InputError
from textclf.onnx import export
from textclf.onnx_runtime import FP32, INT8, OnnxClassifier
from textclf.predict import Predictor  # noqa: E402


def best_time(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def latencies(fn, items) -> np.ndarray:
    out = np.empty(len(items))
    for i, item in enumerate(items):
        t0 = time.perf_counter()
        fn(item)
        out[i] = time.perf_counter() - t0
    return out * 1e3  # ms


def onnx_graphs(bundle, onnx_dir: Path, test) -> tuple[Path, str]:
    try:
        for name in (FP32, INT8):
            OnnxClassifier(onnx_dir / name, bundle)
        return onnx_dir, f"ONNX graphs from {onnx_dir}"
    except BundleError as err:
        tmp = Path(tempfile.mkdtemp(prefix="textclf-bench-onnx-"))
        export(
            bundle,
            arrow_values(test["tokens"]),
            test["label"].to_numpy(dtype=object),
            tmp,
        )
        return tmp, f"ONNX graphs exported for this run into {tmp} ({err})"


def bench_predictor(name: str, predictor: Predictor, texts: list[str], single: list[str], repeat: int) -> dict:
    predictor.predict_proba(texts[:64])  # warm-up: caches, thread pools, first-call allocations
    for t in single[:20]:
        predictor.predict_proba([t])
    e2e = best_time(lambda: predictor.predict_proba(texts), repeat)
    ids, offsets = predictor.encode(texts)
    if predictor.onnx is not None:

        def model_only():
            return predictor.onnx.proba(ids, offsets, predictor.batch_size)
    else:
        from textclf.model import predict_proba

        ids_t, off_t = torch.from_numpy(ids), torch.from_numpy(offsets)

        def model_only():
            return predict_proba(predictor.model, ids_t, off_t, predictor.batch_size)

    model = best_time(model_only, repeat)
    lat = latencies(lambda t: predictor.predict_proba([t]), single)
    return {
        "name": name,
        "batch": len(texts) / e2e,
        "model": len(texts) / model,
        "p50": float(np.percentile(lat, 50)),
        "p99": float(np.percentile(lat, 99)),
        "labels": predictor.predict_proba(texts).argmax(1),
    }


def bench_fasttext(train_path: Path, test_tokens, single_n: int, repeat: int) -> dict | None:
    """fastText trained on the same tokens (10 epochs, word bigrams), predict timed on the test
    split's tokens joined by spaces (its input format: cleaning is not included)."""
    try:
        import fasttext
    except ImportError:
        return None
    train = read_parquet(train_path, columns=["label", "tokens"])
    with tempfile.NamedTemporaryFile("w", suffix=".txt", encoding="utf-8", delete=False) as f:
        for label, toks in zip(train["label"], arrow_values(train["tokens"]).to_pylist(), strict=True):
            f.write(f"__label__{label} {' '.join(toks)}\n")
    model = fasttext.train_supervised(f.name, epoch=10, wordNgrams=2, dim=100, thread=os.cpu_count() or 1, verbose=0)
    os.unlink(f.name)
    lines = [" ".join(t) for t in test_tokens.to_pylist()]
    # fastText's Python wrapper calls np.array(..., copy=False), which NumPy 2 refuses; its C++
    # binding (`model.f`) is what the wrapper calls, without that conversion.
    batch = best_time(lambda: model.f.multilinePredict(lines, -1, 0.0, "strict"), repeat)
    lat = latencies(lambda s: model.f.predict(s, -1, 0.0, "strict"), lines[:single_n])
    return {
        "name": "fastText",
        "batch": len(lines) / batch,
        "model": len(lines) / batch,
        "p50": float(np.percentile(lat, 50)),
        "p99": float(np.percentile(lat, 99)),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", default="models/classifier")
    ap.add_argument("--onnx-dir", default="models/onnx")
    ap.add_argument("--test", default="data/processed/test.parquet")
    ap.add_argument("--train", default="data/processed/train.parquet", help="fastText's training data")
    ap.add_argument("--single", type=int, default=500, help="documents timed one at a time")
    ap.add_argument("--repeat", type=int, default=3, help="batch runs (the best counts)")
    ap.add_argument(
        "--threads",
        type=int,
        default=0,
        help="intra-op threads for torch and ONNX Runtime (default 0: each library's default)",
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    try:
        bundle = load_bundle(args.bundle)
        test = read_parquet(args.test, columns=["text", "label", "tokens"])
    except InputError as err:  # BundleError is one
        print(f"bench/inference.py: {err}", file=sys.stderr)
        return 2
    texts = test["text"].tolist()
    single = texts[: args.single]
    onnx_dir, onnx_note = onnx_graphs(bundle, Path(args.onnx_dir), test)
    cfg = bundle.model_config
    print(
        f"inference benchmark: {len(texts)} test documents (mean {np.mean([len(t) for t in texts]):.0f} chars), "
        f"bundle {args.bundle} ({cfg.type}, {cfg.num_embeddings:,} ids"
        f"{f' x {cfg.embed_dim} embeddings' if cfg.embed_dim else ''}), "
        f"{os.cpu_count()} CPUs, torch {torch.get_num_threads()} threads, "
        f"ONNX Runtime {args.threads or 'default'} threads, load average {os.getloadavg()[0]:.1f}"
    )
    print(onnx_note)

    torch_p = Predictor(bundle)
    pre = best_time(lambda: torch_p.encode(texts), args.repeat)
    pre_lat = latencies(lambda t: torch_p.encode([t]), single)
    print(
        f"{'preprocessing':<14} normalise+clean+encode: {len(texts) / pre:>9,.0f} docs/s | single p50 "
        f"{np.percentile(pre_lat, 50):.3f} ms  p99 {np.percentile(pre_lat, 99):.3f} ms"
    )

    results = [
        bench_predictor("torch eager", torch_p, texts, single, args.repeat),
        bench_predictor(
            "onnx fp32",
            Predictor(bundle, "onnx", onnx_dir / FP32, threads=args.threads),
            texts,
            single,
            args.repeat,
        ),
        bench_predictor(
            "onnx int8",
            Predictor(bundle, "onnx", onnx_dir / INT8, threads=args.threads),
            texts,
            single,
            args.repeat,
        ),
    ]
    for r in results:
        print(
            f"{r['name']:<14} batch end-to-end {r['batch']:>9,.0f} docs/s | model only {r['model']:>9,.0f} docs/s"
            f" | single p50 {r['p50']:.3f} ms  p99 {r['p99']:.3f} ms"
        )
    ft = bench_fasttext(Path(args.train), arrow_values(test["tokens"]), args.single, args.repeat)
    if ft is None:
        print("fastText: not installed")
    else:
        print(
            f"{'fastText':<14} predict (pre-tokenised) {ft['batch']:>9,.0f} docs/s"
            f" | single p50 {ft['p50']:.3f} ms  p99 {ft['p99']:.3f} ms"
        )

    torch_r, fp32, int8 = results
    print("ratios:")
    for a, b in ((fp32, torch_r), (int8, torch_r), (int8, fp32)):
        print(
            f"  {a['name']} / {b['name']}: batch end-to-end {a['batch'] / b['batch']:.2f}x, model only "
            f"{a['model'] / b['model']:.2f}x, single p50 latency {a['p50'] / b['p50']:.2f}x"
        )
    if ft is not None:
        for a in (fp32, int8):
            print(
                f"  {a['name']} / fastText: model-only batch {a['model'] / ft['batch']:.2f}x, "
                f"single p50 latency {a['p50'] / ft['p50']:.2f}x (ours includes cleaning)"
            )
    for r in (fp32, int8):
        print(f"agreement with torch: {r['name']} labels {np.mean(r['labels'] == torch_r['labels']):.2%}")
    print("targets:")
    for r in results:
        print(
            f"  single-document p50 <= 1 ms: {r['name']} {r['p50']:.3f} ms ({'met' if r['p50'] <= 1.0 else 'NOT met'})"
        )
    if ft is None:
        print("  ONNX batch throughput >= fastText: not measured (fastText not installed)")
    else:
        print(
            f"  ONNX batch throughput >= fastText: fp32 model only {fp32['model']:,.0f} vs {ft['batch']:,.0f} docs/s "
            f"({'met' if fp32['model'] >= ft['batch'] else 'NOT met'})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
