"""Chunked data stages (`<stage>.chunk_rows` > 0) write exactly what the in-memory path writes:
the same rows in the same order, the same doc_ids, splits, vocabulary and stats."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from stages import clean, ingest, split, vocab
from tests.fixtures import make_docs, project_params
from textclf.artifacts import ChunkWriter, read_parquet

STAGES = (ingest, clean, split, vocab)
PARQUETS = [
    "data/interim/documents.parquet",
    "data/interim/rejected_ingest.parquet",
    "data/interim/clean.parquet",
    "data/interim/rejected_clean.parquet",
    "data/processed/train.parquet",
    "data/processed/valid.parquet",
    "data/processed/test.parquet",
]
JSONS = [
    "reports/data/ingest.json",
    "reports/data/clean.json",
    "reports/data/split.json",
    "data/processed/vocab.json",
]


def corpus_rows(n: int = 500) -> list[tuple[str, str, str | None]]:
    """(label, text, predefined split): duplicates far apart, a label conflict, blank and marker
    lines, documents empty after cleaning, one text in two predefined splits."""
    rows = [(label, text, None) for label, text in make_docs(n, seed=3)]
    rows += [(label, text, None) for label, text in make_docs(n, seed=3)[:60]]  # exact duplicates
    rows += [
        ("neg", rows[5][1], None),
        ("pos", "   ", None),
        ("pos", "<停止词> x", None),
        ("neg", "!!! 123", None),
        ("pos", "", None),
    ]
    rows += [
        ("pos", rows[10][1], "test"),
        ("pos", rows[11][1], "valid"),
        ("neg", "独特的测试文本", "train"),
    ]
    return rows


def write_parquet_source(path: Path, rows) -> Path:
    pq.write_table(
        pa.table(
            {
                "text": [r[1] for r in rows],
                "label": [r[0] for r in rows],
                "split": [r[2] for r in rows],
            }
        ),
        path,
        row_group_size=97,
    )
    return path


def write_text_source(root: Path, rows) -> Path:
    for label in ("pos", "neg"):
        (root / f"{label}.txt").parent.mkdir(parents=True, exist_ok=True)
        (root / f"{label}.txt").write_text("\n".join(r[1] for r in rows if r[0] == label) + "\n", encoding="utf-8")
    return root


def run_pipeline(
    workdir: Path,
    source: Path,
    chunk_rows: int,
    engine: str = "local",
    clean: dict | None = None,
    **ingest_extra,
) -> dict:
    """Run the four stage mains in `workdir`; return every output, read back."""
    workdir.mkdir(parents=True, exist_ok=True)
    params = project_params()
    params["ingest"].update(source=str(source), **ingest_extra)
    params["clean"].update(clean or {})
    for s in ("ingest", "clean", "split", "vocab"):
        params[s].update(chunk_rows=chunk_rows, engine=engine)
    params["vocab"]["min_freq"] = 1
    (workdir / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True), encoding="utf-8")
    old = os.getcwd()
    os.chdir(workdir)
    try:
        for stage in STAGES:
            stage.main()
    finally:
        os.chdir(old)
    out = {p: read_parquet(workdir / p) for p in PARQUETS}
    out.update({p: json.loads((workdir / p).read_text(encoding="utf-8")) for p in JSONS})
    leftovers = [p for p in workdir.rglob(".*") if p.is_file() or p.is_dir() and p.name.startswith(".ingest-")]
    assert not leftovers, leftovers  # no temp files or spill folders left behind
    return out


def assert_same(a: dict, b: dict) -> None:
    for key in PARQUETS:
        pd.testing.assert_frame_equal(a[key], b[key], check_dtype=False, obj=key)
        for col in a[key].columns:  # values, not just dtype-tolerant equality
            if col == "tokens":
                assert [list(t) for t in a[key][col]] == [list(t) for t in b[key][col]], key
            else:
                assert (
                    a[key][col].astype(object).where(a[key][col].notna(), None).tolist()
                    == b[key][col].astype(object).where(b[key][col].notna(), None).tolist()
                ), (key, col)
    for key in JSONS:
        assert a[key] == b[key], key


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
