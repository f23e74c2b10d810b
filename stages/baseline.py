"""baseline: TF-IDF + LogisticRegression on the same split → reports/baseline/predictions.parquet.

The reference every model is judged against, fitted on the train split and scored by evaluate
exactly like the model. Features: 1–2-grams over the cleaned tokens — character 1–2-grams for
CJK text (its tokens are characters), word 1–2-grams otherwise.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from stages import schemas
from stages.artifacts import read_parquet, run_main, write_parquet
from stages.params import BaselineParams, load_params
from stages.text import join_tokens

log = logging.getLogger("textclf.baseline")

TRAIN = Path("data/processed/train.parquet")
TEST = Path("data/processed/test.parquet")
PREDICTIONS = Path("reports/baseline/predictions.parquet")


def _joined(df: pd.DataFrame) -> list[str]:
    return join_tokens(df["tokens"].array._pa_array.combine_chunks()).to_pylist()


def fit_baseline(train: pd.DataFrame, params: BaselineParams):
    vec = TfidfVectorizer(tokenizer=str.split, token_pattern=None, lowercase=False, ngram_range=(1, 2),
                          sublinear_tf=True, max_features=params.max_features, dtype=np.float32)
    x = vec.fit_transform(_joined(train))
    clf = LogisticRegression(C=params.C, max_iter=params.max_iter)
    clf.fit(x, train["label"].to_numpy(dtype=object))
    return vec, clf


def predictions_frame(df: pd.DataFrame, labels: list[str], proba: np.ndarray) -> pd.DataFrame:
    """The predictions contract shared by model and baseline (stages.schemas.predictions_schema)."""
    out = pd.DataFrame({
        "doc_id": df["doc_id"].to_numpy(dtype=object),
        "label": df["label"].to_numpy(dtype=object),
        "predicted": np.asarray(labels, dtype=object)[proba.argmax(axis=1)] if len(df) else [],
    })
    for j, c in enumerate(labels):
        out[f"prob_{c}"] = proba[:, j].astype(np.float64)
    for c in ("doc_id", "label", "predicted"):
        out[c] = out[c].astype("str")
    return out


def baseline(train: pd.DataFrame, test: pd.DataFrame, params: BaselineParams) -> pd.DataFrame:
    vec, clf = fit_baseline(train, params)
    proba = clf.predict_proba(vec.transform(_joined(test)))
    return predictions_frame(test, [str(c) for c in clf.classes_], proba)


def main() -> None:
    def body():
        params = load_params("baseline")
        train, test = read_parquet(TRAIN), read_parquet(TEST)
        preds = baseline(train, test, params)
        labels = sorted(train["label"].unique().tolist())
        preds = schemas.validate(preds, schemas.predictions_schema(labels), "baseline", str(PREDICTIONS))
        write_parquet(preds, PREDICTIONS)
        acc = float((preds["label"] == preds["predicted"]).mean()) if len(preds) else float("nan")
        log.info("baseline: %d test documents, accuracy %.4f", len(preds), acc)

    run_main("baseline", body)


if __name__ == "__main__":
    main()
