"""End to end: a temp copy of the project runs the data half with DVC, then reruns nothing."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from tests.fixtures import make_docs, make_repo, run
from textclf.data.vocab import load_vocab

STAGES = ("ingest", "clean", "split", "vocab")


@pytest.mark.slow
def test_dvc_repro_vocab_builds_the_data_half_then_skips_everything(tmp_path):
    docs = make_docs(400, seed=1)
    # a few records every stage has to account for: a duplicate, a blank line, a label conflict
    docs += [
        docs[0],
        ("pos", ""),
        ("pos", "冲突的评论"),
        ("neg", "冲突的评论"),
        ("neg", "<p></p><br/>"),
    ]
    repo = make_repo(tmp_path / "repo", docs=docs)

    first = run(["dvc", "repro", "vocab"], repo)
    for stage in STAGES:
        assert f"Running stage '{stage}'" in first.stdout

    stats = json.loads((repo / "reports/data/ingest.json").read_text(encoding="utf-8"))
    assert stats["read"] == len(docs) == 405
    assert stats["read"] == stats["kept"] + stats["duplicates"] + stats["quarantined"]
    assert stats["duplicates"] == 1
    assert stats["by_reason"]["empty"] == 1 and stats["by_reason"]["label_conflict"] == 2
    assert pq.read_metadata(repo / "data/interim/documents.parquet").num_rows == stats["kept"]
    assert pq.read_metadata(repo / "data/interim/rejected_ingest.parquet").num_rows == stats["quarantined"]

    clean = json.loads((repo / "reports/data/clean.json").read_text(encoding="utf-8"))
    assert clean["read"] == stats["kept"] and clean["quarantined"] == 1  # markup only: no tokens

    split = json.loads((repo / "reports/data/split.json").read_text(encoding="utf-8"))
    assert split["documents"] == clean["kept"] and split["leaked_groups"] == 0
    groups = {
        s: set(pq.read_table(repo / f"data/processed/{s}.parquet", columns=["group_id"])["group_id"].to_pylist())
        for s in ("train", "valid", "test")
    }
    assert sum(split["splits"][s]["documents"] for s in groups) == split["documents"]
    assert not (
        groups["train"] & groups["valid"] or groups["train"] & groups["test"] or groups["valid"] & groups["test"]
    )

    vocab = load_vocab(repo / "data/processed/vocab.json")
    assert vocab["tokens"][:2] == ["<pad>", "<unk>"] and len(vocab["tokens"]) > 10
    assert not (repo / "reports/validation").exists()

    second = run(["dvc", "repro", "vocab"], repo)
    assert "Running stage" not in second.stdout
    for stage in STAGES:
        assert f"Stage '{stage}' didn't change, skipping" in second.stdout
