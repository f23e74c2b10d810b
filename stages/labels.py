"""labels: every split + the corrections → reports/labels/suspects.parquet (the review queue) and
reports/labels/metrics.json (its size per split and per given → suggested pair).

Out-of-fold TF-IDF + LR probabilities over all splits, ranked by cleanlab's confident learning;
documents already reviewed (a row in data/labels/corrections.csv) leave the queue. Library:
textclf.labels."""

from __future__ import annotations

import pandas as pd

from textclf import schemas
from textclf.artifacts import read_parquet, run_main, write_json, write_parquet
from textclf.labels import find_suspects, log, out_of_fold_proba, read_corrections, suspect_metrics
from textclf.params import load_params
from textclf.paths import CORRECTIONS, LABELS_METRICS, SUSPECTS, TEST, TRAIN, VALID

COLUMNS = ["doc_id", "text", "label", "split", "group_id", "tokens"]


def main() -> None:
    def body():
        params = load_params("labels")
        docs = pd.concat([read_parquet(p, columns=COLUMNS) for p in (TRAIN, VALID, TEST)], ignore_index=True)
        reviewed = set(read_corrections(CORRECTIONS)["doc_id"].tolist()) & set(docs["doc_id"].tolist())
        labels = sorted(set(docs["label"].tolist()))
        proba = out_of_fold_proba(docs, labels, params)
        suspects = schemas.validate(find_suspects(docs, proba, labels, reviewed), schemas.Suspects, "labels")
        metrics = suspect_metrics(docs, suspects, len(reviewed))
        write_parquet(suspects, SUSPECTS)
        write_json(metrics, LABELS_METRICS)
        log.info(
            "%d of %d documents are suspects (%.1f%%; %d reviewed, out of the queue): %s",
            metrics["suspects"],
            metrics["documents"],
            100 * metrics["share"],
            metrics["reviewed"],
            ", ".join(f"{k} {v}" for k, v in metrics["by_split"].items()),
        )
        for row in suspects.head(params.top).itertuples():
            log.info(
                "  #%d %s [%s] %s -> %s (%.3f): %s",
                row.rank,
                row.doc_id,
                row.split,
                row.label,
                row.suggested,
                row.self_confidence,
                row.text[:80],
            )

    run_main("labels", body)


if __name__ == "__main__":
    main()
