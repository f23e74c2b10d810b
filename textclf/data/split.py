"""split: clean documents → data/processed/{train,valid,test}.parquet (+ reports/data/split.json).

No leakage: documents whose cleaned token sequences are identical form one group (`group_id`, a
hash of the token sequence) and a group always lands in one split. Stable as data grows: a
group's split comes from a hash of (group_id, seed) alone, so adding documents never moves an
existing one. Predefined splits from the source are honoured for the whole group.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import numpy as np
import pandas as pd
import pyarrow as pa

from textclf import schemas
from textclf.artifacts import map_batches, read_row_group, to_pandas, write_json
from textclf.errors import ContractError
from textclf.params import SplitParams
from textclf.paths import PROCESSED as OUT_DIR
from textclf.text import hash64, hex_array, join_tokens, seed_key, to_hex

log = logging.getLogger("textclf.split")


_RANK = {"train": 0, "valid": 1, "test": 2}
_SEP = "\x1f"  # unit separator: cannot occur inside a token (tokens never hold control chars)


def group_hash(tokens: pd.Series | pa.Array) -> np.ndarray:
    """The leak-free grouping key as uint64: a hash of the cleaned token sequence."""
    arr = pa.array(tokens) if isinstance(tokens, pd.Series) else tokens
    arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    return hash64(join_tokens(arr, _SEP))


def group_ids(tokens: pd.Series | pa.Array) -> np.ndarray:
    """The leak-free grouping key as 16 hex characters (the `group_id` column)."""
    return to_hex(group_hash(tokens))


def assign(groups: np.ndarray | pa.Array, params: SplitParams) -> np.ndarray:
    """Hash each group id with the seed → a uniform number in [0, 1) → a split by the ratios."""
    return np.array(schemas.SPLITS)[assign_codes(groups, params)]


def assign_codes(groups: np.ndarray | pa.Array, params: SplitParams) -> np.ndarray:
    """`assign` as indices into schemas.SPLITS (0 train, 1 valid, 2 test)."""
    u = (hash64(groups, key=seed_key(params.seed)) >> np.uint64(11)).astype(np.float64) * 2.0**-53
    return (u >= params.train).astype(np.int64) + (u >= params.train + params.valid)


def split(clean: pd.DataFrame, params: SplitParams) -> tuple[dict[str, pd.DataFrame], dict]:
    h = group_hash(clean["tokens"])
    gid = hex_array(h)
    code = assign_codes(gid, params)
    groups = pd.factorize(h)[0]  # small integer group numbers for the reductions below
    # A predefined split, where any member of the group has one, decides for the whole group
    # (latest of train < valid < test wins, so user-defined test data never trains the model).
    given = clean["split"].map(_RANK).to_numpy(dtype=np.float64, na_value=np.nan)
    predefined = np.zeros(len(clean), dtype=bool)
    if (~np.isnan(given)).any():
        group_rank = pd.Series(given).groupby(groups, sort=False).transform("max").to_numpy()
        predefined = ~np.isnan(group_rank)
        code = np.where(predefined, np.nan_to_num(group_rank), code).astype(np.int64)
    df, parts = _partition(clean, code, gid)
    return parts, split_stats(df, predefined, groups=groups, codes=code)


def _partition(clean: pd.DataFrame, code: np.ndarray, gid: pa.Array) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """Add the split and group_id columns; cut the rows into the three splits (order kept)."""
    names = pa.DictionaryArray.from_arrays(pa.array(code, type=pa.int8()), pa.array(schemas.SPLITS))
    df = clean.assign(
        split=pd.Series(pd.array(names.cast(pa.string()), dtype="str"), index=clean.index),
        group_id=pd.Series(pd.array(gid, dtype="str"), index=clean.index),
    )
    # cut in Arrow: one filter per split over all columns is faster than pandas' boolean indexing
    table = pa.Table.from_pandas(df, preserve_index=False)
    return df, {s: to_pandas(table.filter(pa.array(code == i)).combine_chunks()) for i, s in enumerate(schemas.SPLITS)}


# Chunked: pass 1 computes each batch's keys (`split_keys`, a per-batch step), `split_decide`
# reduces them (a predefined split decides for its whole group, across batches), pass 2 cuts each
# batch into the three splits (`split_part`). Only ~30 bytes a document stay in memory.


def _load(part: pd.DataFrame | tuple[str, int], columns: list[str] | None = None) -> pd.DataFrame:
    return read_row_group(*part, columns=columns) if isinstance(part, tuple) else part


def split_keys(part: pd.DataFrame | tuple[str, int], params: SplitParams) -> dict:
    """Per-batch keys: group hash, hash-assigned split code, predefined rank, labels."""
    clean = _load(part, ["tokens", "split", "label"])
    h = group_hash(clean["tokens"])
    labels, names = pd.factorize(clean["label"].to_numpy(dtype=object))
    return {
        "h": h,
        "code": assign_codes(hex_array(h), params),
        "given": clean["split"].map(_RANK).to_numpy(dtype=np.float64, na_value=np.nan),
        "labels": labels,
        "label_names": list(names),
    }


def split_decide(h: np.ndarray, code: np.ndarray, given: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The reduction: (final split code, predefined mask, group numbers) for every document."""
    groups = pd.factorize(h)[0]
    predefined = np.zeros(len(h), dtype=bool)
    if (~np.isnan(given)).any():
        group_rank = pd.Series(given).groupby(groups, sort=False).transform("max").to_numpy()
        predefined = ~np.isnan(group_rank)
        code = np.where(predefined, np.nan_to_num(group_rank), code).astype(np.int64)
    return code, predefined, groups


def split_part(
    item: tuple,
) -> dict[str, pd.DataFrame]:
    """Pass 2 on one batch: (batch, its final codes, its group hashes) → the three parts."""
    part, code, h = item
    return _partition(_load(part), code, hex_array(h))[1]


def split_chunked(
    parts: Callable[[], Iterable],
    params: SplitParams,
    write: Callable[[dict[str, pd.DataFrame]], None],
    client=None,
) -> dict:
    """`split` over batches (`parts()` gives a fresh iterable of them for each pass); each batch's
    three parts go to `write` in order. Returns the same stats; raises ContractError on leakage."""
    keys = list(map_batches(split_keys, parts(), client, params=params))
    cat = {k: np.concatenate([b[k] for b in keys]) if keys else np.zeros(0) for k in ("h", "code", "given")}
    h = cat["h"].astype(np.uint64)
    code, predefined, groups = _run(
        split_decide, client, h, cat["code"].astype(np.int64), cat["given"].astype(np.float64)
    )
    # labels: batch codes → one global coding → sorted names, as pd.factorize(sort=True) gives
    names = sorted({n for b in keys for n in b["label_names"]})
    index = {n: i for i, n in enumerate(names)}
    labels = (
        np.concatenate([np.array([index[n] for n in b["label_names"]], dtype=np.int64)[b["labels"]] for b in keys])
        if keys
        else np.zeros(0, dtype=np.int64)
    )
    sizes = [len(b["h"]) for b in keys]
    del keys, cat
    stats = stats_from_codes(groups, code, labels, np.array(names, dtype=object), predefined)
    if stats["leaked_groups"]:
        pairs = pd.DataFrame({"g": groups, "s": code}).drop_duplicates()
        bad = pairs["g"].value_counts()
        first = pd.Series(np.arange(len(groups))).groupby(groups).first()
        raise leak_error(sorted(to_hex(h[first[bad.index[bad > 1]].to_numpy()]).tolist()))
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    items = (
        (part, code[offsets[i] : offsets[i + 1]], h[offsets[i] : offsets[i + 1]]) for i, part in enumerate(parts())
    )
    for out in map_batches(split_part, items, client):
        write(out)
    return stats


def _run(fn, client, *args):
    """A reduction: here, or as one task on the Dask cluster."""
    return fn(*args) if client is None else client.submit(fn, *args, pure=False).result()


def leak_error(leaked: list[str]) -> ContractError:
    summary = f"  column group_id: check one_split_per_group failed for {len(leaked)} value(s)"
    report = schemas.VALIDATION_DIR / "split.json"
    write_json(
        {
            "stage": "split",
            "artifact": str(OUT_DIR / "{train,valid,test}.parquet"),
            "summary": [summary],
            "failure_cases": [
                {"column": "group_id", "check": "one_split_per_group", "failure_case": g} for g in leaked[:1000]
            ],
        },
        report,
    )
    return ContractError("split", summary, report)


def split_stats(
    df: pd.DataFrame,
    predefined: np.ndarray,
    groups: np.ndarray | None = None,
    codes: np.ndarray | None = None,
) -> dict:
    """Sizes, label counts and share deviations per split, group leakage (must be 0)."""
    groups = pd.factorize(df["group_id"])[0] if groups is None else groups
    codes = df["split"].map(_RANK).to_numpy() if codes is None else codes
    labels, label_names = pd.factorize(df["label"], sort=True)
    return stats_from_codes(groups, codes, labels, label_names, predefined)


def stats_from_codes(
    groups: np.ndarray, codes: np.ndarray, labels: np.ndarray, label_names, predefined: np.ndarray
) -> dict:
    """`split_stats` from per-document integer keys: group, split code, label code (into the
    sorted `label_names`) — a few bytes a document, so chunked runs reduce them exactly."""
    n_labels = len(label_names)
    counts = np.bincount(codes * n_labels + labels, minlength=3 * n_labels).reshape(3, n_labels)
    overall = counts.sum(axis=0) / max(len(codes), 1)
    checked = counts.sum(axis=0) >= 200  # classes with >= 200 documents
    group_split = pd.DataFrame({"g": groups, "s": codes}).drop_duplicates()
    group_label = pd.DataFrame({"g": groups, "l": labels}).drop_duplicates()
    per_split = {}
    for i, s in enumerate(schemas.SPLITS):
        size = int(counts[i].sum())
        dev = 0.0
        if size >= 1000 and checked.any():
            dev = float(np.abs(counts[i] / size - overall)[checked].max())
        per_split[s] = {
            "documents": size,
            "groups": int((group_split["s"] == i).sum()),
            "by_label": {str(label_names[j]): int(counts[i, j]) for j in range(n_labels) if counts[i, j]},
            "max_share_deviation": round(dev, 4),
        }
    return {
        "documents": int(len(codes)),
        "groups": int(groups.max()) + 1 if len(groups) else 0,  # factorize codes: 0..k-1
        "leaked_groups": int((group_split["g"].value_counts() > 1).sum()),
        "mixed_label_groups": int((group_label["g"].value_counts() > 1).sum()),
        "predefined": int(predefined.sum()),
        "splits": per_split,
    }


def leaked_groups(parts: dict[str, pd.DataFrame]) -> list[str]:
    """Group ids found in more than one split: the cross-split half of the contract, which the
    per-file schema cannot see."""
    gids = pd.concat([p["group_id"] for p in parts.values()], ignore_index=True)
    names = np.repeat(np.arange(len(parts)), [len(p) for p in parts.values()])
    pairs = pd.DataFrame({"g": gids.to_numpy(dtype=object), "s": names}).drop_duplicates()
    counts = pairs["g"].value_counts()
    return sorted(counts.index[counts > 1])
