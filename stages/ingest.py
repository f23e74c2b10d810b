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
from stages.text import hash64, hex_array, normalize

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
    reason = records["reason"].to_numpy(dtype=object, na_value=None).copy()
    text = pc.fill_null(normalize(_strings(records["text"])), "")

    def flag(mask: np.ndarray, why: str) -> None:
        reason[mask & pd.isna(reason)] = why

    flag(pc.equal(text, "").to_numpy(zero_copy_only=False), "empty")
    flag(pc.greater(pc.utf8_length(text), params.max_chars).to_numpy(zero_copy_only=False), "too_long")
    label = pc.utf8_trim_whitespace(_strings(records["label"]))
    flag(pc.fill_null(pc.equal(label, ""), True).to_numpy(zero_copy_only=False), "missing_label")
    split_given = records["split"].notna().to_numpy()
    split = (records["split"].astype(str).str.strip().str.lower().map(SPLIT_DIRS)
             .to_numpy(dtype=object, na_value=None))
    split[~split_given] = None
    flag(split_given & pd.isna(split), "invalid_split")

    h = hash64(text)  # doc_id, as an integer: grouping on it is cheaper than on hex strings
    ok = pd.isna(reason)
    # Label conflicts: the same normalised text with more than one label — every copy goes.
    cand = pd.DataFrame({"h": h[ok], "label": pd.factorize(label.filter(pa.array(ok)).to_numpy(zero_copy_only=False))[0]})
    by_text = cand.groupby("h", sort=False)["label"]
    conflict = np.zeros(n, dtype=bool)
    conflict[np.flatnonzero(ok)[(by_text.transform("min") != by_text.transform("max")).to_numpy()]] = True
    flag(conflict, "label_conflict")

    ok = pd.isna(reason)
    kept_idx = np.flatnonzero(ok)
    ids_ok = pd.Series(h[kept_idx])
    dup = ids_ok.duplicated(keep="first").to_numpy()
    # Copies of one text from different predefined splits: the kept row takes the latest split
    # in train < valid < test, so a document the user put in test never trains the model.
    split_ok = pd.Series(split[kept_idx]).map(_SPLIT_RANK)
    by_id = split_ok.groupby(ids_ok.to_numpy(), sort=False)
    rank = by_id.transform("max").to_numpy()
    split_conflicts = int((by_id.nunique() > 1).sum())
    first = kept_idx[~dup]
    take = pa.array(first)
    inv_rank = np.array(list(_SPLIT_RANK), dtype=object)
    doc_rank = rank[~dup]
    doc_split = np.full(len(first), None, dtype=object)
    doc_split[~np.isnan(doc_rank)] = inv_rank[doc_rank[~np.isnan(doc_rank)].astype(int)]
    docs = pd.DataFrame({
        "doc_id": _str_column(hex_array(h[first])),
        "text": _str_column(text.take(take)),
        "label": _str_column(label.take(take)),
        "source": _str_column(_strings(records["source"]).take(take)),
        "line": pd.array(records["line"].to_numpy(dtype=object, na_value=None)[first], dtype="Int64"),
        "split": _str_column(pa.array(doc_split, type=pa.string())),
    })

    rej_idx = np.flatnonzero(~pd.isna(reason))
    take = pa.array(rej_idx, type=pa.int64())
    rejected = pd.DataFrame({
        "record": _str_column(_strings(records["text"]).take(take)),
        "source": _str_column(_strings(records["source"]).take(take)),
        "line": pd.array(records["line"].to_numpy(dtype=object, na_value=None)[rej_idx], dtype="Int64"),
        "reason": _str_column(pa.array(reason[rej_idx], type=pa.string())),
        "label": _str_column(_strings(records["label"]).take(take)),
    })

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
    if stats["read"] != stats["kept"] + stats["duplicates"] + stats["quarantined"]:  # not an assert: never skipped
        raise RuntimeError(f"ingest accounting broken: {stats}")
    return IngestResult(docs, rejected, stats)


def _strings(col: pd.Series) -> pa.Array:
    """A record column as an Arrow string array (zero-copy for Arrow-backed columns)."""
    arr = pa.array(col, from_pandas=True)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_null(arr.type):
        return arr.cast(pa.string())
    return arr if arr.type == pa.string() else pc.cast(arr, pa.string())


def _str_column(arr: pa.Array) -> pd.Series:
    """Arrow strings → a pandas column: the Arrow-backed "str" dtype when nothing is null, else
    objects with None (pandas' "str" dtype would turn None into NaN)."""
    if arr.null_count == 0:
        return pd.Series(pd.array(arr, dtype="str"))
    return pd.Series(arr.to_numpy(zero_copy_only=False), dtype=object)


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
