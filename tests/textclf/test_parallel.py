"""Threaded batch work gives the same output as one thread, in order, for any thread count."""

from __future__ import annotations

import subprocess
import sys
import threading

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from textclf import parallel
from textclf.data.vocab import build_vocab, count_batches, count_row_groups
from textclf.params import CleanParams, VocabParams
from textclf.text import clean_batch, normalize

TEXTS = [
    "<p>Great  phone!!!</p> see http://x.cn/a 很好",
    "质量 不错，值得购买。",
    "\ufeffBAD\tservice&amp;slow\u200b",
    None,
    "",
    "mail me@example.com now 123",
    "ｆｕｌｌ-width ＡＢＣ １２３",
    "emoji 😀 and 𠀋 astral",
] * 40


@pytest.fixture
def tiny_slices(monkeypatch):
    monkeypatch.setattr(parallel, "MIN_ROWS", 1)


@pytest.mark.parametrize("threads", [2, 3, 7])
def test_map_slices_matches_one_thread(tiny_slices, monkeypatch, threads):
    params = CleanParams(html=True, urls=True, punctuation=True, digits=True)
    arr = pa.array(TEXTS, type=pa.string())
    monkeypatch.setattr(parallel, "thread_count", lambda: 1)
    want_norm, want_tokens = normalize(arr), clean_batch(arr, params, frozenset({"and"}))
    monkeypatch.setattr(parallel, "thread_count", lambda: threads)
    got_norm, got_tokens = normalize(arr), clean_batch(arr, params, frozenset({"and"}))
    assert got_norm.equals(want_norm)
    assert got_tokens.equals(want_tokens)
    assert len(got_tokens) == len(TEXTS)


def test_map_slices_runs_on_several_threads(tiny_slices):
    barrier = threading.Barrier(3, timeout=30)  # three slices that must run at the same time

    def fn(a):
        barrier.wait()
        return a

    arr = pa.array(range(1000))
    assert parallel.map_slices(fn, arr, threads=3).equals(arr)


def test_small_batches_stay_on_the_calling_thread():
    seen = set()
    arr = pa.array(range(parallel.MIN_ROWS * 2 - 1))
    parallel.map_slices(lambda a: seen.add(threading.get_ident()) or a, arr, threads=8)
    assert seen == {threading.get_ident()}


def test_map_threads_keeps_item_order():
    assert parallel.map_threads(lambda x: x * x, range(50), threads=4) == [x * x for x in range(50)]
    assert parallel.map_threads(lambda x: x, [], threads=4) == []


def test_vocab_counted_by_row_group_on_threads_is_the_same_vocab(tmp_path):
    tokens = clean_batch(pa.array(TEXTS * 5, type=pa.string()), CleanParams())
    path = tmp_path / "train.parquet"
    pq.write_table(pa.table({"tokens": tokens}), path, row_group_size=97)
    row_groups = pq.ParquetFile(path).num_row_groups
    assert row_groups > 4
    params = VocabParams(ngrams=2, min_freq=1)
    want = build_vocab(count_batches([tokens], 2), params)
    for threads in (1, 2, 3):
        assert build_vocab(count_row_groups(str(path), row_groups, 2, threads=threads), params) == want


def test_validating_a_contract_does_not_import_dask():
    """pandera's class-based models import dask.dataframe when dask is installed (~0.8 s of every
    stage's start-up); the contracts are plain schemas so no stage pays it."""
    code = (
        "import sys, pandas as pd, pyarrow as pa\n"
        "from textclf import schemas\n"
        "df = pd.DataFrame({'doc_id': ['0123456789abcdef'], 'text': ['a'], 'label': ['x'], 'source': ['s'],"
        " 'line': pd.array([1], dtype='Int64'), 'split': pd.Series([None], dtype=object),"
        " 'tokens': pd.Series([['a']], dtype=schemas.TOKENS_DTYPE)})\n"
        "schemas.validate(df, schemas.Clean, 'clean')\n"
        "assert 'dask' not in sys.modules, sorted(m for m in sys.modules if m.startswith('dask'))[:5]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
