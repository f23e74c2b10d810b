"""Benchmark: the encoder family on CPU — embedding throughput against sentence-transformers'
`encode` (the same model folder, texts, threads and max_len, in one run), then, when a trained
encoder bundle is given, raw text → probabilities end to end in torch, ONNX fp32 and ONNX int8.

    make encoder && .venv/bin/python bench/encoder.py [--corpus tweets] [--docs 2000] [--max-len 128]
        [--threads 2] [--bundle models/classifier --onnx-dir models/onnx]

Both sides embed the same texts; their embeddings are compared (cosine) so a fast wrong answer
cannot pass. textclf: length-bucketed batches of --batch-tokens padded tokens, dynamic padding,
SDPA attention (textclf.families.encoder.embed); sentence-transformers: `encode(batch_size=...)`
with its own length sorting. Prints docs/s, tokens/s and the ratio (textclf / reference).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.corpora import load  # noqa: E402
from textclf.families import encoder as fam  # noqa: E402

DEFAULT_MODEL = Path("models/pretrained/all-MiniLM-L6-v2")


def timed(fn, repeat: int):
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--corpus", default="tweets")
    ap.add_argument("--docs", type=int, default=2000)
    ap.add_argument("--max-len", type=int, default=128)
    ap.add_argument("--batch-tokens", type=int, default=16384)
    ap.add_argument("--st-batch", type=int, default=64, help="sentence-transformers' batch_size")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--bundle", type=Path, default=None, help="a trained encoder bundle: end-to-end figures")
    ap.add_argument("--onnx-dir", type=Path, default=Path("models/onnx"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    df = load(args.corpus)
    df = df[df["text"].str.strip() != ""].sample(min(args.docs, len(df)), random_state=0)
    texts = df["text"].tolist()
    source = fam.load_source(args.model)
    encoder = fam.load_encoder(source)
    tok = fam.TextTokenizer(source.tokenizer, args.max_len)
    tokens = sum(len(x) for x in tok(texts))
    print(
        f"{len(texts)} {args.corpus} documents, {tokens} encoder tokens (max_len {args.max_len}), "
        f"{args.threads} threads, torch {torch.__version__}"
    )

    t_ours, ours = timed(lambda: fam.embed(encoder, tok, texts, args.batch_tokens), args.repeat)

    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(args.model), device="cpu")
    st.max_seq_length = args.max_len
    t_ref, ref = timed(
        lambda: st.encode(texts, batch_size=args.st_batch, convert_to_numpy=True, show_progress_bar=False),
        args.repeat,
    )
    cos = (ours * ref).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(ref, axis=1))
    print(f"{'':28s} {'docs/s':>9s} {'tokens/s':>10s}")
    print(f"{'textclf embed':28s} {len(texts) / t_ours:9.1f} {tokens / t_ours:10.0f}")
    print(f"{'sentence-transformers':28s} {len(texts) / t_ref:9.1f} {tokens / t_ref:10.0f}")
    print(
        f"ratio textclf / sentence-transformers: {t_ref / t_ours:.2f}x "
        f"(cosine of the embeddings: min {cos.min():.5f}, mean {cos.mean():.6f})"
    )

    if args.bundle is None:
        return
    from textclf.bundle import load_bundle
    from textclf.onnx_runtime import FP32, INT8
    from textclf.predict import Predictor

    bundle = load_bundle(args.bundle)
    if bundle.config["model"].get("type") != "encoder":
        sys.exit(f"{args.bundle} is a {bundle.config['model'].get('type')} bundle, not an encoder one")
    runs = {"torch": Predictor(bundle)}
    for name, file in (("onnx fp32", FP32), ("onnx int8", INT8)):
        if (args.onnx_dir / file).is_file():
            runs[name] = Predictor(bundle, runtime="onnx", onnx_path=args.onnx_dir / file, threads=args.threads)
    base = None
    print(f"\nend to end, raw text -> probabilities ({len(texts)} documents, one call):")
    for name, pred in runs.items():
        t, probs = timed(lambda pred=pred: pred.predict_proba(texts), args.repeat)
        if base is None:
            base, t_base = probs, t
        agree = float((probs.argmax(1) == base.argmax(1)).mean())
        one = [time.perf_counter()]
        for text in texts[:200]:
            pred.predict_proba([text])
            one.append(time.perf_counter())
        lat = np.diff(one) * 1e3
        print(
            f"  {name:10s} {len(texts) / t:8.1f} docs/s  ({t_base / t:.2f}x torch; labels agree {agree:.4f}; "
            f"single document p50 {np.percentile(lat, 50):.1f} ms, p99 {np.percentile(lat, 99):.1f} ms)"
        )


if __name__ == "__main__":
    main()
