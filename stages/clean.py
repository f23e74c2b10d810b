"""clean: documents → data/interim/clean.parquet (+ rejected_clean.parquet, reports/data/clean.json).

Strips HTML, replaces URLs/e-mails with placeholder tokens, lowercases, removes punctuation and
digits, tokenises and removes stopwords — all in `stages.text.clean_batch`, the same function
prediction uses. Documents with no token left are quarantined as `empty_after_cleaning`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from stages import schemas
from stages.artifacts import read_parquet, run_main, write_json, write_parquet
from stages.params import CleanParams, load_params
from stages.text import clean_batch, load_stopwords

log = logging.getLogger("textclf.clean")

DOCUMENTS = Path("data/interim/documents.parquet")
CLEAN = Path("data/interim/clean.parquet")
REJECTED = Path("data/interim/rejected_clean.parquet")
STATS = Path("reports/data/clean.json")


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
    rejected = pd.DataFrame({
        "record": gone["text"].to_numpy(dtype=object),
        "source": gone["source"].to_numpy(dtype=object),
        "line": pd.array(gone["line"], dtype="Int64"),
        "reason": np.full(len(gone), "empty_after_cleaning", dtype=object),
        "label": gone["label"].to_numpy(dtype=object),
    })
    kept_len = lengths[~empty]
    stats = {
        "read": int(len(documents)),
        "kept": int(len(out)),
        "quarantined": int(empty.sum()),
        "by_reason": {"empty_after_cleaning": int(empty.sum())},
        "tokens": int(kept_len.sum()),
        "tokens_per_doc": {"mean": round(float(kept_len.mean()), 2) if len(kept_len) else 0.0,
                           "p50": float(np.percentile(kept_len, 50)) if len(kept_len) else 0.0,
                           "p99": float(np.percentile(kept_len, 99)) if len(kept_len) else 0.0,
                           "max": int(kept_len.max()) if len(kept_len) else 0},
    }
    return CleanResult(out, rejected, stats)


def main() -> None:
    def body():
        params = load_params("clean")
        try:
            stopwords = load_stopwords(params)
        except FileNotFoundError as err:
            from stages.artifacts import InputError
            raise InputError(str(err)) from None
        result = clean(read_parquet(DOCUMENTS), params, stopwords)
        out = schemas.validate(result.clean, schemas.Clean, "clean", str(CLEAN))
        rejected = schemas.validate(result.rejected, schemas.Rejected, "clean", str(REJECTED))
        write_parquet(out, CLEAN)
        write_parquet(rejected, REJECTED)
        write_json(result.stats, STATS)
        log.info("cleaned %d documents: kept %d, quarantined %d (empty after cleaning), %d tokens",
                 result.stats["read"], result.stats["kept"], result.stats["quarantined"], result.stats["tokens"])

    run_main("clean", body)


if __name__ == "__main__":
    main()
