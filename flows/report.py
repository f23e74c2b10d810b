"""What a pipeline run reports in the Prefect UI: metrics (model vs baseline, and the change
against the last committed metrics), per-class scores, and a stage summary.

The builders are pure (dicts in, Markdown/rows out); `publish` turns them into artifacts. A run
before the evaluate stage exists, or one that failed early, still reports: the metrics section
then says the metrics are not available yet.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path

from flows.shell import git
from textclf.diff.core import DiffError
from textclf.diff.read import read_output
from textclf.diff.render import markdown_diff

log = logging.getLogger("textclf.flows")

METRICS_FILE = "reports/metrics.json"
PREDICTIONS_FILE = "reports/predictions.parquet"
PREDICTION_COLUMNS = ["doc_id", "label", "predicted"]
# Shown first, in this order; other scalar metrics under "test" follow alphabetically.
HEADLINE = ("accuracy", "macro_f1")
KEY_METRICS = "textclf-metrics"
KEY_PER_CLASS = "textclf-per-class"
KEY_STAGES = "textclf-stages"
KEY_SUSPECTS = "textclf-suspect-labels"
KEY_CONTRACT = "textclf-contract-failures"


# ---------------------------------------------------------------------------------------------
# reading metrics


def read_metrics(root: Path, metrics_file: str = METRICS_FILE) -> dict | None:
    """The workspace's metrics, or None when the file does not exist (yet)."""
    path = root / metrics_file
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        log.warning("%s: unreadable (%s); treating metrics as not available", path, err)
        return None
    return data if isinstance(data, dict) else None


def committed_metrics(root: Path, metrics_file: str = METRICS_FILE, rev: str = "HEAD") -> dict | None:
    """The metrics as last committed to git (DVC metrics are `cache: false` outputs, so git holds
    them); None when there is no commit or the file was never committed."""
    proc = git(root, "show", f"{rev}:{metrics_file}", check=False, text=False, timeout_s=30)
    if proc.returncode < 0:
        log.warning("git show %s:%s failed: %s", rev, metrics_file, proc.stderr)
    if proc.returncode != 0:
        return None
    try:
        data = json.loads(proc.stdout.decode("utf-8"))
    except ValueError:
        log.warning("%s at %s is not valid JSON; no committed metrics to compare with", metrics_file, rev)
        return None
    return data if isinstance(data, dict) else None


def head_commit(root: Path) -> str | None:
    proc = git(root, "rev-parse", "--short", "HEAD", check=False, timeout_s=30)
    return proc.stdout.strip() if proc.returncode == 0 else None


def metric_value(metrics: dict | None, dotted: str) -> float | None:
    """`test.macro_f1` → metrics["test"]["macro_f1"] as a float, None if absent."""
    node = metrics
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return float(node) if isinstance(node, int | float) and not isinstance(node, bool) else None


def _scalars(section: dict | None) -> dict[str, int | float]:
    if not isinstance(section, dict):
        return {}
    return {k: v for k, v in section.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def read_predictions(root: Path, path: str = PREDICTIONS_FILE):
    """The workspace's test predictions (doc_id, label, predicted), or None (with the reason
    logged) when the file is absent or unreadable."""
    import pandas as pd

    full = root / path
    if not full.exists():
        return None
    try:
        return pd.read_parquet(full, columns=PREDICTION_COLUMNS)
    except (OSError, ValueError, KeyError) as err:
        log.warning("%s: unreadable (%s); no predictions to compare", full, err)
        return None


def committed_predictions(root: Path, path: str = PREDICTIONS_FILE, rev: str = "HEAD"):
    """The test predictions as committed at `rev` — a DVC output, read as `textclf diff` reads
    outputs (`textclf.diff.read.read_output`) — or None, with the reason logged."""
    from dvc.exceptions import DvcException

    try:
        return read_output(root, rev, path, PREDICTION_COLUMNS)
    except DiffError as err:
        log.info("no committed predictions to compare with: %s", err)
    except (DvcException, OSError, ValueError, KeyError) as err:
        log.warning("%s at %s: unreadable (%s)", path, rev, err)
    return None


# ---------------------------------------------------------------------------------------------
# Markdown and tables


def _fmt(v: int | float | None, signed: bool = False) -> str:
    if v is None:
        return "–"
    if isinstance(v, int):  # counts (n): no decimals
        return f"{v:+d}" if signed else f"{v:d}"
    return f"{v:+.4f}" if signed else f"{v:.4f}"


def metrics_table(current: dict, committed: dict | None, commit: str | None) -> str:
    test = _scalars(current.get("test"))
    base = _scalars(current.get("baseline"))
    before = _scalars((committed or {}).get("test"))
    names = [k for k in HEADLINE if k in test] + sorted(k for k in test if k not in HEADLINE)
    since = f"last commit ({commit})" if commit else "last commit"
    lines = [
        f"| metric | model | baseline | model − baseline | {since} | change |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for k in names:
        b, old = base.get(k), before.get(k)
        lines.append(
            f"| {k} | {_fmt(test[k])} | {_fmt(b)} | "
            f"{_fmt(None if b is None else test[k] - b, True)} | {_fmt(old)} | "
            f"{_fmt(None if old is None else test[k] - old, True)} |"
        )
    return "\n".join(lines)


def comparison_line(current: dict) -> str | None:
    """One sentence on whether model - baseline is more than the test split's noise (evaluate's
    `comparison`: paired bootstrap interval and McNemar p-value)."""
    c = current.get("comparison")
    if not isinstance(c, dict) or metric_value(current, "comparison.delta_macro_f1") is None:
        return None
    text = f"Model − baseline macro-F1: {c['delta_macro_f1']:+.4f}"
    low, high = (
        metric_value(current, "comparison.ci95_low"),
        metric_value(current, "comparison.ci95_high"),
    )
    if low is not None and high is not None:
        verdict = (
            "the model is better"
            if low > 0
            else "the baseline is better"
            if high < 0
            else "within the test split's noise"
        )
        text += f", 95% paired bootstrap interval [{low:+.4f}, {high:+.4f}]: {verdict}"
    p = metric_value(current, "comparison.mcnemar_p")
    if p is not None:
        text += (
            f". McNemar p = {p:.3g} ({c.get('model_only_correct')} documents only the model gets right, "
            f"{c.get('baseline_only_correct')} only the baseline)"
        )
    return text + "."


def references_line(current: dict) -> str | None:
    """Issue 11's bar in one sentence: the model against the best of its references."""
    r = (current.get("comparison") or {}).get("references")
    if not isinstance(r, dict) or r.get("margin") is None:
        return None
    raw = metric_value(current, "baseline_raw.macro_f1")
    verdict = "**non-inferior**" if r["non_inferior"] else f"**below the bar** (more than {r['tolerance']} under it)"
    return (
        f"Best reference: `{r['best']}` (macro-F1 {r['best_macro_f1']:.4f}; TF-IDF + LR on the raw text "
        f"{_fmt(raw)}). Model margin {r['margin']:+.4f}: {verdict}."
    )


def per_class_rows(metrics: dict | None) -> list[dict]:
    per_class = ((metrics or {}).get("test") or {}).get("per_class")
    if not isinstance(per_class, dict):
        return []
    rows = []
    for label in sorted(per_class):
        scores = per_class[label] if isinstance(per_class[label], dict) else {}
        rows.append({"label": label, **{k: scores.get(k) for k in ("precision", "recall", "f1", "support")}})
    return rows


def suspect_rows(root: Path, top: int) -> list[dict]:
    """The first `top` rows of the suspect-labels queue (reports/labels/suspects.parquet), for a
    table artifact; none when the labels stage has not run."""
    from textclf.artifacts import read_parquet
    from textclf.errors import InputError
    from textclf.paths import SUSPECTS

    if top <= 0 or not (root / SUSPECTS).exists():
        return []
    try:
        queue = read_parquet(root / SUSPECTS).head(top)
    except InputError as err:
        log.warning("suspect labels not shown: %s", err)
        return []
    return [
        {
            "rank": int(r.rank),
            "doc_id": r.doc_id,
            "split": r.split,
            "label": r.label,
            "suggested": r.suggested,
            "self_confidence": round(float(r.self_confidence), 4),
            "text": r.text if len(r.text) <= 120 else r.text[:119] + "…",
        }
        for r in queue.itertuples()
    ]


def contract_failure_rows(root: Path, error: BaseException | None, limit: int = 200) -> list[dict]:
    """The failure cases of a broken data contract (the stage's reports/validation/<stage>.json),
    for a table artifact: column, check, failing value, row index; none for any other failure."""
    from textclf.errors import ContractError

    if not isinstance(error, ContractError) or error.report is None:
        return []
    path = root / error.report
    try:
        cases = json.loads(path.read_text(encoding="utf-8")).get("failure_cases") or []
    except (OSError, ValueError) as err:
        log.warning("contract failure cases not shown: %s: %s", path, err)
        return []
    keys = ("column", "check", "failure_case", "index")
    return [{"stage": error.stage, **{k: c.get(k) for k in keys}} for c in cases[:limit] if isinstance(c, dict)]


def stage_rows(stages: Iterable[dict], planned: Iterable[str] = (), failed: str | None = None) -> list[dict]:
    """One row per planned stage: ran / skipped / restored with seconds, or failed / not run."""
    done = {s["stage"]: s for s in stages}
    rows = []
    for name in list(planned) or list(done):
        if name in done:
            rows.append(
                {
                    "stage": name,
                    "status": done[name]["status"],
                    "seconds": round(float(done[name]["seconds"]), 2),
                }
            )
        else:
            rows.append(
                {
                    "stage": name,
                    "status": "failed" if name == failed else "not run",
                    "seconds": None,
                }
            )
    return rows


def data_diff_markdown(root: Path, base_rev: str = "HEAD") -> str | None:
    """The data changes of this run against `base_rev` (`textclf diff`), as Markdown.

    None when there is nothing to compare against (e.g. the base revision never ran the
    pipeline): the artifact then says why instead of failing the run."""

    try:
        return markdown_diff(root, base_rev, level=3)
    except DiffError as err:
        log.info("no data diff against %s: %s", base_rev, err)
        return f"_No `textclf diff` against `{base_rev}`: {err}_"


def run_markdown(
    *,
    root: Path,
    target: str | None,
    overrides: list[str],
    kept: bool,
    current: dict | None,
    committed: dict | None,
    commit: str | None,
    stages: list[dict],
    metrics_file: str,
    error: str | None = None,
    data_diff: str | None = None,
    experiment: dict | None = None,
) -> str:
    out = ["# textclf pipeline run", ""]
    out.append(f"- repository: `{root}`")
    out.append(f"- target: `{target or 'all stages'}`")
    if overrides:
        out.append(
            f"- params overrides ({'kept in params.yaml' if kept else 'not kept'}): "
            + ", ".join(f"`{o}`" for o in overrides)
        )
    if experiment and experiment.get("name"):
        name = experiment["name"]
        out.append(f"- DVC experiment: `{name}` (`dvc exp show`; `dvc exp apply {name}`, `dvc exp branch {name}`)")
    elif experiment and experiment.get("error"):
        out.append(f"- DVC experiment: not saved ({experiment['error']})")
    if error:
        out += ["", "## Failed", "", "```", error.strip(), "```"]
    out += ["", "## Metrics (test split)", ""]
    if current is None:
        out.append(
            f"_Metrics not available yet: `{metrics_file}` does not exist (the pipeline has "
            "no evaluate stage yet, or it has not run)._"
        )
    else:
        out.append(metrics_table(current, committed, commit))
        for line in (comparison_line(current), references_line(current)):
            if line:
                out += ["", line]
        if committed is None:
            out += ["", "_No committed metrics to compare with._"]
    out += ["", "## Stages", "", "| stage | status | seconds |", "|---|---|---:|"]
    for row in stages:
        secs = "–" if row["seconds"] is None else f"{row['seconds']:.2f}"
        out.append(f"| {row['stage']} | {row['status']} | {secs} |")
    out += ["", "## Data changes", ""]
    out.append(data_diff.strip() if data_diff else "_Not available._")
    return "\n".join(out) + "\n"


def publish(
    markdown: str,
    per_class: list[dict],
    stages: list[dict],
    description: str,
    suspects: list[dict] | None = None,
    contract_failures: list[dict] | None = None,
) -> None:
    """Create the run's artifacts (keys stay the same run to run, so the UI shows a history)."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    create_markdown_artifact(markdown, key=KEY_METRICS, description=description)
    if per_class:
        create_table_artifact(per_class, key=KEY_PER_CLASS, description="per-class test scores")
    create_table_artifact(stages, key=KEY_STAGES, description="stages: ran / skipped, seconds")
    if contract_failures:
        create_table_artifact(
            contract_failures,
            key=KEY_CONTRACT,
            description="why the stage's output broke its data contract (the first 200 failure cases; "
            "all of them are in reports/validation/<stage>.json)",
        )
    if suspects:
        create_table_artifact(
            suspects,
            key=KEY_SUSPECTS,
            description="suspect labels, most likely mislabelled first: `textclf labels fix DOC_ID LABEL` "
            "or `textclf labels accept DOC_ID`, then dvc repro",
        )


def publish_incoming(outcome: dict) -> None:
    from prefect.artifacts import create_markdown_artifact

    lines = ["# textclf new data", ""]
    if outcome["accepted"]:
        lines += ["## Accepted", ""] + [f"- `{v['file']}`: {v['reason']}" for v in outcome["accepted"]]
    if outcome["rejected"]:
        lines += ["", "## Rejected (quarantined)", ""] + [
            f"- `{v['file']}`: {v['reason']}" for v in outcome["rejected"]
        ]
    if outcome.get("drift"):
        from textclf.drift import Check, table

        lines += ["", "## Drift (the batch against the corpus)", "", *table([Check(**c) for c in outcome["drift"]])]
    lines += ["", "## Promotion", ""]
    d = outcome.get("decision")
    if outcome["promoted"]:
        lines.append(f"Promoted in commit `{outcome['commit']}`: {d['reason']}.")
        lines.append(
            f"Pushed to DVC remote `{outcome['pushed_to']}`."
            if outcome["pushed_to"]
            else "No DVC remote configured: nothing pushed."
        )
    elif d:
        lines.append(
            f"**Not promoted** — {d['reason']}. Nothing was committed; the run's changes were undone "
            "and the files were quarantined."
        )
    else:
        lines.append("Nothing to promote: no file passed the checks.")
    try:
        create_markdown_artifact(
            "\n".join(lines) + "\n",
            key="textclf-incoming",
            description="new data: checks and promotion gate",
        )
    except Exception as err:  # noqa: BLE001 - the outcome is already logged
        log.warning("could not create the incoming artifact: %s", err)
