"""Evaluation metrics against scikit-learn on hand-made examples."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

from textclf.evaluate import compare_to_baseline, expected_calibration_error, plots, score
from textclf.stats import bootstrap_macro_f1

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
    correct = P.argmax(1) == y
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
    by_name = {pl.name: pl for pl in plots(y, np.array(labels)[p.argmax(axis=1)], p, labels, bins=5)}
    assert set(by_name) == {"confusion", "roc", "precision_recall", "calibration"}
    # micro-averaged one-vs-rest: a (document, class) pair per point, positive where it is the truth
    roc = by_name["roc"]
    assert roc.truth.tolist() == [1, 0, 0, 0, 1, 0, 0, 0, 1, 1, 0, 0] and roc.scores.tolist() == p.ravel().tolist()
    assert by_name["precision_recall"].truth is roc.truth
    cm = by_name["confusion"]
    assert cm.truth.tolist() == ["a", "b", "c", "a"] and cm.scores.tolist() == ["a", "b", "c", "b"]
    cal = by_name["calibration"]  # the ECE's inputs: top-class confidence, and whether it was right
    assert cal.truth.tolist() == [1, 1, 1, 0] and cal.scores.tolist() == [0.7, 0.8, 0.6, 0.4]
    assert cal.options["n_bins"] == 5


def test_binary_curves_score_the_second_label_and_one_class_leaves_them_undefined():
    labels = ["neg", "pos"]
    p = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    y = np.array(["neg", "pos", "pos"], dtype=object)
    roc = {pl.name: pl for pl in plots(y, np.array(labels)[p.argmax(axis=1)], p, labels, bins=10)}["roc"]
    assert roc.truth.tolist() == [0, 1, 1] and roc.scores.tolist() == [0.1, 0.8, 0.4]
    one = {pl.name: pl for pl in plots(y[:1], np.array(["neg"]), p[:1], labels, bins=10)}
    assert one["roc"].truth is None and one["precision_recall"].scores is None
    assert one["calibration"].truth.tolist() == [1]  # defined: the one prediction is right


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

    from textclf.artifacts import write_json

    write_json({"x": float("nan"), "y": [1.0, float("inf")]}, tmp_path / "m.json")
    assert json.loads((tmp_path / "m.json").read_text()) == {"x": None, "y": [1.0, None]}


# ---------------------------------------------------------------------------------------------
# model vs baseline: is the difference more than the test split's noise?


def _pair(n: int, model_acc: float, base_acc: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    pm = np.where(rng.random(n) < model_acc, y, 1 - y)
    pb = np.where(rng.random(n) < base_acc, y, 1 - y)
    return y, pm, pb


def test_bootstrap_replicates_are_scikit_learn_macro_f1_of_the_resampled_split():

    y, pm, _ = _pair(300, 0.8, 0.8)
    rng = np.random.default_rng(7)
    idx = rng.integers(0, len(y), (5, len(y)))
    counts = np.stack([np.bincount(i, minlength=len(y)) for i in idx])
    got = bootstrap_macro_f1(y, pm, counts, k=2)
    want = [f1_score(y[i], pm[i], average="macro") for i in idx]
    assert got == pytest.approx(want, abs=1e-12)


def test_identical_predictions_tie_exactly():

    y, pm, _ = _pair(200, 0.8, 0.8)
    c = compare_to_baseline(y, pm, pm.copy(), k=2, n_boot=200, seed=0)
    assert c["delta_macro_f1"] == 0.0 and c["ci95_low"] == 0.0 and c["ci95_high"] == 0.0
    assert c["model_only_correct"] == c["baseline_only_correct"] == 0
    assert c["mcnemar_p"] == 1.0


def test_a_clearly_better_model_has_a_confidence_interval_above_zero():

    y, pm, pb = _pair(1000, 0.95, 0.75)
    c = compare_to_baseline(y, pm, pb, k=2, n_boot=500, seed=0)
    observed = f1_score(y, pm, average="macro") - f1_score(y, pb, average="macro")
    assert c["delta_macro_f1"] == pytest.approx(observed)
    assert 0 < c["ci95_low"] < observed < c["ci95_high"]
    assert c["mcnemar_p"] < 1e-6 and c["model_only_correct"] > c["baseline_only_correct"]


def test_a_noise_level_difference_straddles_zero_and_the_comparison_is_deterministic():

    y, pm, pb = _pair(400, 0.85, 0.85, seed=3)
    a = compare_to_baseline(y, pm, pb, k=2, n_boot=300, seed=1)
    assert a["ci95_low"] < 0 < a["ci95_high"] and a["mcnemar_p"] > 0.05
    assert compare_to_baseline(y, pm, pb, k=2, n_boot=300, seed=1) == a
    off = compare_to_baseline(y, pm, pb, k=2, n_boot=0, seed=1)
    assert off["ci95_low"] is None and off["bootstrap"] == 0 and off["delta_macro_f1"] == a["delta_macro_f1"]


def test_drawing_triples_is_resampling_documents_multiclass():
    """The bootstrap draws counts over (truth, model, baseline) triples; its interval matches a
    brute-force resampling of the documents, and the point estimate is scikit-learn's, with 4
    classes of which one is rare (absent from many replicates)."""

    rng = np.random.default_rng(5)
    n, k = 600, 4
    y = rng.choice(k, n, p=[0.45, 0.3, 0.22, 0.03])
    pm = np.where(rng.random(n) < 0.8, y, rng.integers(0, k, n))
    pb = np.where(rng.random(n) < 0.7, y, rng.integers(0, k, n))
    c = compare_to_baseline(y, pm, pb, k=k, n_boot=4000, seed=0)

    def macro(t, p):
        return f1_score(t, p, average="macro", labels=np.union1d(t, p))

    assert c["delta_macro_f1"] == pytest.approx(macro(y, pm) - macro(y, pb))
    # documents resampled directly (per-document draw counts; replicate scores checked against
    # scikit-learn in test_bootstrap_replicates_are_scikit_learn_macro_f1_of_the_resampled_split)
    draws = np.random.default_rng(1).multinomial(n, np.full(n, 1 / n), size=4000)
    brute = np.percentile(bootstrap_macro_f1(y, pm, draws, k) - bootstrap_macro_f1(y, pb, draws, k), [2.5, 97.5])
    assert c["ci95_low"] == pytest.approx(brute[0], abs=0.008)
    assert c["ci95_high"] == pytest.approx(brute[1], abs=0.008)


def test_an_empty_test_split_has_no_difference_to_report():

    empty = np.zeros(0, dtype=np.int64)
    c = compare_to_baseline(empty, empty, empty, k=2, n_boot=100)
    assert c["delta_macro_f1"] is None and c["ci95_low"] is None and c["bootstrap"] == 0
    assert c["mcnemar_p"] == 1.0


def test_the_run_report_says_whether_the_difference_is_noise():
    from flows.report import comparison_line

    base = {
        "delta_macro_f1": 0.02,
        "bootstrap": 1000,
        "model_only_correct": 30,
        "baseline_only_correct": 10,
        "mcnemar_p": 0.002,
    }
    assert "the model is better" in comparison_line({"comparison": {**base, "ci95_low": 0.005, "ci95_high": 0.03}})
    assert "the baseline is better" in comparison_line({"comparison": {**base, "ci95_low": -0.03, "ci95_high": -0.01}})
    assert "noise" in comparison_line({"comparison": {**base, "ci95_low": -0.01, "ci95_high": 0.03}})
    off = comparison_line({"comparison": {**base, "ci95_low": None, "ci95_high": None, "bootstrap": 0}})
    assert "interval" not in off and off.startswith("Model − baseline macro-F1: +0.0200. McNemar")
    assert comparison_line({"test": {}}) is None  # metrics from before the comparison existed


def _comparison(low: float, high: float, non_inferior: bool = True) -> dict:
    cc = {"delta_macro_f1": (low + high) / 2, "ci95_low": low, "ci95_high": high, "mcnemar_p": 0.01}
    refs = {"best": "baseline", "best_macro_f1": 0.8, "margin": -0.02, "tolerance": 0.01, "non_inferior": non_inferior}
    return {**cc, "raw": dict(cc), "references": refs}


def test_a_model_clearly_below_its_baseline_is_a_warning_not_an_info_line():
    import logging

    from textclf.evaluate import comparison_lines

    below = comparison_lines(_comparison(-0.05, -0.01, non_inferior=False))
    assert [level for level, _ in below] == [logging.WARNING] * 3
    assert "BELOW the baseline" in below[0][1] and "BELOW the 0.01 non-inferiority margin" in below[2][1]
    tied = comparison_lines(_comparison(-0.01, 0.02))
    assert [level for level, _ in tied] == [logging.INFO] * 3
    assert all("BELOW" not in line for _, line in tied)
