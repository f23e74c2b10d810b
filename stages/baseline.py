"""DVC stage `baseline`: TF-IDF + LogisticRegression on the same split →
reports/baseline/{predictions,raw_predictions}.parquet. The references: textclf.baseline."""

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
