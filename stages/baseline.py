"""baseline: TF-IDF + LogisticRegression on the same split → reports/baseline/{predictions,
raw_predictions}.parquet.

The references every model is judged against, fitted on the train split and scored by evaluate
exactly like the model:

- `predictions`: 1–2-grams over the cleaned tokens the model sees (character 1–2-grams for CJK
  text, whose tokens are characters; word 1–2-grams otherwise), C = `baseline.C`;
- `raw_predictions`: what a user writes in ten lines — scikit-learn's own analyzers on the raw
  text (character 1–2-grams when most of the corpus is CJK, word 1–2-grams otherwise), no
  cleaning of ours at all, C = `baseline.raw_C`.
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
RAW_PREDICTIONS = Path("reports/baseline/raw_predictions.parquet")
_CJK = r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]"


def _joined(df: pd.DataFrame) -> list[str]:
    return join_tokens(df["tokens"].array._pa_array.combine_chunks()).to_pylist()


def fit_baseline(train: pd.DataFrame, params: BaselineParams):
    vec = TfidfVectorizer(tokenizer=str.split, token_pattern=None, lowercase=False, ngram_range=(1, 2),
                          sublinear_tf=True, max_features=params.max_features, dtype=np.float32)
    x = vec.fit_transform(_joined(train))
    clf = LogisticRegression(C=params.C, max_iter=params.max_iter)
    clf.fit(x, train["label"].to_numpy(dtype=object))
    return vec, clf


def mostly_cjk(texts: pd.Series, sample: int = 2000) -> bool:
    """At least 30% of the (non-space) characters of the first `sample` texts are CJK."""
    head = texts.head(sample).astype(str)
    chars = int(head.str.replace(r"\s", "", regex=True).str.len().sum())
    return chars > 0 and int(head.str.count(_CJK).sum()) >= 0.3 * chars


def fit_raw_baseline(train: pd.DataFrame, params: BaselineParams):
    cjk = mostly_cjk(train["text"])
    vec = TfidfVectorizer(analyzer="char" if cjk else "word", ngram_range=(1, 2), sublinear_tf=True,
                          max_features=params.max_features, dtype=np.float32)
    x = vec.fit_transform(train["text"].astype(str).tolist())
    clf = LogisticRegression(C=params.raw_C, max_iter=params.max_iter)
    clf.fit(x, train["label"].to_numpy(dtype=object))
    return vec, clf


PROBA_DECIMALS = 6


def round_proba(proba: np.ndarray) -> np.ndarray:
    """Probabilities to PROBA_DECIMALS decimals, as every predictions file and the metrics computed
    from it record them: BLAS on another CPU flips the last bits of a float, never the sixth
    decimal (but for the rare value on a rounding edge), so a rebuild writes the same bytes."""
    return np.round(np.asarray(proba, dtype=np.float64), PROBA_DECIMALS)


def predictions_frame(df: pd.DataFrame, labels: list[str], proba: np.ndarray) -> pd.DataFrame:
    """The predictions contract shared by model and baseline (stages.schemas.predictions_schema)."""
    out = pd.DataFrame({
        "doc_id": df["doc_id"].to_numpy(dtype=object),
        "label": df["label"].to_numpy(dtype=object),
        "predicted": np.asarray(labels, dtype=object)[proba.argmax(axis=1)] if len(df) else [],
    })
    for j, c in enumerate(labels):
        out[f"prob_{c}"] = proba[:, j].astype(np.float64)  # rounded by the caller: see round_proba
    for c in ("doc_id", "label", "predicted"):
        out[c] = out[c].astype("str")
    return out


def baseline(train: pd.DataFrame, test: pd.DataFrame, params: BaselineParams) -> pd.DataFrame:
    vec, clf = fit_baseline(train, params)
    proba = round_proba(clf.predict_proba(vec.transform(_joined(test))))
    return predictions_frame(test, [str(c) for c in clf.classes_], proba)


def raw_baseline(train: pd.DataFrame, test: pd.DataFrame, params: BaselineParams) -> pd.DataFrame:
    vec, clf = fit_raw_baseline(train, params)
    proba = round_proba(clf.predict_proba(vec.transform(test["text"].astype(str).tolist())))
    return predictions_frame(test, [str(c) for c in clf.classes_], proba)


def main() -> None:
    def body():
        params = load_params("baseline")
        train, test = read_parquet(TRAIN), read_parquet(TEST)
        labels = sorted(train["label"].unique().tolist())
        for name, fn, path in (("tokens", baseline, PREDICTIONS), ("raw text", raw_baseline, RAW_PREDICTIONS)):
            preds = schemas.validate(fn(train, test, params), schemas.predictions_schema(labels), "baseline", str(path))
            write_parquet(preds, path)
            acc = float((preds["label"] == preds["predicted"]).mean()) if len(preds) else float("nan")
            log.info("baseline (%s): %d test documents, accuracy %.4f", name, len(preds), acc)

    run_main("baseline", body)


if __name__ == "__main__":
    main()
