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

from stages import schemas
from stages.artifacts import read_parquet, run_main, write_json, write_parquet
from stages.params import SplitParams, load_params
from stages.text import hash64, join_tokens, seed_key, to_hex

log = logging.getLogger("textclf.split")

CLEAN = Path("data/interim/clean.parquet")
OUT_DIR = Path("data/processed")
STATS = Path("reports/data/split.json")
_RANK = {"train": 0, "valid": 1, "test": 2}
_SEP = "\x1f"  # unit separator: cannot occur inside a token (tokens never hold control chars)


def group_ids(tokens: pd.Series) -> np.ndarray:
    """The leak-free grouping key: a hash of the cleaned token sequence."""
    arr = tokens.array._pa_array.combine_chunks() if isinstance(tokens.dtype, pd.ArrowDtype) else tokens
    return to_hex(hash64(join_tokens(arr, _SEP)))


def assign(groups: np.ndarray, params: SplitParams) -> np.ndarray:
    """Hash each group id with the seed → a uniform number in [0, 1) → a split by the ratios."""
    u = (hash64(groups, key=seed_key(params.seed)) >> np.uint64(11)).astype(np.float64) * 2.0**-53
    return np.where(u < params.train, "train", np.where(u < params.train + params.valid, "valid", "test"))


def split(clean: pd.DataFrame, params: SplitParams) -> tuple[dict[str, pd.DataFrame], dict]:
    df = clean.copy()
    df["group_id"] = group_ids(df["tokens"])
    hashed = assign(df["group_id"].to_numpy(dtype=object), params)
    # A predefined split, where any member of the group has one, decides for the whole group
    # (latest of train < valid < test wins, so user-defined test data never trains the model).
    rank = df["split"].map(_RANK, na_action="ignore")
    group_rank = rank.groupby(df["group_id"], sort=False).transform("max")
    predefined = group_rank.notna().to_numpy()
    inv = np.array(list(_RANK), dtype=object)
    df["split"] = np.where(predefined, inv[group_rank.fillna(0).astype(int).to_numpy()], hashed)
    df["split"] = df["split"].astype("str")

    parts = {s: df.loc[df["split"] == s].reset_index(drop=True) for s in schemas.SPLITS}
    return parts, split_stats(df, predefined)


def split_stats(df: pd.DataFrame, predefined: np.ndarray) -> dict:
    overall = df["label"].value_counts(normalize=True)
    per_split = {}
    for s in schemas.SPLITS:
        part = df.loc[df["split"] == s]
        counts = part["label"].value_counts()
        shares = part["label"].value_counts(normalize=True)
        checked = [c for c in overall.index if len(part) >= 1000 and (df["label"] == c).sum() >= 200]
        dev = max((abs(shares.get(c, 0.0) - overall[c]) for c in checked), default=0.0)
        per_split[s] = {
            "documents": int(len(part)),
            "groups": int(part["group_id"].nunique()),
            "by_label": {str(k): int(v) for k, v in counts.sort_index().items()},
            "max_share_deviation": round(float(dev), 4),
        }
    groups_per_split = df.groupby("group_id")["split"].nunique()
    labels_per_group = df.groupby("group_id")["label"].nunique()
    return {
        "documents": int(len(df)),
        "groups": int(df["group_id"].nunique()),
        "leaked_groups": int((groups_per_split > 1).sum()),
        "mixed_label_groups": int((labels_per_group > 1).sum()),
        "predefined": int(predefined.sum()),
        "splits": per_split,
    }


def main() -> None:
    def body():
        params = load_params("split")
        parts, stats = split(read_parquet(CLEAN), params)
        for name, part in parts.items():
            path = OUT_DIR / f"{name}.parquet"
            write_parquet(schemas.validate(part, schemas.SplitDocs, "split", str(path)), path)
        write_json(stats, STATS)
        log.info("split %d documents (%d groups): %s; leaked groups: %d", stats["documents"], stats["groups"],
                 ", ".join(f"{k} {v['documents']}" for k, v in stats["splits"].items()), stats["leaked_groups"])

    run_main("split", body)


if __name__ == "__main__":
    main()
