"""DVC stage `evaluate`: the bundle + the test split (+ both baselines' predictions) →
reports/metrics.json, reports/predictions.parquet, and the confusion, ROC, PR and calibration
plots through DVCLive's sklearn plots (reports/evaluate/plots/sklearn/). Scoring: textclf.evaluate."""

from __future__ import annotations

from pathlib import Path

from textclf import kernels

kernels.pin_for_stage()  # before torch loads: train.cpu_kernels (textclf.kernels)

from textclf import schemas
from textclf.artifacts import read_parquet, run_main, write_json, write_parquet
from textclf.bundle import load_bundle
from textclf.evaluate import Plot, comparison_lines, evaluate, log
from textclf.params import load_params
from textclf.paths import BASELINE_PREDICTIONS as BASELINE
from textclf.paths import BUNDLE, EVALUATE_REPORTS, METRICS, PREDICTIONS, SUSPECTS, TEST
from textclf.paths import RAW_BASELINE_PREDICTIONS as RAW_BASELINE
from textclf.stats import rounded


def log_plots(plots: list[Plot]) -> None:
    """Each plot through DVCLive (`dvc.yaml` declares the files, with titles and axes); a curve
    that is undefined on this test split is written empty in DVCLive's shape."""
    from dvclive import Live

    with Live(dir=str(EVALUATE_REPORTS), dvcyaml=None, save_dvc_exp=False, report=None) as live:
        for plot in plots:
            if plot.truth is None:
                write_json({plot.kind: []}, Path(live.plots_dir) / "sklearn" / f"{plot.name}.json")
            else:
                live.log_sklearn_plot(plot.kind, plot.truth, plot.scores, name=plot.name, **plot.options)
    # DVCLive ends with a summary of the metrics logged, here none: `{}`. Evaluate's metrics
    # are reports/metrics.json; an undeclared second file would only show up as untracked.
    Path(live.metrics_file).unlink(missing_ok=True)


def main() -> None:
    def body():
        kernels.apply_threads()
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
        log_plots(plots)
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
        for level, line in comparison_lines(c):
            log.log(level, "%s", line)
        for label, pc in sorted(t["per_class"].items()):
            log.info("  class %-20s F1 %.4f (support %d)", label, pc["f1"], pc["support"])

    run_main("evaluate", body)


if __name__ == "__main__":
    main()
