"""DVC stage `evaluate`: the bundle + the test split (+ both baselines' predictions) →
reports/metrics.json, reports/predictions.parquet, reports/plots/. Scoring: textclf.evaluate."""

from __future__ import annotations

from textclf import schemas
from textclf.artifacts import read_parquet, run_main, write_json, write_parquet
from textclf.bundle import load_bundle
from textclf.evaluate import (
    evaluate,
    log,
)
from textclf.params import load_params
from textclf.paths import BASELINE_PREDICTIONS as BASELINE
from textclf.paths import BUNDLE, METRICS, PLOTS, PREDICTIONS, SUSPECTS, TEST
from textclf.paths import RAW_BASELINE_PREDICTIONS as RAW_BASELINE
from textclf.stats import rounded


def main() -> None:
    def body():
        params = load_params("evaluate")
        bundle = load_bundle(BUNDLE)
        test = read_parquet(TEST)
        metrics, preds, plots = evaluate(
            test,
            bundle,
            read_parquet(BASELINE),
            params.calibration_bins,
            params.bootstrap,
            params.seed,
            raw_baseline=read_parquet(RAW_BASELINE),
            suspects=read_parquet(SUSPECTS, columns=["doc_id"]),
        )
        preds = schemas.validate(preds, schemas.predictions_schema(bundle.labels), "evaluate", str(PREDICTIONS))
        write_parquet(preds, PREDICTIONS)
        for name, rows in plots.items():
            write_json(rows, PLOTS / f"{name}.json")
        write_json(rounded(metrics), METRICS)
        t, b = metrics["test"], metrics["baseline"]
        log.info(
            "test: accuracy %.4f, macro-F1 %.4f | baseline: accuracy %.4f, macro-F1 %.4f",
            t["accuracy"],
            t["macro_f1"],
            b["accuracy"],
            b["macro_f1"],
        )
        u = metrics["test_unflagged"]
        log.info(
            "test without the %d suspect-label documents: accuracy %.4f, macro-F1 %.4f",
            u["flagged"],
            u["accuracy"] or 0.0,
            u["macro_f1"] or 0.0,
        )
        c = metrics["comparison"]
        for name, cc in (("baseline", c), ("raw-text baseline", c.get("raw"))):
            if cc and cc["ci95_low"] is not None:
                log.info(
                    "model - %s macro-F1 %+.4f, 95%% bootstrap interval [%+.4f, %+.4f], McNemar p = %.3g",
                    name,
                    cc["delta_macro_f1"],
                    cc["ci95_low"],
                    cc["ci95_high"],
                    cc["mcnemar_p"],
                )
        r = c["references"]
        log.info(
            "best reference: %s (macro-F1 %.4f); model margin %+.4f: %s",
            r["best"],
            r["best_macro_f1"],
            r["margin"],
            "non-inferior" if r["non_inferior"] else f"BELOW the {r['tolerance']} non-inferiority margin",
        )
        for label, pc in sorted(t["per_class"].items()):
            log.info("  class %-20s F1 %.4f (support %d)", label, pc["f1"], pc["support"])

    run_main("evaluate", body)


if __name__ == "__main__":
    main()
