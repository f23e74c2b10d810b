"""evaluate: the bundle + the test split (+ the baseline's predictions) → reports/metrics.json,
reports/predictions.parquet, and the plots the stage logs through DVCLive (reports/evaluate/).

Model and baseline are scored by the same function (`score`) with scikit-learn: accuracy,
macro-/weighted-F1, per-class precision/recall/F1/support, ROC-AUC, expected calibration error.
`compare_to_baseline` says whether the model-minus-baseline difference is more than the test
split's noise: a paired bootstrap 95% interval of the macro-F1 difference (seeded, so the
metrics are reproducible) and an exact McNemar test on the documents exactly one of the two
gets right.
Plots for DVC (`plots`): the model's confusion matrix, ROC and PR curves and the calibration
curve, each for DVCLive's `log_sklearn_plot`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
)
from sklearn.preprocessing import label_binarize

from textclf.artifacts import arrow_values
from textclf.bundle import Bundle
from textclf.errors import InputError
from textclf.model import EncodingConfig, encode, label_ids, predict_proba
from textclf.paths import BASELINE_PREDICTIONS as BASELINE
from textclf.paths import RAW_BASELINE_PREDICTIONS as RAW_BASELINE
from textclf.schemas import predictions_frame, round_proba
from textclf.stats import paired_macro_f1_deltas

log = logging.getLogger("textclf.evaluate")


def top_class(y: np.ndarray, proba: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(1 where the top class is the truth else 0, the top class's probability): what the ECE
    and the calibration curve are made of."""
    return (proba.argmax(axis=1) == y).astype(int), proba.max(axis=1)


def expected_calibration_error(y: np.ndarray, proba: np.ndarray, bins: int = 10) -> float:
    """Equal-width bins over the top-class confidence; weighted |accuracy - confidence|."""
    if len(y) == 0:
        return float("nan")
    correct, conf = top_class(y, proba)
    which = np.minimum((conf * bins).astype(int), bins - 1)
    n = np.bincount(which, minlength=bins)
    acc = np.bincount(which, weights=correct, minlength=bins)
    cs = np.bincount(which, weights=conf, minlength=bins)
    nz = n > 0
    return float(np.sum(np.abs(acc[nz] - cs[nz])) / len(y))


def score(y_true: np.ndarray, proba: np.ndarray, labels: list[str], bins: int = 10) -> dict:
    """Every metric for one set of predictions; y_true are label strings, proba [n, k]."""
    y = label_ids(y_true, labels)
    pred = proba.argmax(axis=1)
    ids = list(range(len(labels)))
    p, r, f, s = precision_recall_fscore_support(y, pred, labels=ids, zero_division=0)
    # Averages over the classes that occur (as truth or prediction): a class absent from this
    # split would otherwise count as F1 = 0 and drag macro-F1 down for nothing.
    present = np.union1d(y, pred).tolist()
    out = {
        "n": int(len(y)),
        "accuracy": float(accuracy_score(y, pred)) if len(y) else None,
        "macro_f1": float(f1_score(y, pred, average="macro", labels=present, zero_division=0)) if len(y) else None,
        "weighted_f1": float(f1_score(y, pred, average="weighted", labels=present, zero_division=0))
        if len(y)
        else None,
        "roc_auc": _roc_auc(y, proba),
        "ece": expected_calibration_error(y, proba, bins) if len(y) else None,
        "per_class": {
            c: {
                "precision": float(p[i]),
                "recall": float(r[i]),
                "f1": float(f[i]),
                "support": int(s[i]),
            }
            for i, c in enumerate(labels)
        },
    }
    return out


def _roc_auc(y: np.ndarray, proba: np.ndarray) -> float | None:
    present = np.unique(y)
    if len(present) < 2:
        return None  # undefined with one class in the test split
    if proba.shape[1] == 2:
        return float(roc_auc_score(y, proba[:, 1]))
    if len(present) < proba.shape[1]:
        # one-vs-rest AUC is undefined for a class with no positives: average over present classes
        return float(np.mean([roc_auc_score(y == c, proba[:, c]) for c in present]))
    return float(roc_auc_score(y, proba, multi_class="ovr", average="macro", labels=list(range(proba.shape[1]))))


@dataclass(frozen=True)
class Plot:
    """One evaluate plot, logged through DVCLive's `Live.log_sklearn_plot(kind, truth, scores)`
    (the stage does the logging; this module stays importable without DVCLive).
    `truth`/`scores` are None where the curve is undefined (one class in the test split): the
    stage then writes the file empty, so DVC still finds the declared output."""

    name: str
    kind: str  # "confusion_matrix" | "roc" | "precision_recall" | "calibration"
    truth: np.ndarray | None
    scores: np.ndarray | None
    options: dict = field(default_factory=dict)  # passed on to the scikit-learn function


def plots(y_true: np.ndarray, predicted: np.ndarray, proba: np.ndarray, labels: list[str], bins: int) -> list[Plot]:
    """The confusion matrix, ROC and PR curves (binary: the positive class is the second label in
    sorted order; more classes: micro-averaged one-vs-rest, every (document, class) pair a point),
    and the calibration curve behind `ece`: top-class confidence against the fraction of those
    predictions that are right, in `bins` equal-width bins."""
    y = label_ids(y_true, labels)
    curves: tuple[np.ndarray | None, np.ndarray | None] = (None, None)
    if len(np.unique(y)) >= 2:
        if len(labels) == 2:
            curves = ((y == 1).astype(int), proba[:, 1])
        else:
            curves = (label_binarize(y, classes=list(range(len(labels)))).ravel(), proba.ravel())
    top = top_class(y, proba)
    return [
        Plot("confusion", "confusion_matrix", np.asarray(y_true, dtype=str), np.asarray(predicted, dtype=str)),
        Plot("roc", "roc", *curves),
        # one point per distinct score otherwise: drop those that do not change the curve
        Plot("precision_recall", "precision_recall", *curves, {"drop_intermediate": True}),
        Plot(
            "calibration",
            "calibration",
            *(top if len(y) else (None, None)),
            {"n_bins": bins, "strategy": "uniform", "pos_label": 1},
        ),
    ]


def compare_to_baseline(
    y: np.ndarray,
    pred_model: np.ndarray,
    pred_baseline: np.ndarray,
    k: int,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict:
    """Model vs baseline on the same documents (class indices): the macro-F1 difference, its
    paired bootstrap 95% interval (None with n_boot = 0) and McNemar's exact p-value.

    A document matters to either F1 only through its (truth, model, baseline) triple, so a
    replicate is drawn as counts over the k³ triples — multinomial(n, triple shares), exactly the
    distribution of resampling n documents — at a cost independent of n."""
    from scipy.stats import binomtest

    n = len(y)
    model_right, base_right = pred_model == y, pred_baseline == y
    b, c = int(np.sum(model_right & ~base_right)), int(np.sum(~model_right & base_right))
    out = {
        "delta_macro_f1": None,
        "ci95_low": None,
        "ci95_high": None,
        "bootstrap": 0,
        "model_only_correct": b,
        "baseline_only_correct": c,
        "mcnemar_p": float(binomtest(b, b + c, 0.5).pvalue) if b + c else 1.0,
    }
    if n == 0:
        return out
    observed, deltas = paired_macro_f1_deltas(y, pred_model, pred_baseline, k, n_boot, seed)
    out["delta_macro_f1"] = observed
    if n_boot:
        out["ci95_low"], out["ci95_high"] = (float(v) for v in np.percentile(deltas, [2.5, 97.5]))
        out["bootstrap"] = int(n_boot)
    return out


def model_proba(bundle: Bundle, tokens: pa.ListArray, device: torch.device | str = "cpu", texts=None) -> np.ndarray:
    """Probabilities of the bundle's model; `texts` (the split's `text`) for families that read it."""
    enc = EncodingConfig(**bundle.config["encoding"])
    ids, offsets = encode(tokens, pa.array(bundle.vocab["tokens"], pa.string()), enc)
    model = bundle.build_model(device)
    if bundle.config["model"].get("type") == "encoder":
        from textclf.families import encoder as fam

        if texts is None:
            raise InputError("the test split has no `text` column: the encoder family reads the text")
        etexts = fam.encoder_texts(texts, fam.bundle_html(bundle))
        return fam.predict_proba(model, fam.tokenizer_for(bundle), ids, offsets, etexts, device=device)
    return predict_proba(model, torch.from_numpy(ids).to(device), torch.from_numpy(offsets).to(device)).numpy()


# The bar of issue 11: the model may trail the best reference by at most this much macro-F1.
NON_INFERIORITY_MARGIN = 0.005


def _aligned(baseline: pd.DataFrame, test: pd.DataFrame, labels: list[str], path: Path) -> np.ndarray:
    base = baseline.set_index("doc_id").reindex(test["doc_id"].to_numpy())
    if base["label"].isna().any():
        raise InputError(f"{path}: does not cover the test split (rerun: dvc repro baseline)")
    return base[[f"prob_{c}" for c in labels]].to_numpy(dtype=np.float64)


def references(metrics: dict, names: tuple[str, ...]) -> dict:
    """The best reference's macro-F1 and the model's margin over it (non-inferior: margin >=
    -NON_INFERIORITY_MARGIN)."""
    scores = {n: metrics[n]["macro_f1"] for n in names if n in metrics and metrics[n]["macro_f1"] is not None}
    if not scores or metrics["test"]["macro_f1"] is None:  # an empty test split
        return {
            "best": None,
            "best_macro_f1": None,
            "margin": None,
            "tolerance": NON_INFERIORITY_MARGIN,
            "non_inferior": None,
        }
    best = max(scores, key=lambda n: scores[n])
    margin = metrics["test"]["macro_f1"] - scores[best]
    return {
        "best": best,
        "best_macro_f1": scores[best],
        "margin": margin,
        "tolerance": NON_INFERIORITY_MARGIN,
        "non_inferior": bool(margin >= -NON_INFERIORITY_MARGIN),
    }


def unflagged_score(
    test: pd.DataFrame, y_true: np.ndarray, proba: np.ndarray, labels: list[str], suspects: pd.DataFrame, bins: int
) -> dict:
    """The test scores without the documents in the suspect-labels queue: how much label noise
    caps the full split's number (`flagged` says how many were left out)."""
    flagged = test["doc_id"].isin(set(suspects["doc_id"].tolist())).to_numpy()
    out = score(y_true[~flagged], proba[~flagged], labels, bins)
    out.pop("per_class")
    return {"flagged": int(flagged.sum()), **out}


def evaluate(
    test: pd.DataFrame,
    bundle: Bundle,
    baseline: pd.DataFrame,
    bins: int = 10,
    n_boot: int = 1000,
    seed: int = 0,
    raw_baseline: pd.DataFrame | None = None,
    suspects: pd.DataFrame | None = None,
) -> tuple[dict, pd.DataFrame, list[Plot]]:
    labels = bundle.labels
    unknown = sorted(set(test["label"].tolist()) - set(labels))
    if unknown:
        raise InputError(f"test split has labels the model was not trained on: {unknown}")
    texts = arrow_values(test["text"]) if "text" in test.columns else None
    proba = round_proba(model_proba(bundle, arrow_values(test["tokens"]), texts=texts))
    preds = predictions_frame(test, labels, proba)
    y_true = test["label"].to_numpy(dtype=object)
    base_proba = _aligned(baseline, test, labels, BASELINE)
    metrics = {
        "test": score(y_true, proba, labels, bins),
        "baseline": score(y_true, base_proba, labels, bins),
        "model": {
            "type": bundle.config["model"]["type"],
            "best_epoch": bundle.config.get("training", {}).get("best_epoch"),
        },
    }
    y = label_ids(y_true, labels)
    metrics["comparison"] = compare_to_baseline(
        y, proba.argmax(axis=1), base_proba.argmax(axis=1), len(labels), n_boot, seed
    )
    if raw_baseline is not None:
        raw_proba = _aligned(raw_baseline, test, labels, RAW_BASELINE)
        metrics["baseline_raw"] = score(y_true, raw_proba, labels, bins)
        metrics["comparison"]["raw"] = compare_to_baseline(
            y, proba.argmax(axis=1), raw_proba.argmax(axis=1), len(labels), n_boot, seed
        )
    metrics["comparison"]["references"] = references(metrics, ("baseline", "baseline_raw"))
    if suspects is not None:
        metrics["test_unflagged"] = unflagged_score(test, y_true, proba, labels, suspects, bins)
    return metrics, preds, plots(y_true, preds["predicted"].to_numpy(), proba, labels, bins)


def comparison_lines(c: dict) -> list[tuple[int, str]]:
    """The log lines of metrics.json's `comparison` (model against the baselines and the best
    reference), each with its level: WARNING where the model is clearly below a baseline (the
    bootstrap interval of the difference lies wholly below 0) or below the non-inferiority
    margin of the best reference. The run still succeeds: a score is not a failure (the new-data
    flow's gate decides what is promoted)."""
    out = []
    for name, cc in (("baseline", c), ("raw-text baseline", c.get("raw"))):
        if cc and cc.get("ci95_low") is not None:
            below = cc["ci95_high"] < 0
            out.append(
                (
                    logging.WARNING if below else logging.INFO,
                    f"model - {name} macro-F1 {cc['delta_macro_f1']:+.4f}, 95% bootstrap interval "
                    f"[{cc['ci95_low']:+.4f}, {cc['ci95_high']:+.4f}], McNemar p = {cc['mcnemar_p']:.3g}"
                    + (
                        f": the model is BELOW the {name} (more data, train.autotune.families, or ship the baseline)"
                        if below
                        else ""
                    ),
                )
            )
    r = c["references"]
    out.append(
        (
            logging.INFO if r["non_inferior"] else logging.WARNING,
            f"best reference: {r['best']} (macro-F1 {r['best_macro_f1']:.4f}); model margin {r['margin']:+.4f}: "
            + ("non-inferior" if r["non_inferior"] else f"BELOW the {r['tolerance']} non-inferiority margin"),
        )
    )
    return out
