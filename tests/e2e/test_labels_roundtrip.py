"""A reviewed label round-trips through DVC: `textclf labels fix` → ingest → split → `textclf
diff` → metrics; `textclf labels accept` takes a document out of the queue for good."""

from __future__ import annotations

import json
import sys

import pandas as pd
import pytest

from tests.fixtures import make_docs, make_repo, run

pytestmark = pytest.mark.slow
FAST = {"train": {"model": "linear", "autotune": {"budget_s": 0}}}


def _cli(repo, *args, check=True):
    return run([sys.executable, "-m", "textclf.cli", *args], repo, check=check)


def test_a_fixed_label_flows_through_the_pipeline_and_an_accepted_one_leaves_the_queue(tmp_path):
    docs = make_docs(600, seed=7)
    other = {"pos": "neg", "neg": "pos"}
    docs = [(other[label] if i % 20 == 0 else label, text) for i, (label, text) in enumerate(docs)]  # 30 flips
    repo = make_repo(tmp_path / "repo", docs=docs, params=FAST)
    run(["dvc", "repro", "evaluate"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "first run"], repo)

    queue = pd.read_parquet(repo / "reports/labels/suspects.parquet")
    assert len(queue) >= 10
    in_test = queue[queue["split"] == "test"]
    assert len(in_test) >= 1
    fix = in_test.iloc[0]
    accept = queue[queue["doc_id"] != fix["doc_id"]].iloc[0]
    metrics_before = json.loads((repo / "reports/metrics.json").read_text())
    support_before = {c: v["support"] for c, v in metrics_before["test"]["per_class"].items()}

    out = _cli(repo, "labels", "fix", fix["doc_id"], fix["suggested"], "--note", "e2e").stdout
    assert f"relabelled {fix['label']} -> {fix['suggested']}" in out
    assert f"confirmed as {accept['label']}" in _cli(repo, "labels", "accept", accept["doc_id"]).stdout
    status = run(["dvc", "status"], repo).stdout
    assert "ingest:" in status and "data/labels/corrections.csv" in status
    run(["dvc", "repro", "evaluate"], repo)

    # ingest applied the fix and counted the confirmation without relabelling anything
    ingest = json.loads((repo / "reports/data/ingest.json").read_text())
    assert ingest["relabelled"] == 1 and ingest["reviewed"] == 2
    # split: the fixed document keeps its split, with its new label
    test = pd.read_parquet(repo / "data/processed/test.parquet").set_index("doc_id")
    assert test.loc[fix["doc_id"], "label"] == fix["suggested"]
    # metrics: the test split's class supports moved by one
    metrics = json.loads((repo / "reports/metrics.json").read_text())
    support = {c: v["support"] for c, v in metrics["test"]["per_class"].items()}
    assert support[fix["suggested"]] == support_before[fix["suggested"]] + 1
    assert support[fix["label"]] == support_before[fix["label"]] - 1
    queue = pd.read_parquet(repo / "reports/labels/suspects.parquet")
    assert metrics["test_unflagged"]["flagged"] == int((queue["split"] == "test").sum())
    # textclf diff: the correction is a relabelled document
    diff = json.loads(_cli(repo, "diff", "--json").stdout)
    assert diff["documents"]["relabeled"] == 1, diff["documents"]
    assert fix["doc_id"] in json.dumps(diff["documents"], ensure_ascii=False)

    # both reviewed documents are out of the queue, and stay out when the stage runs again
    for _ in range(2):
        queue = pd.read_parquet(repo / "reports/labels/suspects.parquet")
        assert not {fix["doc_id"], accept["doc_id"]} & set(queue["doc_id"])
        assert json.loads((repo / "reports/labels/metrics.json").read_text())["reviewed"] == 2
        run(["dvc", "repro", "-f", "-s", "labels"], repo)
