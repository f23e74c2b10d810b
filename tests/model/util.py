"""Fixture data for model tests, built with the real data-half cores (no files, no DVC)."""

from __future__ import annotations

import pandas as pd

from tests.fixtures import make_docs
from textclf.data.clean import clean
from textclf.data.ingest import ingest
from textclf.data.split import split
from textclf.params import CleanParams, IngestParams, SplitParams
from textclf.text import load_stopwords


def records(docs: list[tuple[str, str]]) -> pd.DataFrame:
    n = len(docs)
    return pd.DataFrame(
        {
            "text": pd.Series([t for _, t in docs], dtype=object),
            "label": pd.Series([lab for lab, _ in docs], dtype=object),
            "split": pd.Series([None] * n, dtype=object),
            "source": pd.Series(["inline"] * n, dtype=object),
            "line": pd.array(range(1, n + 1), dtype="Int64"),
            "reason": pd.Series([None] * n, dtype=object),
        }
    )


def split_frames(docs=None, seed: int = 42):
    docs = docs if docs is not None else make_docs(800)
    got = ingest(records(docs), IngestParams(source="inline"))
    cp = CleanParams()
    cleaned = clean(got.documents, cp, load_stopwords(cp)).clean
    parts, _ = split(cleaned, SplitParams(seed=seed))
    return parts["train"], parts["valid"], parts["test"]
