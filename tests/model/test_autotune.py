"""Autotune (textclf.training.autotune): the search's rules with a synthetic objective (pruning, budget,
seeding, resume), then the real train path on the fixture corpus (reproducible choice, the test
split never read, imbalanced classes)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest
import torch

from stages import train as train_stage
from textclf.artifacts import arrow_values
from textclf.data.vocab import build_vocab, count_tokens
from textclf.model import build_model, predict_proba
from textclf.params import TrainParams
from textclf.training import autotune
from textclf.training import run as training


def params(model: str = "linear", **autotune_kw) -> TrainParams:
    at = {
        "budget_s": 1000.0,
        "trials": 10,
        "seed": 0,
        "families": ["linear", "bag"],
        "pruner": "median",
    }
    return TrainParams.model_validate({"device": "cpu", "epochs": 6, "model": model, "autotune": {**at, **autotune_kw}})


class Clock:
    """A fake monotonic clock: a trial 'takes' whatever the objective says."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def objective(clock: Clock, per_epoch_s: float = 1.0, calls: list | None = None):
    """Valid macro-F1 per epoch from the params: linear trials are one report, bag trials climb
    to a ceiling set by their dropout (so some are clearly worse and can be pruned)."""

    def run(p: TrainParams, report, deadline):
        if calls is not None:
            calls.append(p)
        if p.model == "linear":
            clock.now += per_epoch_s
            value = 0.8 - abs(np.log(p.linear.C / 8.0)) / 20
            report(1, value, final=True)
            return value, False
        best = 0.0
        for epoch in range(1, p.epochs + 1):
            clock.now += per_epoch_s
            best = max(best, (0.85 - 0.3 * p.bag.dropout) * (1 - 0.5**epoch))
            report(epoch, best)
            if clock.now >= deadline:
                return best, True
        return best, False

    return run


def run_search(p, clock, checkpoint=None, **kw):
    def save(folder, result, name):
        (folder / f"{name}.txt").write_text(repr(float(result)))

    def restore(folder, name):
        path = folder / f"{name}.txt"
        return float(path.read_text()) if path.exists() else None

    return autotune.search(
        p,
        kw.pop("run", None) or objective(clock),
        score=lambda r: r,
        checkpoint=checkpoint,
        fingerprint="fp",
        save=save,
        restore=restore,
        clock=clock,
        prefer=kw.pop("prefer", None),
    )


def test_trial_zero_is_the_params_as_written_and_the_best_is_chosen():
    clock = Clock()
    calls: list[TrainParams] = []
    p = params()
    res = run_search(p, clock, run=objective(clock, calls=calls))
    assert calls[0].model == p.model and calls[0].linear == p.linear and calls[0].class_weight == p.class_weight
    assert all(c.autotune.budget_s == 0 for c in calls)  # no search inside a trial
    complete = [t for t in res.trials if t.state == "complete"]
    assert res.best.value == max(t.value for t in complete)
    assert res.params == autotune.apply(p, res.best.params)
    assert res.stopped_by == "trials" and len(res.trials) == 10


def test_the_best_trial_replaces_trial_0_only_when_preferred():
    """The train stage's `prefer` is the one-standard-error rule; here a stand-in decides."""
    asked = []

    def never(first, best):
        asked.append((first, best))
        return False, {"delta": best - first, "se": 1.0}

    def larger_c_is_better(p, report, deadline):  # trial 0 (C = 8) is never the best
        value = 0.7 + p.linear.C / 1000
        report(1, value, final=True)
        return value, False

    p = params(trials=8, families=["linear"])
    kept = run_search(p, Clock(), prefer=never, run=larger_c_is_better)
    assert asked and kept.best.number == 0 and kept.result == asked[0][0]
    assert kept.params == autotune.apply(p, kept.trials[0].params)
    assert autotune.summary(kept)["over_trial_0"]["kept_trial_0"] is True
    switched = run_search(
        p,
        Clock(),
        prefer=lambda first, best: (True, {"delta": 0.1, "se": 0.0}),
        run=larger_c_is_better,
    )
    assert switched.best.number != 0
    assert switched.best.value == max(t.value for t in switched.trials if t.state == "complete")


def test_poor_trials_are_pruned_before_their_last_epoch():
    clock = Clock()
    res = run_search(params("bag", trials=24, families=["bag"]), clock)
    pruned = [t for t in res.trials if t.state == "pruned"]
    assert pruned, "no trial was pruned"
    assert all(t.epochs < 6 for t in pruned)
    # a pruned trial was below the median of the earlier trials at the epoch it stopped
    for t in pruned:
        earlier = [o.intermediate[t.epochs] for o in res.trials if o.number < t.number and t.epochs in o.intermediate]
        assert t.intermediate[t.epochs] <= np.median(earlier)
    assert autotune.summary(res)["pruned"] == len(pruned)


def test_the_budget_stops_the_search_and_the_trial_running_at_the_deadline():
    clock = Clock()
    res = run_search(params("bag", trials=100, budget_s=20.0, families=["bag"], pruner="none"), clock)
    assert res.stopped_by == "budget"
    assert len(res.trials) < 100
    assert res.seconds <= 20.0 + 1.0  # at most one epoch past the deadline
    assert res.trials[-1].state in ("budget", "complete")


def test_a_budget_smaller_than_one_trial_still_gives_a_model():
    clock = Clock()
    res = run_search(params("bag", trials=5, budget_s=2.0, families=["bag"]), clock)
    assert len(res.trials) == 1 and res.trials[0].state == "budget" and res.best.number == 0


def test_same_seed_same_trials_other_seed_other_trials():
    a = run_search(params(trials=12), Clock())
    b = run_search(params(trials=12), Clock())
    c = run_search(params(trials=12, seed=7), Clock())
    assert [t.params for t in a.trials] == [t.params for t in b.trials]
    assert [t.params for t in a.trials] != [t.params for t in c.trials]


def test_a_killed_search_resumes_after_its_finished_trials(tmp_path):
    full = run_search(params(trials=12), Clock(), checkpoint=tmp_path / "full")

    class Killed(Exception):
        pass

    clock = Clock()
    inner = objective(clock)
    count = {"n": 0}

    def dies_at_trial_7(p, report, deadline):
        count["n"] += 1
        if count["n"] == 7:
            raise Killed()
        return inner(p, report, deadline)

    folder = tmp_path / "killed"
    with pytest.raises(Killed):
        run_search(params(trials=12), clock, checkpoint=folder, run=dies_at_trial_7)
    logged = json.loads((folder / autotune.LOG_FILE).read_text())
    assert len(logged["trials"]) == 6
    resumed = run_search(params(trials=12), Clock(), checkpoint=folder)
    assert [t.params for t in resumed.trials] == [t.params for t in full.trials]
    assert [t.state for t in resumed.trials] == [t.state for t in full.trials]
    assert resumed.best.number == full.best.number


def test_a_log_for_other_params_is_not_resumed(tmp_path):
    run_search(params(trials=3), Clock(), checkpoint=tmp_path)
    clock, calls = Clock(), []
    res = autotune.search(
        params(trials=3),
        objective(clock, calls=calls),
        score=lambda r: r,
        checkpoint=tmp_path,
        fingerprint="other",
        save=lambda f, r, n: None,
        restore=lambda f, n: 0.5,
        clock=clock,
    )
    assert len(res.trials) == 3 and len(calls) == 3  # every trial ran again


def test_trial_rows_for_the_plot():
    res = run_search(params(trials=6), Clock())
    rows = autotune.trial_rows(res)
    assert [r["trial"] for r in rows] == list(range(6))
    best = [r["best_so_far"] for r in rows if r["best_so_far"] is not None]
    assert best == sorted(best)


# ---------------------------------------------------------------------------------------------
# the real train path on the fixture corpus


@pytest.fixture(scope="module")
def fixture_data(fixture_split):
    train, valid, test = fixture_split
    from textclf.params import VocabParams

    vocab = build_vocab(count_tokens(arrow_values(train["tokens"]), 2), VocabParams(ngrams=2))
    return train, valid, test, vocab


def tuned(train, valid, vocab, **kw):
    p = TrainParams.model_validate(
        {
            "device": "cpu",
            "epochs": 5,
            "batch_size": 32,
            "autotune": {"budget_s": 600.0, "trials": 6, "seed": 0, **kw},
        }
    )
    return training.autotune(training.Prepared(train, valid, vocab), p, torch.device("cpu"), checkpoint=None)


def test_the_same_data_and_params_choose_the_same_config_and_weights(fixture_data):
    train, valid, _, vocab = fixture_data
    a, b = tuned(train, valid, vocab), tuned(train, valid, vocab)
    assert a.best.params == b.best.params and a.best.value == b.best.value
    for k, v in a.result.result.best_state.items():
        assert torch.equal(v, b.result.result.best_state[k]), k


def test_the_test_split_is_never_read(fixture_data, tmp_path, monkeypatch):
    """The train stage run twice in a temp project: with the real test split, and with a test
    split of garbage (labels flipped, texts replaced). Same choice, same weights."""
    from textclf.artifacts import read_parquet, write_parquet

    train, valid, test, vocab = fixture_data
    outs = []
    for poisoned in (False, True):
        root = tmp_path / ("poisoned" if poisoned else "clean")
        (root / "data/processed").mkdir(parents=True)
        write_parquet(train, root / "data/processed/train.parquet")
        write_parquet(valid, root / "data/processed/valid.parquet")
        bad = test.copy()
        if poisoned:
            bad["label"] = np.where(bad["label"] == "pos", "neg", "pos")
            bad["text"] = "poison"
        write_parquet(bad, root / "data/processed/test.parquet")
        (root / "data/processed/vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
        import yaml

        from tests.fixtures import project_params

        p = project_params()
        p["train"].update({"epochs": 4, "autotune": {**p["train"]["autotune"], "trials": 5, "budget_s": 600}})
        (root / "params.yaml").write_text(yaml.safe_dump(p))
        monkeypatch.chdir(root)
        opened: list[str] = []

        def spy(path, *a, opened=opened, **k):
            opened.append(str(path))
            return read_parquet(path, *a, **k)

        monkeypatch.setattr("textclf.artifacts.read_parquet", spy)
        monkeypatch.setattr(train_stage, "read_parquet", spy)
        train_stage.main()
        assert opened and not [o for o in opened if "test" in o]
        outs.append(
            (
                json.loads((root / "reports/train/autotune.json").read_text()),
                read_safetensors(root / "models/classifier/model.safetensors"),
            )
        )
    assert outs[0][0] == outs[1][0]
    for k, v in outs[0][1].items():
        assert torch.equal(v, outs[1][1][k]), k


def read_safetensors(path):
    from safetensors.torch import load_file

    return load_file(str(path))


def test_imbalanced_classes_warn_and_the_minority_is_learnt(caplog):
    """A 3-class corpus whose third class has 30 training documents: the stage warns, the
    search may weigh classes, and the minority class is predicted on valid."""
    from tests.model.util import split_frames

    rng = np.random.default_rng(0)
    words = {
        "pos": ["great", "love", "perfect"],
        "neg": ["awful", "broken", "hate"],
        "meh": ["okay", "average", "fine"],
    }
    docs = []
    for i in range(900):
        label = "meh" if i % 25 == 0 else ("pos" if i % 2 else "neg")
        noise = rng.choice(["the", "room", "phone", "book", "price", "service"], size=4).tolist()
        docs.append((label, " ".join(noise + [rng.choice(words[label])] + noise[:2])))
    train, valid, _ = split_frames(docs)
    assert 10 < (train["label"] == "meh").sum() < 50
    with caplog.at_level(logging.WARNING, logger="textclf.train"):
        small = training.warn_small_classes(train["label"])
    assert small == ["meh"]
    assert "class 'meh' has only" in caplog.text
    from textclf.params import VocabParams

    vocab = build_vocab(count_tokens(arrow_values(train["tokens"]), 2), VocabParams(ngrams=2))
    res = tuned(train, valid, vocab)
    assert "class_weight" in res.best.params
    out = res.result
    model = build_model(out.cfg)
    model.load_state_dict(out.result.best_state)
    va = training.Prepared(train, valid, vocab).get(out.params)[1]
    pred = predict_proba(model, va.ids, va.offsets).argmax(1).numpy()
    meh = out.labels.index("meh")
    y = va.labels.numpy()
    recall = (pred[y == meh] == meh).mean()
    assert recall >= 0.8
    assert pd.Series(pred).nunique() == 3
