"""split: leak-free (identical token sequences share a split), stable as data grows, balanced."""

from __future__ import annotations

import json
from functools import lru_cache

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from stages import split as split_stage
from tests.fixtures import contract_failure
from textclf import schemas
from textclf.artifacts import read_parquet, write_parquet
from textclf.data.split import group_ids, split
from textclf.params import SplitParams
from textclf.text import hash64, to_hex


def clean_frame(token_lists, labels=None, splits=None, start: int = 0) -> pd.DataFrame:
    n = len(token_lists)
    texts = [" ".join(t) + f" #{start + i}" for i, t in enumerate(token_lists)]  # distinct documents
    return pd.DataFrame(
        {
            "doc_id": pd.Series(to_hex(hash64(texts)), dtype="str"),
            "text": pd.Series(texts, dtype="str"),
            "label": pd.Series(labels if labels is not None else ["a"] * n, dtype="str"),
            "source": pd.Series(["mem"] * n, dtype="str"),
            "line": pd.array(range(start + 1, start + n + 1), dtype="Int64"),
            "split": pd.Series(splits if splits is not None else [None] * n, dtype="str"),
            "tokens": pd.Series(list(token_lists), dtype=schemas.TOKENS_DTYPE),
        }
    )


def assignment(parts: dict[str, pd.DataFrame]) -> dict[str, str]:
    return {d: name for name, part in parts.items() for d in part["doc_id"]}


tokens = st.lists(st.sampled_from(["好", "书", "不", "错", "good", "bad", "<url>"]), min_size=1, max_size=3)
docs = st.lists(tokens, min_size=0, max_size=60)
seeds = st.integers(min_value=0, max_value=2**31)


@settings(max_examples=40, deadline=None)
@given(old=docs, new=docs, seed=seeds)
def test_adding_documents_never_moves_an_existing_document(old, new, seed):
    params = SplitParams(seed=seed)
    before, _ = split(clean_frame(old), params)
    # the new documents share token sequences with old ones often (small alphabet): same groups
    after, _ = split(pd.concat([clean_frame(old), clean_frame(new, start=len(old))], ignore_index=True), params)
    a, b = assignment(before), assignment(after)
    assert {d: b[d] for d in a} == a
    assert len(b) == len(old) + len(new)


@settings(max_examples=40, deadline=None)
@given(
    corpus=docs,
    predefined=st.lists(st.sampled_from([None, None, "train", "valid", "test"]), min_size=60, max_size=60),
    seed=seeds,
)
def test_identical_token_sequences_never_land_in_two_splits(corpus, predefined, seed):
    frame = clean_frame(corpus, splits=predefined[: len(corpus)])
    parts, stats = split(frame, SplitParams(seed=seed))
    where: dict[tuple, set[str]] = {}
    for name, part in parts.items():
        assert (part["split"] == name).all()
        schemas.validate(part, schemas.SplitDocs, "split")
        for toks in part["tokens"]:
            where.setdefault(tuple(toks), set()).add(name)
    assert all(len(s) == 1 for s in where.values())  # checked on the tokens themselves, not group_id
    assert stats["leaked_groups"] == 0
    assert sum(len(p) for p in parts.values()) == len(corpus)
    # a predefined split decides for its whole group (latest of train < valid < test)
    rank = {"train": 0, "valid": 1, "test": 2}
    for toks, sp in zip(corpus, predefined, strict=False):
        if sp is not None:
            (got,) = where[tuple(toks)]
            assert rank[got] >= rank[sp]


@lru_cache(maxsize=1)
def generated_corpus(n: int = 50_000) -> pd.DataFrame:
    """Three classes of very different sizes, about 5% repeated token sequences."""
    rng = np.random.default_rng(7)
    labels = rng.choice(["big", "mid", "small"], size=n, p=[0.62, 0.3, 0.08])
    words = np.array([f"w{i}" for i in range(400)])
    lists = [list(words[rng.integers(0, 400, size=rng.integers(3, 9))]) for _ in range(n)]
    for i in rng.integers(0, n, size=n // 20):  # repeats within a class
        j = int(rng.integers(0, n))
        if labels[j] == labels[i]:
            lists[j] = lists[i]
    return clean_frame(lists, labels=list(labels))


# Hash assignment puts each group in a split independently, so a class's share in a split is a
# binomial proportion: about 1.6 points standard deviation in a 1,000-document split, where ±3
# points is only ~2 sigma (a seed that misses it exists — 98 on a 12,000-document corpus). The
# guarantee is statistical and tightens with size; this checks it where it is 4+ sigma (splits of
# >= 5,000 documents), over a fixed set of seeds (derandomize: the same examples every run).
@settings(max_examples=20, deadline=None, derandomize=True)
@given(seed=seeds, ratios=st.sampled_from([(0.8, 0.1, 0.1), (0.7, 0.15, 0.15), (0.6, 0.2, 0.2)]))
def test_class_shares_within_three_points_in_large_splits(seed, ratios):
    frame = generated_corpus()
    train, valid, test = ratios
    parts, stats = split(frame, SplitParams(seed=seed, train=train, valid=valid, test=test))
    overall = frame["label"].value_counts(normalize=True)
    big_classes = [c for c, n in frame["label"].value_counts().items() if n >= 200]
    assert big_classes == ["big", "mid", "small"]
    for name, part in parts.items():
        assert len(part) >= 1000
        shares = part["label"].value_counts(normalize=True)
        dev = max(abs(shares.get(c, 0.0) - overall[c]) for c in big_classes)
        assert dev <= 0.03, (name, dev)
        assert stats["splits"][name]["max_share_deviation"] == pytest.approx(dev, abs=1e-4)
        assert abs(len(part) / len(frame) - {"train": train, "valid": valid, "test": test}[name]) < 0.01


def test_group_id_is_a_hash_of_the_token_sequence():
    frame = clean_frame([["a", "b"], ["a", "b"], ["ab"], ["a b"], ["b", "a"]])
    g = group_ids(frame["tokens"])
    assert g[0] == g[1]  # same tokens, different documents: one group
    assert len({g[0], g[2], g[3], g[4]}) == 4  # token boundaries and order matter
    assert all(len(x) == 16 for x in g)


def test_seed_changes_the_assignment():
    frame = generated_corpus().head(2000)
    a = assignment(split(frame, SplitParams(seed=1))[0])
    b = assignment(split(frame, SplitParams(seed=2))[0])
    assert a.keys() == b.keys() and a != b


def test_zero_valid_ratio_gives_an_empty_valid_split():
    parts, stats = split(
        clean_frame([["x", str(i)] for i in range(200)]),
        SplitParams(train=0.7, valid=0.0, test=0.3),
    )
    assert len(parts["valid"]) == 0 and stats["splits"]["valid"]["documents"] == 0
    schemas.validate(parts["valid"], schemas.SplitDocs, "split")


# ---------------------------------------------------------------------------------------------
# the stage entry point


def setup_stage(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"split": {"seed": 3}}), encoding="utf-8")
    lists = [["w", str(i % 150)] for i in range(300)]
    write_parquet(clean_frame(lists, labels=["a", "b"] * 150), "data/interim/clean.parquet")


def test_main_writes_the_three_splits_and_stats(tmp_path, monkeypatch):
    setup_stage(tmp_path, monkeypatch)
    split_stage.main()
    parts = {s: read_parquet(f"data/processed/{s}.parquet") for s in schemas.SPLITS}
    assert sum(len(p) for p in parts.values()) == 300
    groups = [set(p["group_id"]) for p in parts.values()]
    assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])
    stats = json.loads((tmp_path / "reports/data/split.json").read_text(encoding="utf-8"))
    assert stats["documents"] == 300 and stats["groups"] == 150 and stats["leaked_groups"] == 0


def test_main_exits_non_zero_and_reports_when_output_breaks_the_contract(tmp_path, monkeypatch):
    setup_stage(tmp_path, monkeypatch)

    def broken(clean, params):
        parts, stats = split(clean, params)
        parts["train"] = parts["train"].assign(group_id="zz")
        return parts, stats

    monkeypatch.setattr(split_stage, "split", broken)
    report = contract_failure(split_stage.main, tmp_path, "split")
    assert any("group_id" in line and "str_matches" in line for line in report["summary"])
    assert not (tmp_path / "data/processed/train.parquet").exists()


def test_main_refuses_a_group_in_two_splits(tmp_path, monkeypatch):
    setup_stage(tmp_path, monkeypatch)

    def leaky(clean, params):
        parts, stats = split(clean, params)
        moved = parts["train"].iloc[:1]  # a copy of a train document's group in test: leakage
        parts["test"] = pd.concat([parts["test"], moved.assign(split="test", doc_id="0" * 16)], ignore_index=True)
        return parts, stats

    monkeypatch.setattr(split_stage, "split", leaky)
    report = contract_failure(split_stage.main, tmp_path, "split")
    assert report["summary"] == ["  column group_id: check one_split_per_group failed for 1 value(s)"]
    assert not any((tmp_path / f"data/processed/{s}.parquet").exists() for s in schemas.SPLITS)
