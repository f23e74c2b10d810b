"""The promotion gate of the new-data flow: is the retrained model not worse than a reference?

The reference is the committed model (`head`, the default), or a fixed one so that promotions
cannot drift down a tolerance at a time: the `first` model with test predictions in the branch's
history, or the `best` of all of them (the new model must then be within tolerance of every one).

Both models are scored on the same documents: the reference's test documents that are in the new
test split (a document's split comes from a hash of its duplicate group, so those still in the
corpus normally are), from both models' test predictions. When that cannot apply (no predictions
on either side, predictions the run did not renew, fewer than `MIN_SAME_DOCUMENTS` in common, a
metric other than test macro-F1 / accuracy) the metrics files' values are compared and the
reason says why.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from flows import report
from flows.shell import run_logger
from textclf.params import load_params

log = logging.getLogger("textclf.flows")

SAME_DOCUMENT_METRICS = {"test.macro_f1", "test.accuracy"}
MIN_SAME_DOCUMENTS = 30
REFERENCES = ("head", "first", "best")


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str
    committed: float | None
    new: float | None
    documents: int | None = None  # how many reference test documents both were scored on (None: metrics files)
    reference: str | None = None  # the commit the new model was compared with


def gate(committed: dict | None, current: dict | None, metric: str, tolerance: float) -> Decision:
    old, new = report.metric_value(committed, metric), report.metric_value(current, metric)
    if new is None and old is None:
        return Decision(
            True,
            f"no {metric} before or after (the pipeline has no evaluate stage yet): "
            "promoted on the data contracts alone",
            old,
            new,
        )
    if new is None:
        return Decision(False, f"{metric} missing after the run (committed: {old:.4f})", old, new)
    if old is None:
        return Decision(True, f"{metric} {new:.4f}; no committed value to compare with", old, new)
    if new >= old - tolerance:
        return Decision(
            True,
            f"{metric} {old:.4f} → {new:.4f} ({new - old:+.4f}), within tolerance {tolerance:g}",
            old,
            new,
        )
    return Decision(
        False,
        f"{metric} {old:.4f} → {new:.4f} ({new - old:+.4f}) is worse than the "
        f"committed model by more than tolerance {tolerance:g}",
        old,
        new,
    )


def gate_same_documents(
    committed, current, metric: str, tolerance: float, min_documents: int = MIN_SAME_DOCUMENTS
) -> Decision | str:
    """The gate on the reference's test documents: both models' predictions for exactly those
    documents (truth from the new run). When it cannot apply, the reason why (a string)."""
    if metric not in SAME_DOCUMENT_METRICS:
        return f"it computes only {sorted(SAME_DOCUMENT_METRICS)}"
    if committed is None or current is None:
        return f"no {'committed' if committed is None else 'new'} test predictions"
    key = ["doc_id", "label", "predicted"]
    if (
        committed[key]
        .sort_values("doc_id", ignore_index=True)
        .equals(current[key].sort_values("doc_id", ignore_index=True))
    ):
        return "the run did not produce new test predictions"
    both = current.merge(committed[["doc_id", "predicted"]], on="doc_id", suffixes=("", "_committed"))
    if len(both) < min_documents:
        return f"only {len(both)} committed test documents are in the new test split (< {min_documents})"
    old, new = (_score(both["label"], both[col], metric) for col in ("predicted_committed", "predicted"))
    where = f"on the {len(both)} committed test documents"
    if new >= old - tolerance:
        return Decision(
            True,
            f"{metric} {where}: {old:.4f} → {new:.4f} ({new - old:+.4f}), within tolerance {tolerance:g}",
            old,
            new,
            len(both),
        )
    return Decision(
        False,
        f"{metric} {where}: {old:.4f} → {new:.4f} ({new - old:+.4f}) is worse than "
        f"the committed model by more than tolerance {tolerance:g}",
        old,
        new,
        len(both),
    )


def _score(truth, predicted, metric: str) -> float:
    """Accuracy, or macro-F1 over the classes that are true of these documents: a class only the
    new model knows (new data may add one) can only count as that model's errors."""
    from sklearn.metrics import accuracy_score, f1_score

    y, p = truth.astype(str).to_numpy(), predicted.astype(str).to_numpy()
    if metric == "test.accuracy":
        return float(accuracy_score(y, p))
    return float(f1_score(y, p, average="macro", labels=sorted(set(y)), zero_division=0))


def decide(
    committed_preds,
    current_preds,
    committed: dict | None,
    current: dict | None,
    metric: str,
    tolerance: float,
) -> Decision:
    """The same-documents gate when it applies; else the metrics files' values, saying why."""
    same = gate_same_documents(committed_preds, current_preds, metric, tolerance)
    if isinstance(same, Decision):
        return same
    d = gate(committed, current, metric, tolerance)
    return Decision(
        d.promote,
        f"{d.reason} (metrics files compared; not on the same documents: {same})",
        d.committed,
        d.new,
    )


# ---------------------------------------------------------------------------------------------
# references: which committed model the new one is held to


def reference_commits(root: Path, reference: str, predictions_file: str) -> list[str]:
    """The commits whose model the new one must match: HEAD, or the first / every commit of the
    branch's first-parent history that changed the test predictions (oldest first)."""
    from flows.incoming.transaction import git

    if reference not in REFERENCES:
        raise ValueError(f"reference must be one of {REFERENCES}, got {reference!r}")
    if reference == "head":
        return ["HEAD"]
    # predictions are a DVC output: a commit that changed them changed dvc.lock's entry for them
    out = git(root, "log", "--first-parent", "--format=%H", "--reverse", "--", "dvc.lock", check=False).stdout.split()
    with_preds = [c for c in out if report.committed_predictions(root, predictions_file, c) is not None]
    if not with_preds:
        return ["HEAD"]
    return with_preds[:1] if reference == "first" else with_preds


def decide_against(
    root: Path,
    reference: str,
    current_preds,
    current_metrics: dict | None,
    metric: str,
    tolerance: float,
    predictions_file: str,
    metrics_file: str,
    head_preds=None,
    head_metrics: dict | None = None,
) -> Decision:
    """`decide` against every reference commit; the first that the new model fails decides, else
    the tightest pass (lowest margin) is reported."""
    decisions = []
    for rev in reference_commits(root, reference, predictions_file):
        if rev == "HEAD":
            preds, metrics = head_preds, head_metrics
        else:
            preds = report.committed_predictions(root, predictions_file, rev)
            metrics = report.committed_metrics(root, metrics_file, rev)
        d = decide(preds, current_preds, metrics, current_metrics, metric, tolerance)
        label = "HEAD" if rev == "HEAD" else rev[:8]
        d = Decision(
            d.promote,
            d.reason if rev == "HEAD" else f"against {label} ({reference} reference): {d.reason}",
            d.committed,
            d.new,
            d.documents,
            label,
        )
        if not d.promote:
            return d
        decisions.append(d)
    margins = [
        (d.new - d.committed) if d.new is not None and d.committed is not None else float("inf") for d in decisions
    ]
    return decisions[margins.index(min(margins))]


# ---------------------------------------------------------------------------------------------
# drift: is the batch like the corpus?


def drift_of(root: Path, batches: list) -> tuple[list[dict], str | None]:
    """The drift checks (textclf.drift) of the accepted files together, against the committed
    model and splits: (the checks as dicts, the hold reason or None). No model or splits yet
    (the first run): nothing to compare with, no checks."""
    import pandas as pd

    from textclf import drift, paths
    from textclf.bundle import BundleError
    from textclf.predict import Predictor

    if not batches or not (root / paths.BUNDLE).is_dir():
        return [], None
    try:
        predictor = Predictor(root / paths.BUNDLE)
    except BundleError as err:
        run_logger().warning("drift not checked: %s", err)
        return [], None
    ref = drift.load_reference(root, predictor)
    if ref is None:
        return [], None
    docs = pd.concat(batches, ignore_index=True)
    checks = drift.check_batch(
        docs["text"].tolist(), docs["label"], predictor, ref, load_params("drift", root / "params.yaml")
    )
    for c in checks:
        run_logger().info("drift %s: %s%s", c.name, "HELD: " if c.held else "", c.detail)
    return [c.to_dict() for c in checks], drift.reason(checks) if drift.held(checks) else None
