"""split: clean documents → data/processed/{train,valid,test}.parquet (+ reports/data/split.json).

No leakage: documents whose cleaned token sequences are identical form one group (`group_id`, a
hash of the token sequence) and a group always lands in one split. Stable as data grows: a
group's split comes from a hash of (group_id, seed) alone, so adding documents never moves an
existing one. Predefined splits from the source are honoured for the whole group.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from stages import schemas
from stages.artifacts import ContractError, read_parquet, run_main, write_json, write_parquet
from stages.params import SplitParams, load_params
from stages.text import hash64, hex_array, join_tokens, seed_key, to_hex

log = logging.getLogger("textclf.split")

CLEAN = Path("data/interim/clean.parquet")
OUT_DIR = Path("data/processed")
STATS = Path("reports/data/split.json")
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
    names = pa.DictionaryArray.from_arrays(pa.array(code, type=pa.int8()), pa.array(schemas.SPLITS))
    df = clean.assign(split=pd.Series(pd.array(names.cast(pa.string()), dtype="str"), index=clean.index),
                      group_id=pd.Series(pd.array(gid, dtype="str"), index=clean.index))
    parts = {s: df.loc[code == i].reset_index(drop=True) for i, s in enumerate(schemas.SPLITS)}
    return parts, split_stats(df, predefined, groups=groups, codes=code)


def split_stats(df: pd.DataFrame, predefined: np.ndarray, groups: np.ndarray | None = None,
                codes: np.ndarray | None = None) -> dict:
    """Sizes, label counts and share deviations per split, group leakage (must be 0)."""
    groups = pd.factorize(df["group_id"])[0] if groups is None else groups
    codes = df["split"].map(_RANK).to_numpy() if codes is None else codes
    labels, label_names = pd.factorize(df["label"], sort=True)
    n_labels = len(label_names)
    counts = np.bincount(codes * n_labels + labels, minlength=3 * n_labels).reshape(3, n_labels)
    overall = counts.sum(axis=0) / max(len(df), 1)
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
        "documents": int(len(df)),
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


def main() -> None:
    def body():
        params = load_params("split")
        parts, stats = split(read_parquet(CLEAN), params)
        # validate all three before writing any: a failing stage leaves the old outputs whole
        parts = {name: schemas.validate(part, schemas.SplitDocs, "split", str(OUT_DIR / f"{name}.parquet"))
                 for name, part in parts.items()}
        leaked = leaked_groups(parts)
        if leaked:
            summary = f"  column group_id: check one_split_per_group failed for {len(leaked)} value(s)"
            report = schemas.VALIDATION_DIR / "split.json"
            write_json({"stage": "split", "artifact": str(OUT_DIR / "{train,valid,test}.parquet"),
                        "summary": [summary], "failure_cases": [
                            {"column": "group_id", "check": "one_split_per_group", "failure_case": g}
                            for g in leaked[:1000]]}, report)
            raise ContractError("split", summary, report)
        for name, part in parts.items():
            write_parquet(part, OUT_DIR / f"{name}.parquet")
        write_json(stats, STATS)
        for name, part in stats["splits"].items():
            if part["max_share_deviation"] > 0.03:  # hash assignment: balanced in expectation only
                log.warning("split %s: a class share is %.1f points off its overall share", name,
                            100 * part["max_share_deviation"])
        log.info("split %d documents (%d groups): %s; leaked groups: %d", stats["documents"], stats["groups"],
                 ", ".join(f"{k} {v['documents']}" for k, v in stats["splits"].items()), stats["leaked_groups"])

    run_main("split", body)


if __name__ == "__main__":
    main()
