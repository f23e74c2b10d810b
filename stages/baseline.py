"""baseline: TF-IDF + LogisticRegression on the same split → reports/baseline/{predictions,
raw_predictions}.parquet.

The references every model is judged against, fitted on the train split and scored by evaluate
exactly like the model:

- `predictions`: 1–2-grams over the cleaned tokens the model sees (character 1–2-grams for CJK
  text, whose tokens are characters; word 1–2-grams otherwise), C = `baseline.C`;
- `raw_predictions`: what a user writes in ten lines — scikit-learn's own analyzers on the raw
  text (character 1–2-grams when most of the corpus is CJK, word 1–2-grams otherwise), no
  cleaning of ours at all, C = `baseline.raw_C`."""

from __future__ import annotations

from textclf import schemas
from textclf.artifacts import read_parquet, run_main, write_parquet
from textclf.baseline import (
    baseline,
    log,
    raw_baseline,
)
from textclf.params import load_params
from textclf.paths import BASELINE_PREDICTIONS as PREDICTIONS
from textclf.paths import RAW_BASELINE_PREDICTIONS as RAW_PREDICTIONS
from textclf.paths import TEST, TRAIN


def main() -> None:
    def body():
        params = load_params("baseline")
        train, test = read_parquet(TRAIN), read_parquet(TEST)
        labels = sorted(train["label"].unique().tolist())
        for name, fn, path in (
            ("tokens", baseline, PREDICTIONS),
            ("raw text", raw_baseline, RAW_PREDICTIONS),
        ):
            preds = schemas.validate(fn(train, test, params), schemas.predictions_schema(labels), "baseline", str(path))
            write_parquet(preds, path)
            acc = float((preds["label"] == preds["predicted"]).mean()) if len(preds) else float("nan")
            log.info("baseline (%s): %d test documents, accuracy %.4f", name, len(preds), acc)

    run_main("baseline", body)


if __name__ == "__main__":
    main()
