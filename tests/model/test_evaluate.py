"""Evaluation metrics against scikit-learn on hand-made examples."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

from stages.evaluate import curves, expected_calibration_error, score

LABELS = ["neg", "pos"]
Y = np.array(["pos", "pos", "neg", "neg", "pos", "neg"], dtype=object)
P = np.array([[0.1, 0.9], [0.6, 0.4], [0.8, 0.2], [0.3, 0.7], [0.2, 0.8], [0.9, 0.1]])


def test_metrics_equal_scikit_learn():
    m = score(Y, P, LABELS)
    y = (Y == "pos").astype(int)
    pred = P.argmax(1)
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred)) == pytest.approx(4 / 6)
    assert m["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert m["weighted_f1"] == pytest.approx(f1_score(y, pred, average="weighted"))
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, P[:, 1]))
    assert m["per_class"]["pos"]["support"] == 3
    assert m["per_class"]["pos"]["recall"] == pytest.approx(2 / 3)


def test_expected_calibration_error_by_hand():
    # two bins used with bins=2: conf 0.9,0.6,0.8,0.7,0.8,0.9 -> all in the upper bin [0.5, 1]
    y = (Y == "pos").astype(int)
    conf = P.max(1)
    correct = (P.argmax(1) == y)
    expected = abs(correct.mean() - conf.mean())
    assert expected_calibration_error(y, P, bins=2) == pytest.approx(expected)
    perfect = np.array([[0.0, 1.0], [1.0, 0.0]])
    assert expected_calibration_error(np.array([1, 0]), perfect) == pytest.approx(0.0)


def test_multiclass_scores_and_curves():
    labels = ["a", "b", "c"]
    y = np.array(["a", "b", "c", "a"], dtype=object)
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [0.3, 0.4, 0.3]])
    m = score(y, p, labels)
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["roc_auc"] is not None
    roc, pr = curves(y, p, labels)
    assert roc[0] == {"fpr": 0.0, "tpr": 0.0} and roc[-1] == {"fpr": 1.0, "tpr": 1.0}
    assert all(set(r) == {"recall", "precision"} for r in pr)


def test_single_class_test_split_has_no_auc():
    m = score(np.array(["pos", "pos"], dtype=object), np.array([[0.2, 0.8], [0.6, 0.4]]), LABELS)
    assert m["roc_auc"] is None


def test_a_class_absent_from_the_split_does_not_count_as_f1_zero():
    labels = ["a", "b", "c"]
    y = np.array(["a", "b", "a", "b"], dtype=object)
    p = np.array([[0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.7, 0.2, 0.1], [0.2, 0.7, 0.1]])
    m = score(y, p, labels)
    assert m["accuracy"] == 1.0 and m["macro_f1"] == pytest.approx(1.0)
    assert m["roc_auc"] == pytest.approx(1.0)
    assert m["per_class"]["c"]["support"] == 0


def test_metrics_json_never_holds_nan(tmp_path):
    import json

    from stages.artifacts import write_json

    write_json({"x": float("nan"), "y": [1.0, float("inf")]}, tmp_path / "m.json")
    assert json.loads((tmp_path / "m.json").read_text()) == {"x": None, "y": [1.0, None]}
