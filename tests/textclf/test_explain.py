"""Why the metric moved (textclf.diff.explain): the decomposition adds up exactly, flips are
counted on the documents both revisions tested with the same label, the test split's changes
split `test_set`, and a relabelled training document is named as the cause of a flip it caused."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from textclf.diff.explain import explain, score


def preds(rows):
    return pd.DataFrame(rows, columns=["doc_id", "label", "predicted"])


def train(rows):
    return pd.DataFrame(
        [(d, lab, np.array(toks.split(), dtype=object)) for d, lab, toks in rows], columns=["doc_id", "label", "tokens"]
    )


A_PREDS = preds(
    [
        ("t1", "pos", "pos"),
        ("t2", "pos", "pos"),  # broken at B
        ("t3", "neg", "pos"),  # fixed at B
        ("t4", "neg", "neg"),
        ("t5", "neg", "neg"),  # removed from the test split at B
        ("t6", "pos", "neg"),  # relabelled neg at B
    ]
)
B_PREDS = preds(
    [
        ("t1", "pos", "pos"),
        ("t2", "pos", "neg"),
        ("t3", "neg", "neg"),
        ("t4", "neg", "neg"),
        ("t6", "neg", "neg"),
        ("t7", "pos", "pos"),  # added: A's model predicts it
        ("t8", "neg", "pos"),  # added
    ]
)
TEXTS = pd.Series({"t7": "new good text", "t8": "new bad text", "t2": "room clean staff kind"})
A_TRAIN = train([("r1", "pos", "room clean staff kind"), ("r2", "neg", "dirty noisy"), ("r3", "pos", "great view")])
B_TRAIN = train(
    [
        ("r1", "neg", "room clean staff kind"),  # relabelled: the cause of t2's flip
        ("r2", "neg", "dirty noisy"),
        ("r4", "neg", "cold breakfast"),  # added
    ]
)
B_TOKENS = pd.Series(
    {d: np.array(t.split(), dtype=object) for d, t in [("t2", "room clean staff"), ("t3", "dirty breakfast")]}
)


def run(predict_a=lambda texts: np.array(["pos"] * len(texts), dtype=object), metric="macro_f1"):
    return explain(A_PREDS, B_PREDS, TEXTS, predict_a, A_TRAIN, B_TRAIN, B_TOKENS, metric=metric, examples=5)


@pytest.mark.parametrize("metric", ["macro_f1", "accuracy"])
def test_total_is_test_set_plus_model_and_each_term_is_what_it_says(metric):
    e = run(metric=metric)
    a = score(A_PREDS["label"], A_PREDS["predicted"], metric)
    b = score(B_PREDS["label"], B_PREDS["predicted"], metric)
    # A's model on B's test documents: its own predictions where it had them, "pos" for t7, t8
    a_on_b = score(B_PREDS["label"], ["pos", "pos", "pos", "neg", "neg", "pos", "pos"], metric)
    assert e["total"] == pytest.approx(b - a) and e["test_set"] == pytest.approx(a_on_b - a)
    assert e["model"] == pytest.approx(b - a_on_b)
    assert e["total"] == pytest.approx(e["test_set"] + e["model"], abs=1e-12)
    assert e["predicted_by_a"] == 2
    shares = e["test_changes"]
    assert {k: v["documents"] for k, v in shares.items()} == {"removed": 1, "relabelled": 1, "added": 2}
    assert sum(v["share"] for v in shares.values()) == pytest.approx(e["test_set"], abs=1e-12)


def test_flips_count_same_label_documents_and_name_the_relabelled_training_document():
    e = run()
    assert e["flips"] == {"fixed": 1, "broken": 1}  # t3 fixed, t2 broken; t6 (relabelled) is neither
    assert e["train_changes"] == {"added": 1, "removed": 1, "relabelled": 1}
    first = e["examples"][0]
    assert (first["doc_id"], first["flip"], first["before"], first["after"]) == ("t2", "broken", "pos", "neg")
    cause = first["causes"][0]
    assert cause["doc_id"] == "r1" and cause["change"] == "relabelled" and cause["was"] == "pos"
    assert cause["label"] == "neg" and 0 < cause["similarity"] <= 1


def test_without_a_readable_model_for_new_test_documents_the_section_says_so():
    e = run(predict_a=None)
    assert "total" in e and "test_set" not in e and "could not be read" in e["error"]
