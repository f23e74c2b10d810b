"""`textclf diff`: what changed *in the data* between two revisions, row by row.

`dvc diff` says which files changed hash. This module says which documents were added, removed or
relabelled, how the class balance and the splits moved, what the quarantine and the vocabulary
gained and lost, and how params and metrics changed (as DVC itself computes those).

Three modules, top to bottom:
- here, the pure core, `diff_snapshots(a, b)`: two `Snapshot`s (frames, no I/O) in, a JSON-able dict
  out. Rows are matched on `doc_id` with hash joins (`pandas.Index.get_indexer`) and counted with
  vectorised reductions: no Python loop over documents, so a million-document corpus diffs in
  seconds;
- textclf.diff.read, `load_snapshot` / `diff_revisions`: the pipeline outputs at a git revision come
  through `dvc.api.DVCFileSystem` (the workspace, the local cache, or the configured remote); params
  and metrics changes come from `dvc.repo.Repo.params.diff` / `.metrics.diff`, so whatever
  params sections and metrics files the pipeline has at either revision are diffed generically;
- textclf.diff.render: `render_text` (terminal), `render_markdown` (PR comments, Prefect artifacts),
  `render_json` (machines). Text and Markdown render the same list of blocks.

Every failure a user can cause (unknown revision, outputs not produced or not fetched, a corrupt or
contract-breaking file) is a `DiffError` whose message names the revision and the file and says
what to run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from textclf import paths
from textclf.data.vocab import SPECIALS, VOCAB
from textclf.errors import InputError
from textclf.schemas import CLEAN_REASONS, INGEST_REASONS, SPLITS

log = logging.getLogger("textclf.diff.core")

WORKSPACE = "workspace"  # how DVC (and this report) names the working tree
DOCUMENTS = PurePosixPath(paths.DOCUMENTS.as_posix())
REJECTED = {
    "ingest": PurePosixPath(paths.REJECTED_INGEST.as_posix()),
    "clean": PurePosixPath(paths.REJECTED_CLEAN.as_posix()),
}
SPLIT_FILES = {s: PurePosixPath((paths.PROCESSED / f"{s}.parquet").as_posix()) for s in SPLITS}
VOCAB_FILE = PurePosixPath(VOCAB.as_posix())
SNIPPET = 60  # characters of a document shown in examples


class DiffError(InputError):
    """The diff cannot be computed as asked; the message says why and what to run."""


@dataclass(frozen=True)
class Snapshot:
    """The pipeline's data outputs at one revision, as frames.

    documents:   doc_id, label (+ text for examples)  — data/interim/documents.parquet
    splits:      doc_id, split                          — data/processed/{train,valid,test}.parquet
    quarantine:  reason (+ stage)                       — data/interim/rejected_*.parquet
    vocab:       the vocab.json dict (tokens, counts, hash)
    test_tokens: the test split's token lists (Arrow list<string>); only needed for the newer side
    """

    rev: str
    documents: pd.DataFrame
    splits: pd.DataFrame
    quarantine: pd.DataFrame
    vocab: dict
    test_tokens: pa.Array | pa.ChunkedArray | None = None
    commit: str | None = None


# =============================================================================================
# core: frames in, a dict out (no I/O)


def diff_snapshots(a: Snapshot, b: Snapshot, examples: int = 5, top: int = 10) -> dict:
    """The data diff from `a` to `b` (see module docstring); every number is a plain int/float."""
    result = {
        "a": {"rev": a.rev, "commit": a.commit},
        "b": {"rev": b.rev, "commit": b.commit},
        "documents": diff_documents(a.documents, b.documents, examples),
        "labels": diff_labels(a.documents["label"], b.documents["label"]),
        "splits": diff_splits(a.splits, b.splits, examples),
        "quarantine": diff_quarantine(a.quarantine["reason"], b.quarantine["reason"]),
        "vocab": diff_vocab(a.vocab, b.vocab, b.test_tokens, top),
    }
    warnings = []
    moved = result["splits"]["moved"]
    if moved:
        warnings.append(
            f"{moved:,} document(s) present at both revisions changed split: a document's "
            "split must never change (were split.seed or the ratios changed?) — models "
            "evaluated at the two revisions are not comparable"
        )
    result["warnings"] = warnings
    return result


def join(a_ids: pd.Series | np.ndarray, b_ids: pd.Series | np.ndarray, what: str) -> np.ndarray:
    """Hash join on doc_id: for each row of b, the row of a with the same id, or -1."""
    index = pd.Index(np.asarray(a_ids, dtype=object))
    for side, ids in (("a", index), ("b", pd.Index(np.asarray(b_ids, dtype=object)))):
        if not ids.is_unique:
            dup = ids[ids.duplicated()]
            raise DiffError(
                f"{what} ({side}): doc_id is not unique ({len(dup):,} repeated, e.g. {', '.join(map(str, dup[:3]))})"
            )
    return index.get_indexer(np.asarray(b_ids, dtype=object))


def match(a: pd.DataFrame, b: pd.DataFrame, column: str, what: str):
    """Join a and b on doc_id and compare `column` for the documents in both.

    Returns (pos, in_a, still, changed, values_a, values_b): for each row of b its row in a (or -1)
    and whether it exists there; for each row of a whether it is still in b; for each row of b
    whether `column` differs from a's value."""
    pos = join(a["doc_id"], b["doc_id"], what)
    in_a = pos >= 0
    va, vb = a[column].to_numpy(dtype=object), b[column].to_numpy(dtype=object)
    changed = np.zeros(len(b), dtype=bool)
    changed[in_a] = va[pos[in_a]] != vb[in_a]
    still = np.zeros(len(a), dtype=bool)
    still[pos[in_a]] = True
    return pos, in_a, still, changed, va, vb


def diff_documents(a: pd.DataFrame, b: pd.DataFrame, examples: int = 5) -> dict:
    pos, in_a, still, relabeled, label_a, _ = match(a, b, "label", "documents")
    added, removed = ~in_a, ~still
    n_relabeled = int(relabeled.sum())
    rel = np.flatnonzero(relabeled)[:examples]
    return {
        "a": int(len(a)),
        "b": int(len(b)),
        "added": int(added.sum()),
        "removed": int(removed.sum()),
        "relabeled": n_relabeled,
        "unchanged": int(in_a.sum()) - n_relabeled,
        "examples": {
            "added": _examples(b, np.flatnonzero(added)[:examples]),
            "removed": _examples(a, np.flatnonzero(removed)[:examples]),
            "relabeled": [
                {**ex, "label_a": str(label_a[pos[i]])} for i, ex in zip(rel, _examples(b, rel), strict=True)
            ],
        },
    }


def _examples(df: pd.DataFrame, rows: np.ndarray) -> list[dict]:
    part = df.iloc[rows]
    out = []
    for rec in part.to_dict(orient="records"):  # a handful of rows, never the whole frame
        ex = {"doc_id": str(rec["doc_id"]), "label": str(rec["label"])}
        if "text" in rec and rec["text"] is not None:
            ex["text"] = snippet(str(rec["text"]))
        out.append(ex)
    return out


def snippet(text: str, n: int = SNIPPET) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def diff_labels(a: pd.Series, b: pd.Series) -> dict:
    """Count and share per label at a and b (shares as fractions, deltas in share points)."""
    ca, cb = a.value_counts(), b.value_counts()
    out = {}
    for label in sorted(set(ca.index) | set(cb.index), key=str):
        na, nb = int(ca.get(label, 0)), int(cb.get(label, 0))
        sa = na / len(a) if len(a) else 0.0
        sb = nb / len(b) if len(b) else 0.0
        out[str(label)] = {
            "a": na,
            "b": nb,
            "delta": nb - na,
            "share_a": round(sa, 4),
            "share_b": round(sb, 4),
            "share_delta": round(sb - sa, 4),
        }
    return out


def diff_splits(a: pd.DataFrame, b: pd.DataFrame, examples: int = 5) -> dict:
    """Documents per split at a and b, what entered and left each split, and documents present at
    both revisions whose split changed (there should be none: the split is stable by design)."""
    pos, in_a, still, moved, split_a, split_b = match(a, b, "split", "splits")
    ca, cb = a["split"].value_counts(), b["split"].value_counts()
    added = pd.Series(split_b[~in_a]).value_counts()
    removed = pd.Series(split_a[~still]).value_counts()
    names = [*SPLITS, *sorted((set(ca.index) | set(cb.index)) - set(SPLITS), key=str)]
    counts = {}
    for s in names:
        na, nb = int(ca.get(s, 0)), int(cb.get(s, 0))
        counts[str(s)] = {
            "a": na,
            "b": nb,
            "delta": nb - na,
            "added": int(added.get(s, 0)),
            "removed": int(removed.get(s, 0)),
        }
    rows = np.flatnonzero(moved)[:examples]
    moved_examples = [
        {
            "doc_id": str(b["doc_id"].iloc[i]),
            "split_a": str(split_a[pos[i]]),
            "split_b": str(split_b[i]),
        }
        for i in rows
    ]
    return {"counts": counts, "moved": int(moved.sum()), "moved_examples": moved_examples}


def diff_quarantine(a: pd.Series, b: pd.Series) -> dict:
    """Quarantined records per reason (ingest and clean share one reason vocabulary)."""
    ca, cb = a.value_counts(), b.value_counts()
    known = [r for r in (*INGEST_REASONS, *CLEAN_REASONS) if r in ca.index or r in cb.index]
    other = sorted((set(ca.index) | set(cb.index)) - set(known), key=str)
    by_reason = {}
    for r in known + other:
        na, nb = int(ca.get(r, 0)), int(cb.get(r, 0))
        by_reason[str(r)] = {"a": na, "b": nb, "delta": nb - na}
    return {
        "by_reason": by_reason,
        "total": {"a": int(len(a)), "b": int(len(b)), "delta": int(len(b) - len(a))},
    }


def diff_vocab(a: dict, b: dict, test_tokens_b: pa.Array | pa.ChunkedArray | None = None, top: int = 10) -> dict:
    """Size change, tokens added and dropped (most frequent first), and the out-of-vocabulary rate
    of b's test split under a's vocabulary (how much of the new test data the old model could not
    see), next to the rate under b's own vocabulary."""
    tokens_a = np.asarray(a["tokens"], dtype=object)
    tokens_b = np.asarray(b["tokens"], dtype=object)
    counts_a = np.asarray(a["counts"], dtype=np.int64)
    counts_b = np.asarray(b["counts"], dtype=np.int64)
    pos = pd.Index(tokens_a).get_indexer(tokens_b)
    special_b = np.isin(tokens_b, SPECIALS)
    added = (pos < 0) & ~special_b
    still = np.zeros(len(tokens_a), dtype=bool)
    still[pos[pos >= 0]] = True
    dropped = ~still & ~np.isin(tokens_a, SPECIALS)
    out = {
        "size_a": int(len(tokens_a)),
        "size_b": int(len(tokens_b)),
        "delta": int(len(tokens_b) - len(tokens_a)),
        "added": int(added.sum()),
        "dropped": int(dropped.sum()),
        "hash_a": a.get("hash"),
        "hash_b": b.get("hash"),
        "top_added": _top(tokens_b[added], counts_b[added], top),
        "top_dropped": _top(tokens_a[dropped], counts_a[dropped], top),
    }
    out.update(oov_rates(test_tokens_b, tokens_a, tokens_b))
    return out


def _top(tokens: np.ndarray, counts: np.ndarray, n: int) -> list[dict]:
    # count descending, token ascending: the vocabulary's own order, enforced here anyway
    order = np.lexsort((tokens.astype(str), -counts))[:n] if len(tokens) else np.array([], dtype=int)
    return [{"token": str(tokens[i]), "count": int(counts[i])} for i in order]


def oov_rates(
    test_tokens: pa.Array | pa.ChunkedArray | pd.Series | None,
    vocab_a: np.ndarray,
    vocab_b: np.ndarray,
) -> dict:
    if test_tokens is None:
        return {
            "test_tokens": None,
            "oov_rate_test_b_under_a": None,
            "oov_rate_test_b_under_b": None,
        }
    if isinstance(test_tokens, pd.Series):
        test_tokens = pa.array(test_tokens)
    values = pc.list_flatten(test_tokens)
    n = len(values)

    def rate(vocab: np.ndarray) -> float | None:
        if not n:
            return None
        words = pa.array([t for t in vocab.tolist() if t not in SPECIALS], type=pa.string())
        known = pc.sum(pc.is_in(values, value_set=words).cast(pa.int64())).as_py() or 0
        return round(1.0 - known / n, 6)

    return {
        "test_tokens": int(n),
        "oov_rate_test_b_under_a": rate(vocab_a),
        "oov_rate_test_b_under_b": rate(vocab_b),
    }


def jsonable(v):
    if isinstance(v, dict):
        return {k: jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [jsonable(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    if v is None or isinstance(v, bool | int | float | str):
        return v
    return str(v)
