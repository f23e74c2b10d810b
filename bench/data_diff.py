"""Benchmark: `textclf diff`'s core on two versions of a 1,000,000-document corpus.

Version A resamples the embedded sample corpus (`data/sample/reviews-zh`) to N documents; each copy gets
a unique suffix so that every document has its own doc_id, as distinct reviews would. Version B
removes, relabels and adds known numbers of documents (the added ones bring a few new words), and
quarantines a known number of extra records. Splits are assigned with the split stage's own
functions and the vocabularies are built with the vocab stage's, so both versions look like
pipeline outputs. Only `diff_snapshots` (the pure core, frames in, dict out) is timed; building the
versions is not. The script prints the time against the 30 s target (2 cores) and every count
against the known change; it exits 1 if a count is off.

    .venv/bin/python bench/data_diff.py [--docs 1000000] [--removed 20000] [--relabeled 10000]
                                        [--added 30000] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from textclf.artifacts import read_parquet, write_parquet  # noqa: E402
from textclf.data.split import assign, group_ids  # noqa: E402
from textclf.data.vocab import build_vocab, count_tokens  # noqa: E402
from textclf.diff.core import Snapshot, diff_snapshots
from textclf.diff.render import render_markdown, render_text
from textclf.params import CleanParams, SplitParams, VocabParams  # noqa: E402
from textclf.sources.records import read_line_file  # noqa: E402
from textclf.text import clean_batch, hash64, normalize, to_hex  # noqa: E402

QUARANTINE_A = {"empty": 1, "label_conflict": 237, "empty_after_cleaning": 12}
QUARANTINE_DELTA = {"empty": 5, "label_conflict": 100, "too_long": 3}


def sample_pool() -> tuple[pa.Array, np.ndarray, pa.ListArray]:
    """The sample's distinct non-empty texts, their labels, and their cleaned tokens."""
    sample = Path(__file__).resolve().parent.parent / "data/sample/reviews-zh"
    frames = [read_line_file(sample / f"{label}.txt", label, None, "auto") for label in ("pos", "neg")]
    records = pd.concat(frames, ignore_index=True)
    text = normalize(pa.array(records["text"].astype(object), type=pa.string()))
    df = pd.DataFrame({"text": text.to_numpy(zero_copy_only=False), "label": records["label"].to_numpy()})
    df = df[df["text"] != ""].drop_duplicates("text").reset_index(drop=True)
    texts = pa.array(df["text"], type=pa.string())
    tokens = clean_batch(texts, CleanParams())
    keep = pc.greater(pc.list_value_length(tokens), 0)
    return (
        texts.filter(keep),
        df["label"].to_numpy(dtype=object)[keep.to_numpy(zero_copy_only=False)],
        tokens.filter(keep),
    )


def make_docs(pool, idx: np.ndarray, serial: np.ndarray, new_words: pa.Array | None = None):
    """Documents drawn from the pool at `idx`, made unique by their serial number; `new_words`
    (one per document, may be null) is appended to both the text and the tokens."""
    texts, labels, tokens = pool
    take = pa.array(idx)
    text = pc.binary_join_element_wise(texts.take(take), pa.array(np.char.mod("#%d", serial)), " ")
    tok = tokens.take(take)
    if new_words is not None:  # a word the pool never had, as cleaning would leave it
        text = pc.binary_join_element_wise(text, pc.fill_null(new_words, ""), " ")
        has = new_words.is_valid().to_numpy(zero_copy_only=False)
        offsets = np.zeros(len(idx) + 1, dtype=np.int32)
        np.cumsum(has, out=offsets[1:])
        tok = _concat_lists(tok, pa.ListArray.from_arrays(pa.array(offsets), new_words.drop_null()))
    text = normalize(text)
    doc_id = to_hex(hash64(text))
    return pd.DataFrame({"doc_id": doc_id, "label": labels[idx], "text": text.to_numpy(zero_copy_only=False)}), tok


def _concat_lists(a: pa.ListArray, b: pa.ListArray) -> pa.ListArray:
    """Row-wise concatenation of two list arrays, vectorised."""
    la = pc.list_value_length(a).to_numpy(zero_copy_only=False)
    lb = pc.list_value_length(b).to_numpy(zero_copy_only=False)
    va, vb = pc.list_flatten(a), pc.list_flatten(b)
    parent_a = pc.list_parent_indices(a).to_numpy()
    parent_b = pc.list_parent_indices(b).to_numpy()
    order = np.argsort(np.concatenate([parent_a * 2, parent_b * 2 + 1]), kind="stable")
    values = pa.concat_arrays([va, vb]).take(pa.array(order))
    offsets = np.zeros(len(a) + 1, dtype=np.int32)
    np.cumsum(la + lb, out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), values)


def split_and_vocab(tokens: pa.ListArray, doc_id: np.ndarray):
    split = assign(group_ids(pd.Series(tokens, dtype=pd.ArrowDtype(tokens.type))).astype(object), SplitParams())
    train = pa.array(split == "train")
    vocab = build_vocab(count_tokens(tokens.filter(train), 1), VocabParams(min_freq=1, ngrams=1))
    test = tokens.filter(pa.array(split == "test"))
    return pd.DataFrame({"doc_id": doc_id, "split": split.astype(object)}), vocab, test


def quarantine(counts: dict[str, int]) -> pd.DataFrame:
    return pd.DataFrame({"reason": np.repeat(np.array(list(counts), dtype=object), list(counts.values()))})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, default=1_000_000)
    ap.add_argument("--removed", type=int, default=20_000)
    ap.add_argument("--relabeled", type=int, default=10_000)
    ap.add_argument("--added", type=int, default=30_000)
    ap.add_argument("--new-words", type=int, default=500, help="distinct new words in the added docs")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    n = args.docs

    t0 = time.perf_counter()
    pool = sample_pool()
    docs_a, tok_a = make_docs(pool, rng.integers(0, len(pool[0]), n), np.arange(n))
    # B: drop `removed` random documents, flip the label of `relabeled` others, add `added` new ones
    perm = rng.permutation(n)
    removed, relabeled = perm[: args.removed], perm[args.removed : args.removed + args.relabeled]
    keep = np.ones(n, dtype=bool)
    keep[removed] = False
    words = np.array(
        [f"zq{chr(97 + i % 26)}{chr(97 + i // 26 % 26)}{chr(97 + i // 676 % 26)}" for i in range(args.new_words)],
        dtype=object,
    )
    new_words = pa.array(
        np.where(rng.random(args.added) < 0.5, words[rng.integers(0, len(words), args.added)], None),
        type=pa.string(),
    )
    docs_new, tok_new = make_docs(
        pool, rng.integers(0, len(pool[0]), args.added), np.arange(n, n + args.added), new_words
    )
    docs_b = docs_a.copy()
    flip = {"pos": "neg", "neg": "pos"}
    docs_b.loc[relabeled, "label"] = docs_b.loc[relabeled, "label"].map(flip)
    docs_b = pd.concat([docs_b[keep], docs_new], ignore_index=True)
    tok_b = pa.concat_arrays([tok_a.filter(pa.array(keep)), tok_new])
    splits_a, vocab_a, _ = split_and_vocab(tok_a, docs_a["doc_id"].to_numpy())
    splits_b, vocab_b, test_b = split_and_vocab(tok_b, docs_b["doc_id"].to_numpy())
    quarantine_b = {
        r: QUARANTINE_A.get(r, 0) + QUARANTINE_DELTA.get(r, 0) for r in {**QUARANTINE_A, **QUARANTINE_DELTA}
    }
    a = Snapshot("v1", docs_a, splits_a, quarantine(QUARANTINE_A), vocab_a)
    b = Snapshot("v2", docs_b, splits_b, quarantine(quarantine_b), vocab_b, test_tokens=test_b)
    build_s = time.perf_counter() - t0

    # informative: reading one version's documents back from Parquet into frames (what the
    # command does per revision before the core runs)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "documents.parquet"
        write_parquet(docs_b, path)
        t = time.perf_counter()
        read_parquet(path, ["doc_id", "label", "text"])
        read_s = time.perf_counter() - t

    t = time.perf_counter()
    d = diff_snapshots(a, b)
    core_s = time.perf_counter() - t
    t = time.perf_counter()
    render_text(d), render_markdown(d)
    render_s = time.perf_counter() - t
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2

    # the known changes, from how B was made
    lab_a = docs_a["label"].to_numpy()
    known_labels = {}
    for lab in ("neg", "pos"):
        other = flip[lab]
        known_labels[lab] = int(
            (lab_a == lab).sum()
            - (lab_a[removed] == lab).sum()
            - (lab_a[relabeled] == lab).sum()
            + (lab_a[relabeled] == other).sum()
            + (docs_new["label"] == lab).sum()
        )
    va, vb = set(vocab_a["tokens"][2:]), set(vocab_b["tokens"][2:])
    checks = [
        ("documents added", d["documents"]["added"], args.added),
        ("documents removed", d["documents"]["removed"], args.removed),
        ("documents relabelled", d["documents"]["relabeled"], args.relabeled),
        ("documents unchanged", d["documents"]["unchanged"], n - args.removed - args.relabeled),
        *[(f"label {lab} at v2", d["labels"][lab]["b"], known_labels[lab]) for lab in known_labels],
        (
            "split entered (all splits)",
            sum(v["added"] for v in d["splits"]["counts"].values()),
            args.added,
        ),
        (
            "split left (all splits)",
            sum(v["removed"] for v in d["splits"]["counts"].values()),
            args.removed,
        ),
        ("documents that changed split", d["splits"]["moved"], 0),
        *[
            (
                f"quarantine {r} delta",
                d["quarantine"]["by_reason"][r]["delta"],
                QUARANTINE_DELTA.get(r, 0),
            )
            for r in sorted(quarantine_b)
        ],
        ("vocab tokens added", d["vocab"]["added"], len(vb - va)),
        ("vocab tokens dropped", d["vocab"]["dropped"], len(va - vb)),
    ]
    print(
        f"data_diff: {n:,} → {len(docs_b):,} documents (sample reviews-zh resampled, {len(pool[0]):,} "
        f"distinct texts; seed {args.seed}); built in {build_s:.1f} s on {os.cpu_count()} cores"
    )
    print(
        f"core diff: {core_s:.2f} s (target <= 30 s)  |  render text+md: {render_s:.3f} s  |  "
        f"read one documents.parquet: {read_s:.2f} s  |  peak RSS {rss_gb:.2f} GB"
    )
    ok = True
    for name, got, want in checks:
        ok &= got == want
        print(f"  {name:<38} {got:>10,}  expected {want:>10,}  {'ok' if got == want else 'MISMATCH'}")
    v = d["vocab"]
    print(
        f"  vocab {v['size_a']:,} → {v['size_b']:,}; OOV of v2 test under v1 vocab "
        f"{100 * v['oov_rate_test_b_under_a']:.3f}% (under v2's: {100 * v['oov_rate_test_b_under_b']:.3f}%)"
    )
    print(
        f"counts match the known changes: {'yes' if ok else 'NO'}; "
        f"within the 30 s target: {'yes' if core_s <= 30 else 'NO'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
