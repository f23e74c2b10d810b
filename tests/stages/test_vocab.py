"""vocab: specials first, contiguous ids, deterministic order, min_freq/max_size, bigrams."""

from __future__ import annotations

import json
from collections import Counter

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from stages import vocab as vocab_stage
from textclf.data.vocab import (
    SPECIALS,
    build_vocab,
    check_vocab,
    count_tokens,
    load_vocab,
    vocab_hash,
)
from textclf.errors import InputError
from textclf.params import VocabParams
from textclf.text import bigrams

LIST = pa.list_(pa.string())


def make_vocab(docs, **kw) -> dict:
    params = VocabParams(**kw)
    return build_vocab(count_tokens(pa.array(docs, type=LIST), params.ngrams), params)


def ref_counts(docs, ngrams: int) -> Counter:
    c = Counter(t for d in docs for t in d)
    if ngrams == 2:
        c.update(f"{a} {b}" for d in docs for a, b in zip(d, d[1:], strict=False))
    return c


token = st.sampled_from(["好", "书", "不", "错", "a", "b", "ab", "Z", "<url>", "<pad>", "<unk>", "😀"])
docs = st.lists(st.lists(token, max_size=8), max_size=30)


@settings(max_examples=50, deadline=None)
@given(
    docs=docs,
    min_freq=st.integers(1, 4),
    max_size=st.integers(1, 15),
    ngrams=st.sampled_from([1, 2]),
)
def test_vocab_order_ids_and_limits_match_a_reference(docs, min_freq, max_size, ngrams):
    vocab = check_vocab(make_vocab(docs, min_freq=min_freq, max_size=max_size, ngrams=ngrams))
    tokens, counts = vocab["tokens"], vocab["counts"]
    assert tokens[:2] == ["<pad>", "<unk>"] == list(SPECIALS)
    assert len(set(tokens)) == len(tokens) == len(counts)  # ids = positions: contiguous from 0
    ref = ref_counts(docs, ngrams)
    expected = sorted(
        ((t, n) for t, n in ref.items() if n >= min_freq and t not in SPECIALS),
        key=lambda tn: (-tn[1], tn[0].encode("utf-8")),
    )[:max_size]
    assert list(zip(tokens[2:], counts[2:], strict=True)) == expected  # count desc, token asc
    assert vocab["hash"] == vocab_hash(tokens)
    assert (vocab["ngrams"], vocab["min_freq"], vocab["max_size"]) == (ngrams, min_freq, max_size)


@settings(max_examples=30, deadline=None)
@given(docs=docs, data=st.data())
def test_vocab_is_deterministic_under_document_order(docs, data):
    shuffled = data.draw(st.permutations(docs))
    assert make_vocab(docs, ngrams=2) == make_vocab(shuffled, ngrams=2)


@settings(max_examples=100, deadline=None)
@given(
    docs=st.lists(st.one_of(st.none(), st.lists(token, max_size=5)), max_size=12),
    lo=st.integers(0, 12),
    hi=st.integers(0, 12),
)
@example(docs=[["x"], ["a", "b"], ["c", "d"]], lo=1, hi=3)  # a slice whose offsets do not start at 0
def test_bigrams_stay_within_a_document(docs, lo, hi):
    arr = pa.array(docs, type=LIST)
    lo, hi = min(lo, hi), max(lo, hi)
    sliced = arr.slice(lo, hi - lo)  # batches are slices: offsets must not leak across them
    expected = [[f"{a} {b}" for a, b in zip(d, d[1:], strict=False)] if d else [] for d in docs[lo:hi]]
    assert bigrams(sliced).to_pylist() == expected


def test_bigrams_example():
    out = bigrams(pa.array([["我", "爱", "书"], ["好"], [], ["a", "b"]], type=LIST)).to_pylist()
    assert out == [["我 爱", "爱 书"], [], [], ["a b"]]


def test_check_vocab_rejects_broken_vocabularies(tmp_path):
    good = make_vocab([["a", "b"]])
    for broken, problem in [
        ({**good, "tokens": ["<unk>", "<pad>", "a", "b"]}, "must start with"),
        (
            {
                **good,
                "tokens": ["<pad>", "<unk>", "a", "a"],
                "hash": vocab_hash(["<pad>", "<unk>", "a", "a"]),
            },
            "duplicate",
        ),
        ({**good, "counts": [0, 0, 1]}, "counts"),
        ({**good, "hash": "0" * 64}, "hash"),
        ({**good, "tokens": []}, "missing or empty"),
    ]:
        with pytest.raises(InputError, match=problem):
            check_vocab(broken)
    path = tmp_path / "vocab.json"
    path.write_text(json.dumps(good), encoding="utf-8")
    assert load_vocab(path) == good


# ---------------------------------------------------------------------------------------------
# the stage entry point


def test_main_counts_row_group_by_row_group_like_in_memory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"vocab": {"ngrams": 2, "min_freq": 2}}), encoding="utf-8")
    docs = [["好", "书"], ["好", "书", "不", "错"], ["不", "错"], ["书"]] * 5
    (tmp_path / "data/processed").mkdir(parents=True)
    table = pa.table({"tokens": pa.array(docs, type=LIST), "label": ["a"] * len(docs)})
    pq.write_table(table, "data/processed/train.parquet", row_group_size=3)
    assert pq.ParquetFile("data/processed/train.parquet").num_row_groups == 7
    vocab_stage.main()
    got = json.loads((tmp_path / "data/processed/vocab.json").read_text(encoding="utf-8"))
    assert got == make_vocab(docs, ngrams=2, min_freq=2)
    # 15, then 10 each: ties by token (code point order), bigrams ranked with unigrams
    assert got["tokens"][2:8] == ["书", "不", "不 错", "好", "好 书", "错"]
    assert got["counts"][2:8] == [15, 10, 10, 10, 10, 10]
    assert "好 书" in got["tokens"] and "书 不" in got["tokens"] and "书 书" not in got["tokens"]


def test_main_without_train_split_exits_non_zero(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("vocab: {}\n", encoding="utf-8")
    with pytest.raises(SystemExit) as exc:
        vocab_stage.main()
    assert exc.value.code == 5 and "train.parquet" in caplog.text  # unreadable input


def test_main_exits_non_zero_when_the_vocabulary_breaks_its_contract(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("vocab: {}\n", encoding="utf-8")
    (tmp_path / "data/processed").mkdir(parents=True)
    pd.DataFrame({"tokens": [["a"]]}).to_parquet("data/processed/train.parquet")
    monkeypatch.setattr(vocab_stage, "build_vocab", lambda counts, params: {"tokens": ["a", "a"], "counts": [1, 1]})
    with pytest.raises(SystemExit) as exc:
        vocab_stage.main()
    assert exc.value.code == 4 and "invalid vocabulary" in caplog.text  # its output contract
    assert not (tmp_path / "data/processed/vocab.json").exists()
