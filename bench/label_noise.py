"""Planted label noise: how much of it the suspect-labels stage finds.

The corpus is built in memory from params.yaml (ingest → clean → split, `-S section.key=value`
overrides as in `dvc exp run -S`). `--flip` of the train split's documents (default 5 %) get a
different label at random; the labels stage's core (textclf.labels: out-of-fold TF-IDF + LR over
all splits, cleanlab's confident learning) then runs exactly as the stage would. Reported:

- recall: the share of the planted flips in the flagged set;
- precision: the share of flagged train documents that are planted flips. Real corpora carry
  their own label noise, which is flagged too, so this is also given excluding the documents
  flagged before anything was planted ("precision, new flags");
- the same figures for the reference in the same run: the simplest confident-learning rule,
  "flag a document when the out-of-fold model's top class is not its label", on the same
  probabilities.

    .venv/bin/python bench/label_noise.py
    .venv/bin/python bench/label_noise.py -S ingest.source=data/raw/r8.csv --flip 0.05
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flows.dvcops import params_overrides, validate_params  # noqa: E402
from textclf.data.clean import clean  # noqa: E402
from textclf.data.ingest import ingest  # noqa: E402
from textclf.data.split import split  # noqa: E402
from textclf.labels import find_suspects, out_of_fold_proba  # noqa: E402
from textclf.params import load_params  # noqa: E402
from textclf.sources import read_records  # noqa: E402
from textclf.text import load_stopwords  # noqa: E402


def corpus(overrides: list[str]) -> tuple[pd.DataFrame, object]:
    with params_overrides(Path.cwd(), overrides):
        validate_params(Path.cwd())
        p = {s: load_params(s) for s in ("ingest", "clean", "split", "labels")}
    docs = ingest(read_records(p["ingest"]), p["ingest"]).documents
    parts, _ = split(clean(docs, p["clean"], load_stopwords(p["clean"])).clean, p["split"])
    return pd.concat([parts[s] for s in ("train", "valid", "test")], ignore_index=True), p["labels"]


def plant(docs: pd.DataFrame, share: float, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Flip `share` of the train documents to another label chosen uniformly; returns the noisy
    frame and the flipped rows' mask."""
    rng = np.random.default_rng(seed)
    labels = np.array(sorted(set(docs["label"].tolist())), dtype=object)
    train = np.flatnonzero(docs["split"].to_numpy(dtype=object) == "train")
    chosen = rng.choice(train, size=round(share * len(train)), replace=False)
    y = docs["label"].to_numpy(dtype=object).copy()
    for i in chosen:
        others = labels[labels != y[i]]
        y[i] = others[rng.integers(len(others))]
    flipped = np.zeros(len(docs), dtype=bool)
    flipped[chosen] = True
    return docs.assign(label=pd.Series(y, dtype="str")), flipped


def scores(flagged: np.ndarray, flipped: np.ndarray, before: np.ndarray, train: np.ndarray) -> dict:
    f = flagged & train
    new = f & ~before
    return {
        "flagged (train)": int(f.sum()),
        "recall": (f & flipped).sum() / max(flipped.sum(), 1),
        "precision": (f & flipped).sum() / max(f.sum(), 1),
        "precision, new flags": (new & flipped).sum() / max(new.sum(), 1),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-S", "--set-param", action="append", default=[], metavar="section.key=value")
    ap.add_argument("--flip", type=float, default=0.05, help="share of train labels flipped (default 0.05)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs, {platform.machine()}", flush=True)
    docs, params = corpus(args.set_param)
    labels = sorted(set(docs["label"].tolist()))
    train = docs["split"].to_numpy(dtype=object) == "train"
    print(f"corpus: {len(docs):,} documents ({int(train.sum()):,} train), {len(labels)} classes; {params}")

    def flags(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, float]:
        t0 = time.perf_counter()
        proba = out_of_fold_proba(frame, labels, params)
        sus = find_suspects(frame, proba, labels)
        seconds = time.perf_counter() - t0
        flagged = docs["doc_id"].isin(set(sus["doc_id"].tolist())).to_numpy()
        y = np.array([labels.index(c) for c in frame["label"].tolist()])
        return flagged, proba.argmax(axis=1) != y, seconds

    before, before_argmax, s0 = flags(docs)
    print(f"before planting: {int((before & train).sum()):,} train documents flagged ({s0:.1f} s)")
    noisy, flipped = plant(docs, args.flip, args.seed)
    flagged, argmax, s1 = flags(noisy)
    print(f"planted: {int(flipped.sum()):,} flips ({args.flip:.0%} of train); labels stage core {s1:.1f} s")
    rows = {
        "cleanlab (the stage)": scores(flagged, flipped, before, train),
        "reference: argmax != label": scores(argmax, flipped, before_argmax, train),
    }
    table = pd.DataFrame(rows).T
    for c in ("recall", "precision", "precision, new flags"):
        table[c] = table[c].map(lambda v: f"{v:.3f}")
    print(table.to_string())


if __name__ == "__main__":
    main()
