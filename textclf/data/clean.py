"""clean: documents → data/interim/clean.parquet (+ rejected_clean.parquet, reports/data/clean.json).

Strips HTML, replaces URLs/e-mails with placeholder tokens, lowercases, removes punctuation and
digits, tokenises and removes stopwords — all in `textclf.text.clean_batch`, the same function
prediction uses. Documents with no token left are quarantined as `empty_after_cleaning`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from textclf.artifacts import (
    map_batches,
    read_row_group,
)
from textclf.params import CleanParams
from textclf.text import clean_batch

log = logging.getLogger("textclf.clean")


@dataclass(frozen=True)
class CleanResult:
    clean: pd.DataFrame
    rejected: pd.DataFrame
    stats: dict


def clean(documents: pd.DataFrame, params: CleanParams, stopwords: frozenset[str]) -> CleanResult:
    tokens = clean_batch(documents["text"], params, stopwords)
    lengths = pc.list_value_length(tokens).to_numpy(zero_copy_only=False)
    empty = lengths == 0
    out = documents.loc[~empty].reset_index(drop=True)
    out["tokens"] = pd.Series(pd.arrays.ArrowExtensionArray(tokens.filter(pa.array(~empty))))
    gone = documents.loc[empty]
    rejected = pd.DataFrame(
        {
            "record": gone["text"].to_numpy(dtype=object),
            "source": gone["source"].to_numpy(dtype=object),
            "line": pd.array(gone["line"], dtype="Int64"),
            "reason": np.full(len(gone), "empty_after_cleaning", dtype=object),
            "label": gone["label"].to_numpy(dtype=object),
        }
    )
    stats = clean_stats(len(documents), lengths[~empty])
    return CleanResult(out, rejected, stats)


def clean_stats(read: int, kept_len: np.ndarray) -> dict:
    """clean.json from the number of documents read and the token counts of those kept (exact
    over all chunks: the lengths are 4 bytes a document)."""
    return {
        "read": int(read),
        "kept": int(len(kept_len)),
        "quarantined": int(read - len(kept_len)),
        "by_reason": {"empty_after_cleaning": int(read - len(kept_len))},
        "tokens": int(kept_len.sum()),
        "tokens_per_doc": {
            "mean": round(float(kept_len.mean()), 2) if len(kept_len) else 0.0,
            "p50": float(np.percentile(kept_len, 50)) if len(kept_len) else 0.0,
            "p99": float(np.percentile(kept_len, 99)) if len(kept_len) else 0.0,
            "max": int(kept_len.max()) if len(kept_len) else 0,
        },
    }


def clean_part(
    part: pd.DataFrame | tuple[str, int], params: CleanParams, stopwords: frozenset[str]
) -> tuple[CleanResult, np.ndarray]:
    """`clean` on one batch: a frame, or (Parquet path, row group) read where it runs (a Dask
    worker). Also returns the kept documents' token counts, for the stats."""
    if isinstance(part, tuple):
        part = read_row_group(*part)
    result = clean(part, params, stopwords)
    lengths = pc.list_value_length(pa.array(result.clean["tokens"])).to_numpy(zero_copy_only=False)
    return result, lengths.astype(np.int64)


def clean_chunked(
    parts: Iterable,
    params: CleanParams,
    stopwords: frozenset[str],
    write: Callable[[pd.DataFrame, pd.DataFrame], None],
    client=None,
) -> dict:
    """`clean` batch by batch (on the Dask cluster when `client` is given): each batch's output
    goes to `write(clean, rejected)` in order; returns the same stats as `clean`."""
    read, lengths = 0, []
    for result, kept_len in map_batches(clean_part, parts, client, params=params, stopwords=stopwords):
        write(result.clean, result.rejected)
        read += result.stats["read"]
        lengths.append(kept_len)
    return clean_stats(read, np.concatenate(lengths) if lengths else np.zeros(0, dtype=np.int64))
