"""Suspect labels and the corrections that flow back through DVC.

- **The review queue** (`labels` stage → reports/labels/suspects.parquet): every document of every
  split gets out-of-fold class probabilities from a cheap model (TF-IDF 1–2-grams of the cleaned
  tokens + logistic regression; k folds assigned by duplicate group, so a text and its copies are
  never on both sides of a fit). cleanlab's confident learning (`cleanlab.filter.
  find_label_issues`) picks the likely mislabelled ones, most suspicious (lowest self-confidence:
  the probability the model gives the given label) first. Documents a reviewer has already seen —
  any row for them in the corrections file — leave the queue.
- **Corrections are data** (data/labels/corrections.csv, a tracked input of ingest): columns
  `doc_id,label,note,reviewer`. Ingest gives each listed document the reviewer's label (a later
  row for the same document wins); a row whose label is the one the document already has is a
  confirmation. `textclf labels fix|accept` append rows; anyone may edit the file by hand.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pandera.errors import SchemaErrors

from textclf import schemas
from textclf.errors import InputError
from textclf.params import LabelsParams
from textclf.paths import CORRECTIONS
from textclf.text import hash64, seed_key

log = logging.getLogger("textclf.labels")

COLUMNS = ("doc_id", "label", "note", "reviewer")
REQUIRED = ("doc_id", "label")


# ---------------------------------------------------------------------------------------------
# corrections


def empty_corrections() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series([], dtype="str") for c in COLUMNS})


def read_corrections(path: Path | str = CORRECTIONS) -> pd.DataFrame:
    """The corrections file as a frame indexed by its line numbers; a missing file is empty. A row
    that breaks the contract is an InputError naming its line, and nothing is applied."""
    path = Path(path)
    if not path.exists():
        return empty_corrections()
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not UTF-8 text (byte {err.start}: {err.reason})") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    header = None
    rows, lines, problems = [], [], []
    for row in reader:
        if not row or all(not cell.strip() for cell in row):  # blank line
            continue
        if header is None:
            header = [c.strip() for c in row]
            unknown = [c for c in header if c not in COLUMNS]
            missing = [c for c in REQUIRED if c not in header]
            if unknown or missing or len(set(header)) != len(header):
                raise InputError(
                    f"{path}: line {reader.line_num}: the header must name the columns "
                    f"{','.join(REQUIRED)} (and optionally note,reviewer), each once; got {','.join(header)}"
                )
            continue
        if len(row) != len(header):
            problems.append(f"line {reader.line_num}: {len(row)} field(s), the header has {len(header)}")
            continue
        rows.append([cell.strip() for cell in row])
        lines.append(reader.line_num)
    if problems:
        raise InputError(_problems(path, problems))
    if header is None:
        return empty_corrections()
    df = pd.DataFrame(rows, columns=header, index=pd.Index(lines, name="line"), dtype=object)
    for c in COLUMNS:
        df[c] = (df[c] if c in df else pd.Series("", index=df.index)).astype("str")
    df = df[list(COLUMNS)]
    try:
        schemas.Corrections.validate(df, lazy=True)
    except SchemaErrors as err:
        fc = err.failure_cases
        problems = [
            f"line {idx}: column {col}: {check} failed for {value!r}"
            if idx is not None and idx == idx
            else f"column {col}: {check} failed"
            for idx, col, check, value in zip(fc["index"], fc["column"], fc["check"], fc["failure_case"], strict=True)
        ]
        raise InputError(_problems(path, problems)) from None
    return df


def _problems(path: Path | str, problems: list[str]) -> str:
    more = f"\n  … and {len(problems) - 20} more" if len(problems) > 20 else ""
    return f"{path}: {len(problems)} bad row(s), nothing applied:\n  " + "\n  ".join(problems[:20]) + more


def latest_labels(corrections: pd.DataFrame) -> dict[str, str]:
    """doc_id → the reviewer's label, the last row for a document winning."""
    return dict(zip(corrections["doc_id"].tolist(), corrections["label"].tolist(), strict=True))


def apply_corrections(docs: pd.DataFrame, latest: dict[str, str]) -> tuple[pd.DataFrame, int, set[str]]:
    """docs with the reviewers' labels; (docs, documents relabelled, doc_ids found)."""
    if not latest or docs.empty:
        return docs, 0, set()
    ids = docs["doc_id"].to_numpy(dtype=object)
    new = pd.Series(ids).map(latest).to_numpy(dtype=object)
    hit = ~pd.isna(new)
    old = docs["label"].to_numpy(dtype=object)
    changed = hit & (new != old)
    if changed.any():
        docs = docs.copy()
        docs["label"] = pd.Series(np.where(changed, new, old), index=docs.index).astype(docs["label"].dtype)
    return docs, int(changed.sum()), set(ids[hit].tolist())


def check_corrections(corrections: pd.DataFrame, found: set[str], labels: Iterable[str], path=CORRECTIONS) -> None:
    """Every correction names an ingested document and a label of the corpus, else InputError
    naming the rows (raised before any output is written)."""
    labels = set(labels)
    problems = []
    for line, doc_id, label in zip(corrections.index, corrections["doc_id"], corrections["label"], strict=True):
        if doc_id not in found:
            problems.append(
                f"line {line}: doc_id {doc_id} is not an ingested document (mistyped, removed from the "
                "corpus, or quarantined: see data/interim/rejected_ingest.parquet)"
            )
        if label not in labels:
            problems.append(f"line {line}: label {label!r} is not a label of the corpus ({', '.join(sorted(labels))})")
    if problems:
        raise InputError(_problems(path, problems))


# ---------------------------------------------------------------------------------------------
# suspects


def folds_of(group_ids: Iterable[str], folds: int, seed: int) -> np.ndarray:
    """Each document's fold from a hash of its duplicate group (copies share a fold)."""
    salted = pc.binary_join_element_wise(pa.array(list(group_ids), type=pa.string()), "labels", ":")
    return (hash64(salted, key=seed_key(seed)) % np.uint64(folds)).astype(np.int64)


def label_codes(docs: pd.DataFrame, labels: list[str]) -> np.ndarray:
    """Each document's label as its index in `labels` (vectorised; every label must be listed)."""
    codes = pd.Index(labels).get_indexer(docs["label"].to_numpy(dtype=object))
    if (codes < 0).any():
        raise ValueError(f"labels not in {labels}: {sorted(set(docs['label'][codes < 0]))}")
    return codes.astype(np.int64)


def out_of_fold_proba(docs: pd.DataFrame, labels: list[str], params: LabelsParams) -> np.ndarray:
    """[n, k] class probabilities for every document from a model that never saw it."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    from textclf.artifacts import arrow_values
    from textclf.text import join_tokens, token_tfidf

    n, k = len(docs), len(labels)
    proba = np.full((n, k), 1.0 / max(k, 1))
    if n == 0 or k < 2:
        return proba
    # The TF-IDF vocabulary and weights use no labels, so fitting them once on all documents
    # leaks nothing into the folds; only the classifier is refitted per fold.
    x = token_tfidf(params.max_features).fit_transform(join_tokens(arrow_values(docs["tokens"])).to_pylist())
    y = label_codes(docs, labels)
    fold = folds_of(docs["group_id"].tolist(), params.folds, params.seed)
    for f in range(params.folds):
        held = fold == f
        fit = ~held
        if not held.any() or len(np.unique(y[fit])) < 2:
            continue  # an empty fold, or a training side with one class: no model to ask
        # saga to a loose tolerance: on 8-class Reuters R8 it is 17x faster than L-BFGS to 1e-4
        # (3.7 vs 62 s) and flags the same planted flips (bench/label_noise.py); ranking needs
        # probabilities, not the last digits of the optimum
        clf = LogisticRegression(C=params.C, solver="saga", tol=1e-3, max_iter=200, random_state=params.seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(x[fit], y[fit])
        part = np.zeros((int(held.sum()), k))
        part[:, clf.classes_] = clf.predict_proba(x[held])
        proba[held] = part
    # rounded as every predictions file is (schemas.round_proba): BLAS on another CPU flips the
    # last bits, which must not move a document across cleanlab's thresholds or the ranking
    return schemas.round_proba(proba)


def find_suspects(
    docs: pd.DataFrame, proba: np.ndarray, labels: list[str], reviewed: set[str] | None = None
) -> pd.DataFrame:
    """The review queue: cleanlab's label issues, lowest self-confidence first, minus reviewed
    documents, ranked 1…n (the Suspects contract)."""
    from cleanlab.filter import find_label_issues

    reviewed = reviewed or set()
    y = label_codes(docs, labels)
    present = np.unique(y)
    if len(docs) == 0 or len(present) < 2:
        order = np.zeros(0, dtype=np.int64)
    else:
        # cleanlab wants every class that has a column to occur: keep the columns of the present
        # classes (renormalised), in their order
        sub = proba[:, present]
        sub = sub / np.clip(sub.sum(axis=1, keepdims=True), 1e-12, None)
        remap = np.full(len(labels), -1)
        remap[present] = np.arange(len(present))
        order = find_label_issues(remap[y], sub, return_indices_ranked_by="self_confidence")
    ids = docs["doc_id"].to_numpy(dtype=object)
    order = np.array([i for i in order if ids[i] not in reviewed], dtype=np.int64)
    rows = np.arange(len(order))
    out = pd.DataFrame(
        {
            "rank": (rows + 1).astype(np.int64),
            "doc_id": pd.Series(ids[order], dtype="str"),
            "split": pd.Series(docs["split"].to_numpy(dtype=object)[order], dtype="str"),
            "label": pd.Series(docs["label"].to_numpy(dtype=object)[order], dtype="str"),
            "suggested": pd.Series(np.asarray(labels, dtype=object)[proba[order].argmax(axis=1)], dtype="str")
            if len(order)
            else pd.Series([], dtype="str"),
            "self_confidence": schemas.round_proba(proba[order, y[order]]) if len(order) else np.zeros(0),
            "text": pd.Series(docs["text"].to_numpy(dtype=object)[order], dtype="str"),
        }
    )
    return out


def suspect_metrics(docs: pd.DataFrame, suspects: pd.DataFrame, reviewed: int) -> dict:
    """reports/labels/metrics.json: queue size, share, per split and per (given -> suggested) pair."""
    n = len(docs)
    by_split = {s: int((suspects["split"] == s).sum()) for s in schemas.SPLITS}
    pairs = (suspects["label"].astype(str) + " -> " + suspects["suggested"].astype(str)).value_counts()
    return {
        "documents": int(n),
        "suspects": int(len(suspects)),
        "share": round(len(suspects) / n, 4) if n else 0.0,
        "reviewed": int(reviewed),
        "by_split": by_split,
        "by_pair": {str(k): int(v) for k, v in sorted(pairs.items())},
    }


# ---------------------------------------------------------------------------------------------
# review from the command line (`textclf labels suspects|fix|accept`)


def queue(path: Path | str, split: str | None = None, top: int | None = None) -> pd.DataFrame:
    """The review queue as the labels stage wrote it, optionally one split's, the first `top`."""
    from textclf.artifacts import read_parquet

    q = read_parquet(path)
    if split:
        q = q[q["split"] == split]
    return q.head(top) if top else q


def current_label(documents: Path | str, doc_id: str) -> tuple[str, set[str]]:
    """(the document's label in the ingested data, the corpus's labels); InputError if absent."""
    from textclf.artifacts import read_parquet

    docs = read_parquet(documents, columns=["doc_id", "label"])
    hit = docs.loc[docs["doc_id"] == doc_id, "label"]
    labels = set(docs["label"].tolist())
    if hit.empty:
        raise InputError(f"{doc_id}: not an ingested document ({documents}; doc_ids are in `textclf labels suspects`)")
    return str(hit.iloc[0]), labels


def append_correction(path: Path | str, doc_id: str, label: str, note: str = "", reviewer: str = "") -> None:
    """Add one row to the end of the corrections file, creating it with its header. The file is
    appended to in place (O_APPEND, under an exclusive `flock` that every textclf writer takes),
    never rewritten: the rows already there stay byte for byte, and an edit saved while the
    command runs is kept. A file that does not parse is left alone (InputError)."""
    import fcntl

    path = Path(path)
    values = {"doc_id": doc_id, "label": label, "note": note, "reviewer": reviewer}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        read_corrections(path)  # under the lock: refuse to append to a file that does not parse
        with open(path, "rb") as f:  # what is there now
            old = f.read()
        header = next((row for row in csv.reader(io.StringIO(old.decode("utf-8-sig"))) if any(row)), None)
        prefix = b"" if not old or old.endswith(b"\n") else b"\n"
        if header is None:
            header = list(COLUMNS)
            prefix += ",".join(COLUMNS).encode() + b"\n"
        header = [c.strip() for c in header]
        lost = [c for c in ("note", "reviewer") if values[c] and c not in header]
        if lost:
            raise InputError(f"{path}: has no {' or '.join(lost)} column; add it to the header to record one")
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow([values[c] for c in header])
        os.write(fd, prefix + buf.getvalue().encode("utf-8"))
    finally:
        os.close(fd)  # releases the lock
