"""ingest: raw sources → data/interim/documents.parquet (+ rejected_ingest.parquet, ingest.json).

Every record read is accounted for: it becomes a document, collapses into an identical document
with the same label (a duplicate), or is quarantined with a reason — and
`read = kept + duplicates + quarantined` holds in reports/data/ingest.json.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from textclf import schemas
from textclf.artifacts import (
    map_batches,
)
from textclf.labels import apply_corrections, check_corrections, empty_corrections, latest_labels
from textclf.params import IngestParams
from textclf.sources import SPLIT_DIRS
from textclf.text import hash64, hex_array, normalize

log = logging.getLogger("textclf.ingest")

_SPLIT_RANK = {"train": 0, "valid": 1, "test": 2}


@dataclass(frozen=True)
class IngestResult:
    documents: pd.DataFrame
    rejected: pd.DataFrame
    stats: dict


def ingest(records: pd.DataFrame, params: IngestParams, corrections: pd.DataFrame | None = None) -> IngestResult:
    """Record frame (textclf.sources) → documents, rejected records, accounting. `corrections`
    (textclf.labels.read_corrections) give listed documents the reviewer's label; one that names
    no ingested document or an unknown label is an InputError."""
    batch = prepare(records, params)
    ok = pd.isna(batch.reason)
    label_code = pd.factorize(batch.label.to_numpy(zero_copy_only=False))[0]
    decision = decide(batch.h, label_code, batch.rank, ok)
    docs, rejected = emit(batch, decision, 0)
    corrected = Corrected(corrections)
    corrected.labels.update(docs["label"].tolist())
    docs = corrected.apply(docs)
    corrected.check()
    stats = ingest_stats(
        len(records),
        decision,
        rejected["reason"].to_numpy(dtype=object),
        docs["label"].value_counts(),
        docs["split"].value_counts(),
        corrected,
    )
    return IngestResult(docs, rejected, stats)


class Corrected:
    """The corrections applied batch by batch: what they changed, and what they matched."""

    def __init__(self, corrections: pd.DataFrame | None):
        self.corrections = corrections if corrections is not None else empty_corrections()
        self.latest = latest_labels(self.corrections)
        self.relabelled = 0
        self.found: set[str] = set()
        self.labels: set[str] = set()  # the corpus's labels, before corrections

    def apply(self, docs: pd.DataFrame) -> pd.DataFrame:
        docs, n, found = apply_corrections(docs, self.latest)
        self.relabelled += n
        self.found |= found
        return docs

    def check(self) -> None:
        check_corrections(self.corrections, self.found, self.labels)


# The per-batch steps (`prepare`, `emit`) are functions of one batch of records; `decide` is the
# global reduction over the few per-record keys (doc hash, label, predefined split) of the whole
# corpus: label conflicts, duplicates, the kept copy of each text and its split. `ingest` runs
# them on one table; `ingest_chunked` runs them batch by batch, locally or on Dask.


@dataclass
class Prepared:
    """One batch of records after the per-record steps."""

    records: pd.DataFrame  # the original record frame (text, label, source, line)
    text: pa.Array  # normalised text
    label: pa.Array  # trimmed label
    split: np.ndarray  # predefined split name per record, or None
    rank: np.ndarray  # the split as _SPLIT_RANK (float, NaN = none)
    h: np.ndarray  # uint64 hash of the normalised text (the doc_id)
    reason: np.ndarray  # per-record quarantine reason so far, or None


@dataclass
class Decision:
    """The global reduction's outcome, in corpus-wide record positions."""

    conflict: np.ndarray  # bool per record: quarantined as label_conflict
    first: np.ndarray  # sorted positions of the kept copies (one per document)
    doc_rank: np.ndarray  # their split rank (NaN = none)
    duplicates: int
    split_conflicts: int


def prepare(records: pd.DataFrame, params: IngestParams) -> Prepared:
    """Per-record steps of one batch: normalise, hash, and every reason a record alone decides."""
    reason = records["reason"].to_numpy(dtype=object, na_value=None).copy()
    text = pc.fill_null(normalize(_strings(records["text"])), "")

    def flag(mask: np.ndarray, why: str) -> None:
        reason[mask & pd.isna(reason)] = why

    flag(pc.equal(text, "").to_numpy(zero_copy_only=False), "empty")
    flag(
        pc.greater(pc.utf8_length(text), params.max_chars).to_numpy(zero_copy_only=False),
        "too_long",
    )
    label = pc.utf8_trim_whitespace(_strings(records["label"]))
    flag(pc.fill_null(pc.equal(label, ""), True).to_numpy(zero_copy_only=False), "missing_label")
    split_given = records["split"].notna().to_numpy()
    split = records["split"].astype(str).str.strip().str.lower().map(SPLIT_DIRS).to_numpy(dtype=object, na_value=None)
    split[~split_given] = None
    flag(split_given & pd.isna(split), "invalid_split")
    rank = pd.Series(split).map(_SPLIT_RANK).to_numpy(dtype=np.float64, na_value=np.nan)
    h = hash64(text)  # doc_id, as an integer: grouping on it is cheaper than on hex strings
    return Prepared(records, text, label, split, rank, h, reason)


def decide(h: np.ndarray, label_code: np.ndarray, rank: np.ndarray, ok: np.ndarray) -> Decision:
    """The global reduction over all records' keys (any consistent integer label coding)."""
    n = len(h)
    # Label conflicts: the same normalised text with more than one label — every copy goes.
    cand = pd.DataFrame({"h": h[ok], "label": label_code[ok]})
    by_text = cand.groupby("h", sort=False)["label"]
    conflict = np.zeros(n, dtype=bool)
    conflict[np.flatnonzero(ok)[(by_text.transform("min") != by_text.transform("max")).to_numpy()]] = True
    kept_idx = np.flatnonzero(ok & ~conflict)
    ids_ok = pd.Series(h[kept_idx])
    dup = ids_ok.duplicated(keep="first").to_numpy()
    # Copies of one text from different predefined splits: the kept row takes the latest split
    # in train < valid < test, so a document the user put in test never trains the model.
    by_id = pd.Series(rank[kept_idx]).groupby(ids_ok.to_numpy(), sort=False)
    doc_rank = by_id.transform("max").to_numpy()[~dup]
    split_conflicts = int((by_id.nunique() > 1).sum())
    return Decision(conflict, kept_idx[~dup], doc_rank, int(dup.sum()), split_conflicts)


def emit(batch: Prepared, decision: Decision, offset: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Documents and rejected records of one batch, whose first record is at corpus position
    `offset`."""
    n = len(batch.h)
    reason = batch.reason
    conflict = decision.conflict[offset : offset + n]
    if conflict.any():
        reason = reason.copy()
        reason[conflict & pd.isna(reason)] = "label_conflict"
    lo, hi = np.searchsorted(decision.first, [offset, offset + n])
    first = decision.first[lo:hi] - offset
    doc_rank = decision.doc_rank[lo:hi]
    records = batch.records
    take = pa.array(first)
    inv_rank = np.array(list(_SPLIT_RANK), dtype=object)
    doc_split = np.full(len(first), None, dtype=object)
    doc_split[~np.isnan(doc_rank)] = inv_rank[doc_rank[~np.isnan(doc_rank)].astype(int)]
    line = pd.array(records["line"], dtype="Int64")  # nullable: masked indexing, no Python ints
    docs = pd.DataFrame(
        {
            "doc_id": _str_column(hex_array(batch.h[first])),
            "text": _str_column(batch.text.take(take)),
            "label": _str_column(batch.label.take(take)),
            "source": _str_column(_strings(records["source"]).take(take)),
            "line": line[first],
            "split": _str_column(pa.array(doc_split, type=pa.string())),
        }
    )

    rej_idx = np.flatnonzero(~pd.isna(reason))
    take = pa.array(rej_idx, type=pa.int64())
    rejected = pd.DataFrame(
        {
            "record": _str_column(_strings(records["text"]).take(take)),
            "source": _str_column(_strings(records["source"]).take(take)),
            "line": line[rej_idx],
            "reason": _str_column(pa.array(reason[rej_idx], type=pa.string())),
            "label": _str_column(_strings(records["label"]).take(take)),
        }
    )
    return docs, rejected


def ingest_stats(
    read: int,
    decision: Decision,
    reasons: np.ndarray,
    by_label: pd.Series,
    by_split: pd.Series,
    corrected: Corrected,
) -> dict:
    """ingest.json from the reduction and the (summed) per-batch counts."""
    by_reason = {r: 0 for r in schemas.INGEST_REASONS}
    by_reason.update({str(k): int(v) for k, v in pd.Series(reasons, dtype=object).value_counts().items()})
    stats = {
        "read": int(read),
        "kept": int(len(decision.first)),
        "duplicates": decision.duplicates,
        "quarantined": int(len(reasons)),
        "by_reason": by_reason,
        "by_label": {str(k): int(v) for k, v in by_label.sort_index().items() if v},
        "predefined_split": {str(k): int(v) for k, v in by_split.sort_index().items() if v},
        "split_conflicts": decision.split_conflicts,
        # documents whose label data/labels/corrections.csv changed / that it names at all
        "relabelled": corrected.relabelled,
        "reviewed": len(corrected.found),
    }
    if stats["read"] != stats["kept"] + stats["duplicates"] + stats["quarantined"]:  # not an assert: never skipped
        raise RuntimeError(f"ingest accounting broken: {stats}")
    return stats


def ingest_chunked(
    batches: Iterable[pd.DataFrame],
    params: IngestParams,
    spill: Path,
    write: Callable[[pd.DataFrame, pd.DataFrame], None],
    client=None,
    corrections: pd.DataFrame | None = None,
) -> dict:
    """`ingest` over record batches in bounded memory; the same documents, rejected records and
    stats, in the same order.

    Pass 1 runs `prepare` on each batch (on the Dask cluster when `client` is given), spills the
    prepared batch to `spill` (a Parquet file) and keeps only its keys — doc hash, label code,
    split rank, ok — about 20 bytes a record. `decide` reduces the keys of the whole corpus.
    Pass 2 reads the spill back batch by batch, `emit`s its documents and rejected records and
    hands them to `write(docs, rejected)` (which validates and appends them to the outputs).
    """
    keys: dict[str, list[np.ndarray]] = {"h": [], "code": [], "rank": [], "ok": []}
    labels: dict[str, int] = {}
    sizes: list[int] = []
    writer = None
    try:
        for table in map_batches(_prepare_table, batches, client, params=params):
            if writer is None:
                writer = pq.ParquetWriter(spill, table.schema, compression="lz4")
            writer.write_table(table, row_group_size=max(len(table), 1))
            sizes.append(len(table))
            keys["h"].append(table.column("h").to_numpy())
            keys["rank"].append(table.column("rank").to_numpy())
            keys["ok"].append(pc.is_null(table.column("reason")).to_numpy(zero_copy_only=False))
            codes, uniques = pd.factorize(table.column("nlabel").to_numpy(zero_copy_only=False))
            glob = np.array([labels.setdefault(u, len(labels)) for u in uniques], dtype=np.int64)
            keys["code"].append(np.where(codes >= 0, glob[np.maximum(codes, 0)] if len(glob) else -1, -1))
    finally:
        if writer is not None:
            writer.close()
    key = {k: (np.concatenate(v) if v else np.zeros(0)) for k, v in keys.items()}
    h = key["h"].astype(np.uint64)
    ok = key["ok"].astype(bool)
    decision = _run(decide, client, h, key["code"].astype(np.int64), key["rank"].astype(np.float64), ok)
    del keys, key, ok
    if len(np.unique(h[decision.first])) != len(decision.first):  # the whole-file half of `unique`
        raise RuntimeError("ingest: kept documents with duplicate doc_id (reduction broken)")
    del h
    reasons: list[np.ndarray] = []
    by_label = pd.Series(dtype=np.int64)
    by_split = pd.Series(dtype=np.int64)
    offset = 0
    pf = pq.ParquetFile(spill) if sizes else None
    corrected = Corrected(corrections)
    for i, size in enumerate(sizes):
        docs, rejected = emit(_from_table(pf.read_row_group(i)), decision, offset)
        offset += size
        corrected.labels.update(docs["label"].tolist())
        docs = corrected.apply(docs)
        write(docs, rejected)
        reasons.append(rejected["reason"].to_numpy(dtype=object))
        by_label = by_label.add(docs["label"].value_counts(), fill_value=0)
        by_split = by_split.add(docs["split"].value_counts(), fill_value=0)
    if not sizes:  # no records: empty outputs, as the in-memory path writes them
        docs, rejected = emit(prepare(_empty_records(), params), decision, 0)
        write(docs, rejected)
    corrected.check()  # before the caller renames the outputs into place
    return ingest_stats(
        offset,
        decision,
        np.concatenate(reasons) if reasons else np.zeros(0, dtype=object),
        by_label.astype(np.int64),
        by_split.astype(np.int64),
        corrected,
    )


def _run(fn, client, *args):
    """A reduction: here, or as one task on the Dask cluster."""
    if client is None:
        return fn(*args)
    return client.submit(fn, *args, pure=False).result()


def _prepare_table(records: pd.DataFrame, params: IngestParams) -> pa.Table:
    """`prepare` as one Arrow table (what pass 1 spills and ships back from a Dask worker)."""
    b = prepare(records, params)
    return pa.table(
        {
            "text": _strings(records["text"]),
            "label": _strings(records["label"]),
            "source": _strings(records["source"]),
            "line": pa.array(pd.array(records["line"], dtype="Int64"), type=pa.int64()),
            "ntext": b.text,
            "nlabel": b.label,
            "split": pa.array(b.split, type=pa.string()),
            "rank": pa.array(b.rank, type=pa.float64()),
            "h": pa.array(b.h, type=pa.uint64()),
            "reason": pa.array(b.reason, type=pa.string()),
        }
    )


def _from_table(t: pa.Table) -> Prepared:
    records = pd.DataFrame(
        {
            "text": pd.Series(pd.array(t.column("text").combine_chunks(), dtype="str")),
            "label": _str_column(t.column("label").combine_chunks()),
            "source": _str_column(t.column("source").combine_chunks()),
            # nulls come back as NaN in a float array, which Int64 turns back into <NA>
            "line": pd.array(t.column("line").to_numpy(zero_copy_only=False), dtype="Int64"),
        }
    )
    return Prepared(
        records,
        t.column("ntext").combine_chunks(),
        t.column("nlabel").combine_chunks(),
        t.column("split").to_numpy(zero_copy_only=False).astype(object),
        t.column("rank").to_numpy(),
        t.column("h").to_numpy(),
        t.column("reason").to_numpy(zero_copy_only=False).astype(object),
    )


def _empty_records() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "text": pd.Series([], dtype=object),
            "label": pd.Series([], dtype=object),
            "split": pd.Series([], dtype=object),
            "source": pd.Series([], dtype=object),
            "line": pd.array([], dtype="Int64"),
            "reason": pd.Series([], dtype=object),
        }
    )


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
