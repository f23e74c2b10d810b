"""The drift checks (textclf.drift) on a model trained here on sample reviews: in-distribution
batches pass, English text, a one-label batch and other lengths are held, small batches are
checked on OOV only."""

from __future__ import annotations

import pytest

from tests.fixtures import english, sample_docs
from tests.pipelines import build_pipeline
from textclf import drift
from textclf.params import DriftParams
from textclf.predict import Predictor


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    pipe = build_pipeline(tmp_path_factory.mktemp("drift"), sample_docs(), model="linear", bigrams="vocab")
    predictor = Predictor(pipe.bundle)
    test = pipe.parts["test"]
    confidence = predictor.predict_proba(test["text"].tolist()).max(axis=1)
    ref = drift.reference(predictor, pipe.tokens("test"), confidence, pipe.parts["train"]["label"])
    return pipe, predictor, ref


def by_name(checks):
    return {c.name: c for c in checks}


def test_an_in_distribution_batch_passes(setup):
    pipe, predictor, ref = setup
    valid = pipe.parts["valid"]
    checks = drift.check_batch(valid["text"].tolist(), valid["label"], predictor, ref, DriftParams())
    assert [c.name for c in checks] == ["oov", "labels", "confidence", "length"]
    assert not drift.held(checks), drift.table(checks)
    assert all(c.value is not None for c in checks)


def test_english_text_in_a_chinese_corpus_is_held_and_the_reason_names_the_check(setup):
    _, predictor, ref = setup
    texts = english(120)
    labels = ["pos", "neg"] * 60
    checks = by_name(drift.check_batch(texts, labels, predictor, ref, DriftParams()))
    assert checks["oov"].held and checks["oov"].value > 0.9
    assert not checks["labels"].held  # the labels are as the corpus's
    why = drift.reason(list(checks.values()))
    assert why.startswith("drift: OOV rate 1.00 > 0.") and "drift.max_oov_increase" in why and "--allow-drift" in why
    # a looser threshold lets the same batch through on OOV
    loose = by_name(drift.check_batch(texts, labels, predictor, ref, DriftParams(max_oov_increase=1.0)))
    assert not loose["oov"].held


def test_a_batch_of_one_label_is_held_on_label_shares(setup):
    pipe, predictor, ref = setup
    valid = pipe.parts["valid"]
    neg = valid[valid["label"] == "neg"]
    checks = by_name(drift.check_batch(neg["text"].tolist(), neg["label"], predictor, ref, DriftParams()))
    assert checks["labels"].held and checks["labels"].value == pytest.approx(1 - ref.label_shares["neg"])
    assert not checks["oov"].held


def test_documents_of_another_length_are_held_on_length(setup):
    pipe, predictor, ref = setup
    valid = pipe.parts["valid"]
    long = [" ".join([t] * 8) for t in valid["text"].tolist()]  # the same reviews, eight times as long
    checks = by_name(drift.check_batch(long, valid["label"], predictor, ref, DriftParams()))
    assert checks["length"].held and checks["length"].value > 0.5
    assert not checks["oov"].held


def test_a_small_batch_is_checked_on_oov_only(setup):
    _, predictor, ref = setup
    checks = drift.check_batch(english(5), ["pos"] * 5, predictor, ref, DriftParams(min_docs=30))
    assert by_name(checks)["oov"].held
    rest = [c for c in checks if c.name != "oov"]
    assert all(c.value is None and not c.held and "drift.min_docs" in c.detail for c in rest)
    assert "| oov |" in "\n".join(drift.table(checks))
