"""Chunked data stages (`<stage>.chunk_rows` > 0) write exactly what the in-memory path writes:
the same rows in the same order, the same doc_ids, splits, vocabulary and stats."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.pipelines import assert_same, corpus_rows, run_pipeline, write_parquet_source, write_text_source
from textclf.artifacts import ChunkWriter, read_parquet


@pytest.mark.parametrize("layout", ["parquet", "text_dir"])
def test_chunked_outputs_identical(tmp_path, layout):
    rows = corpus_rows()
    if layout == "parquet":
        source = write_parquet_source(tmp_path / "corpus.parquet", rows)
        extra = {"split_column": "split"}
    else:
        source = write_text_source(tmp_path / "raw", rows)
        extra = {}
    whole = run_pipeline(tmp_path / "whole", source, 0, **extra)
    chunked = run_pipeline(tmp_path / "chunked", source, 37, **extra)  # ~17 batches per stage
    assert_same(whole, chunked)
    docs = whole["data/interim/documents.parquet"]
    s = whole["reports/data/ingest.json"]
    assert s["duplicates"] > 50 and s["by_reason"]["label_conflict"] >= 2 and s["quarantined"] > 3
    assert len(docs) > 37 * 5 and docs["doc_id"].is_unique
    if layout == "parquet":
        assert s["predefined_split"] and whole["reports/data/split.json"]["predefined"] >= 1


def test_chunked_empty_source(tmp_path):
    source = write_parquet_source(tmp_path / "corpus.parquet", [("pos", " ", None), ("neg", "!!!", None)])
    drop = {"punctuation": True}  # so that "!!!" is left empty by clean
    whole = run_pipeline(tmp_path / "whole", source, 0, clean=drop)
    assert_same(whole, run_pipeline(tmp_path / "chunked", source, 1, clean=drop))
    assert whole["reports/data/ingest.json"]["kept"] == 1 and whole["reports/data/clean.json"]["kept"] == 0


def test_chunk_writer_is_atomic(tmp_path):
    target = tmp_path / "out.parquet"
    with pytest.raises(RuntimeError), ChunkWriter(target) as w:
        w.write(pd.DataFrame({"a": ["x", "y"]}))
        raise RuntimeError("stage failed half way")
    assert not target.exists() and not list(tmp_path.iterdir())
    with ChunkWriter(target, row_group_size=1) as w:
        w.write(pd.DataFrame({"a": ["x", None]}))
        w.write(pd.DataFrame({"a": ["z"]}))
    assert read_parquet(target)["a"].tolist()[::2] == ["x", "z"]
