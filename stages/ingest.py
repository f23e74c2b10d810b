"""ingest: raw sources → data/interim/documents.parquet (+ rejected_ingest.parquet, ingest.json).

Every record read is accounted for: it becomes a document, collapses into an identical document
with the same label (a duplicate), or is quarantined with a reason — and
`read = kept + duplicates + quarantined` holds in reports/data/ingest.json.
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
from stages.artifacts import run_main, write_json, write_parquet
from stages.params import IngestParams, load_params
from stages.sources import SPLIT_DIRS, read_records
from stages.text import hash64, normalize, to_hex

log = logging.getLogger("textclf.ingest")

DOCUMENTS = Path("data/interim/documents.parquet")
REJECTED = Path("data/interim/rejected_ingest.parquet")
STATS = Path("reports/data/ingest.json")
_SPLIT_RANK = {"train": 0, "valid": 1, "test": 2}


@dataclass(frozen=True)
class IngestResult:
    documents: pd.DataFrame
    rejected: pd.DataFrame
    stats: dict


def ingest(records: pd.DataFrame, params: IngestParams) -> IngestResult:
    """Record frame (stages.sources) → documents, rejected records, accounting."""
    n = len(records)
    reason = records["reason"].astype(object).to_numpy(copy=True)
    text = normalize(pa.array(records["text"].astype(object).where(records["text"].notna(), None),
                              type=pa.string()))
    text = pc.fill_null(text, "")

    def flag(mask: np.ndarray, why: str) -> None:
        reason[mask & pd.isna(reason)] = why

    flag(pc.equal(text, "").to_numpy(zero_copy_only=False), "empty")
    flag(pc.greater(pc.utf8_length(text), params.max_chars).to_numpy(zero_copy_only=False), "too_long")
    label = records["label"].astype(object).where(records["label"].notna(), None)
    label = pd.Series(pc.utf8_trim_whitespace(pa.array(label, type=pa.string())).to_pandas(), dtype=object)
    flag((label.isna() | (label == "")).to_numpy(), "missing_label")
    split = records["split"].astype(object).map(lambda s: s if s is None else SPLIT_DIRS.get(str(s).strip().lower(), "?"),
                                                na_action="ignore")
    flag((split == "?").to_numpy(), "invalid_split")

    doc_id = to_hex(hash64(text))
    ok = pd.isna(reason)
    # Label conflicts: the same normalised text with more than one label — every copy goes.
    cand = pd.DataFrame({"doc_id": doc_id[ok], "label": label[ok].to_numpy()})
    n_labels = cand.groupby("doc_id", sort=False)["label"].transform("nunique").to_numpy()
    conflict = np.zeros(n, dtype=bool)
    conflict[np.flatnonzero(ok)[n_labels > 1]] = True
    flag(conflict, "label_conflict")

    ok = pd.isna(reason)
    kept_idx = np.flatnonzero(ok)
    ids_ok = pd.Series(doc_id[kept_idx])
    dup = ids_ok.duplicated(keep="first").to_numpy()
    # Copies of one text from different predefined splits: the kept row takes the latest split
    # in train < valid < test, so a document the user put in test never trains the model.
    split_ok = split.iloc[kept_idx].map(_SPLIT_RANK)
    rank = split_ok.groupby(ids_ok.to_numpy(), sort=False).transform("max").to_numpy()
    split_conflicts = int((split_ok.groupby(ids_ok.to_numpy(), sort=False).nunique() > 1).sum())
    first = kept_idx[~dup]
    inv_rank = {v: k for k, v in _SPLIT_RANK.items()}
    docs = pd.DataFrame({
        "doc_id": doc_id[first],
        "text": np.asarray(text.take(pa.array(first)).to_pylist(), dtype=object),
        "label": label.iloc[first].to_numpy(),
        "source": records["source"].iloc[first].astype(str).to_numpy(),
        "line": records["line"].iloc[first].to_numpy(),
        "split": pd.Series(rank[~dup]).map(inv_rank).astype(object).where(lambda s: s.notna(), None).to_numpy(),
    })
    docs = _as_str_frame(docs, ["doc_id", "text", "label", "source", "split"])

    rej_idx = np.flatnonzero(~pd.isna(reason))
    rejected = pd.DataFrame({
        "record": records["text"].iloc[rej_idx].to_numpy(),
        "source": records["source"].iloc[rej_idx].astype(str).to_numpy(),
        "line": records["line"].iloc[rej_idx].to_numpy(),
        "reason": reason[rej_idx],
        "label": records["label"].iloc[rej_idx].to_numpy(),
    })
    rejected = _as_str_frame(rejected, ["record", "source", "reason", "label"])

    by_reason = {r: 0 for r in schemas.INGEST_REASONS}
    by_reason.update({str(k): int(v) for k, v in pd.Series(reason[rej_idx]).value_counts().items()})
    stats = {
        "read": int(n),
        "kept": int(len(docs)),
        "duplicates": int(dup.sum()),
        "quarantined": int(len(rejected)),
        "by_reason": by_reason,
        "by_label": {str(k): int(v) for k, v in docs["label"].value_counts().sort_index().items()},
        "predefined_split": {str(k): int(v) for k, v in docs["split"].value_counts().sort_index().items()},
        "split_conflicts": split_conflicts,
    }
    assert stats["read"] == stats["kept"] + stats["duplicates"] + stats["quarantined"]
    return IngestResult(docs, rejected, stats)


def _as_str_frame(df: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    for c in cols:
        df[c] = df[c].astype(object).where(df[c].notna(), None).astype("str") \
            if df[c].notna().all() else df[c].astype(object).where(df[c].notna(), None)
    df["line"] = pd.array(df["line"], dtype="Int64")
    return df


def main() -> None:
    def body():
        params = load_params("ingest")
        records = read_records(params)
        log.info("read %d records from %s", len(records), params.source)
        result = ingest(records, params)
        docs = schemas.validate(result.documents, schemas.Documents, "ingest", str(DOCUMENTS))
        rejected = schemas.validate(result.rejected, schemas.Rejected, "ingest", str(REJECTED))
        write_parquet(docs, DOCUMENTS)
        write_parquet(rejected, REJECTED)
        write_json(result.stats, STATS)
        s = result.stats
        log.info("read %d = kept %d + duplicates %d + quarantined %d", s["read"], s["kept"],
                 s["duplicates"], s["quarantined"])

    run_main("ingest", body)


if __name__ == "__main__":
    main()
