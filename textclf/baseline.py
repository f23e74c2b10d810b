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

import numpy as np
import pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from textclf.artifacts import arrow_values
from textclf.params import BaselineParams
from textclf.schemas import predictions_frame, round_proba
from textclf.text import join_tokens, token_tfidf

log = logging.getLogger("textclf.baseline")

_CJK = r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]"


def _joined(df: pd.DataFrame) -> list[str]:
    return join_tokens(arrow_values(df["tokens"])).to_pylist()


def fit_baseline(train: pd.DataFrame, params: BaselineParams):
    vec = token_tfidf(params.max_features)
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
    vec = TfidfVectorizer(
        analyzer="char" if cjk else "word",
        ngram_range=(1, 2),
        sublinear_tf=True,
        max_features=params.max_features,
        dtype=np.float32,
    )
    x = vec.fit_transform(train["text"].astype(str).tolist())
    clf = LogisticRegression(C=params.raw_C, max_iter=params.max_iter)
    clf.fit(x, train["label"].to_numpy(dtype=object))
    return vec, clf


def baseline(train: pd.DataFrame, test: pd.DataFrame, params: BaselineParams) -> pd.DataFrame:
    vec, clf = fit_baseline(train, params)
    proba = round_proba(clf.predict_proba(vec.transform(_joined(test))))
    return predictions_frame(test, [str(c) for c in clf.classes_], proba)


def raw_baseline(train: pd.DataFrame, test: pd.DataFrame, params: BaselineParams) -> pd.DataFrame:
    vec, clf = fit_raw_baseline(train, params)
    proba = round_proba(clf.predict_proba(vec.transform(test["text"].astype(str).tolist())))
    return predictions_frame(test, [str(c) for c in clf.classes_], proba)
