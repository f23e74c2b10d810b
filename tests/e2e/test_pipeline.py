"""The whole DVC pipeline on a small fixture corpus, in a temp copy of the project."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
from safetensors.torch import load_file

from tests.fixtures import env, make_repo, run

pytestmark = pytest.mark.slow
STAGES = ["ingest", "clean", "split", "vocab", "baseline", "train", "evaluate"]
FAST = {"train": {"epochs": 4, "batch_size": 32}}
# the experiment tests are about DVC recording params and metrics, not the search: no autotune
EXPERIMENT = {"train": {"epochs": 4, "batch_size": 32, "autotune": {"budget_s": 0}}}


def test_full_repro_then_nothing_reruns(tmp_path):
    repo = make_repo(tmp_path / "repo", params=FAST)
    out = run(["dvc", "repro"], repo).stdout
    for stage in STAGES:
        assert f"Running stage '{stage}'" in out
    metrics = json.loads((repo / "reports/metrics.json").read_text())
    for section in ("test", "baseline"):
        assert 0.5 < metrics[section]["macro_f1"] <= 1.0
        assert 0.5 < metrics[section]["accuracy"] <= 1.0
    c = metrics["comparison"]
    assert c["delta_macro_f1"] == pytest.approx(metrics["test"]["macro_f1"] - metrics["baseline"]["macro_f1"])
    assert c["ci95_low"] <= c["ci95_high"] and c["bootstrap"] == 1000 and 0 <= c["mcnemar_p"] <= 1
    assert (repo / "models/classifier/manifest.json").exists()
    assert (repo / "reports/plots/confusion.json").exists()
    assert (repo / "reports/train/plots/metrics/valid/macro_f1.tsv").exists()
    again = run(["dvc", "repro"], repo).stdout
    assert "Running stage" not in again
    for stage in STAGES:
        assert f"Stage '{stage}' didn't change, skipping" in again
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], repo).stdout)
    assert "reports/metrics.json" in json.dumps(shown)


def _train_outputs(repo):
    weights = load_file(str(repo / "models/classifier/model.safetensors"))
    return json.loads((repo / "reports/train/metrics.json").read_text()), weights


def test_training_killed_mid_epoch_resumes_to_the_same_result(tmp_path):
    params = {
        "train": {
            "model": "bag",
            "epochs": 5,
            "batch_size": 4,
            "patience": 10,
            "dropout": 0.3,
            "autotune": {"budget_s": 0},
        }
    }
    ref = make_repo(tmp_path / "ref", params=params)
    run(["dvc", "repro", "train"], ref)
    ref_metrics, ref_weights = _train_outputs(ref)

    repo = make_repo(tmp_path / "repo", params=params)
    run(["dvc", "repro", "vocab"], repo)
    state = repo / "models/checkpoint/state.json"
    proc = subprocess.Popen(
        ["dvc", "repro", "train"],
        cwd=repo,
        env=env(),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if state.exists() and json.loads(state.read_text())["state"]["epoch"] >= 2:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "training finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)  # dvc and the training process, mid-epoch
    proc.wait(timeout=30)
    killed_at = json.loads(state.read_text())["state"]["epoch"]
    assert 2 <= killed_at < 5

    out = run(["dvc", "repro", "train"], repo).stdout + run(["dvc", "status"], repo).stdout
    assert "Running stage 'train'" in out
    metrics, weights = _train_outputs(repo)
    assert metrics == ref_metrics
    assert weights.keys() == ref_weights.keys()
    for k in weights:
        assert (weights[k] == ref_weights[k]).all(), k


def test_autotune_killed_mid_search_resumes_to_the_same_choice(tmp_path):
    """SIGKILL `dvc repro train` after some trials: the rerun resumes after the finished trials
    and ends with the choice, weights and metrics of an uninterrupted search."""
    params = {
        "train": {
            "model": "bag",
            "epochs": 4,
            "batch_size": 4,
            "patience": 10,
            "autotune": {"budget_s": 600, "trials": 4, "families": ["bag"], "seed": 3},
        }
    }
    ref = make_repo(tmp_path / "ref", params=params)
    run(["dvc", "repro", "train"], ref)
    ref_metrics, ref_weights = _train_outputs(ref)
    ref_choice = json.loads((ref / "reports/train/autotune.json").read_text())

    repo = make_repo(tmp_path / "repo", params=params)
    run(["dvc", "repro", "vocab"], repo)
    log = repo / "models/checkpoint/autotune.json"
    proc = subprocess.Popen(
        ["dvc", "repro", "train"],
        cwd=repo,
        env=env(),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if len(json.loads(log.read_text())["trials"]) >= 2:
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.01)
    assert proc.poll() is None, "the search finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert 2 <= len(json.loads(log.read_text())["trials"]) < 4

    out = run(["dvc", "repro", "train"], repo).stdout
    assert "Running stage 'train'" in out
    assert json.loads((repo / "reports/train/autotune.json").read_text()) == ref_choice
    metrics, weights = _train_outputs(repo)
    assert metrics == ref_metrics
    for k in weights:
        assert (weights[k] == ref_weights[k]).all(), k
    assert not log.exists()  # a finished search leaves no log: `dvc repro -f` searches again


def test_dvc_experiments_with_a_param_override_run_now_and_queued(tmp_path):
    """`dvc exp run -S`, then `dvc exp run --queue` + `dvc queue start`: a background worker runs
    the queued experiment; `dvc exp show` lists both with their params and metrics, and the
    branch keeps its committed params."""
    repo = make_repo(tmp_path / "repo", params=EXPERIMENT)
    run(["dvc", "exp", "run", "-S", "train.lr=0.02", "-n", "lr002"], repo)
    head = run(["git", "show", "HEAD:params.yaml"], repo).stdout
    assert "lr: 0.02" not in head  # the experiment is recorded apart from the branch
    run(["dvc", "exp", "run", "--queue", "-S", "train.lr=0.03", "-n", "queued-lr003"], repo)
    try:
        run(["dvc", "queue", "start", "-j", "1"], repo)
        deadline = time.monotonic() + 300
        while True:
            status = run(["dvc", "queue", "status"], repo).stdout
            if "queued-lr003" in status and not any(s in status for s in ("Queued", "Running")):
                break
            assert time.monotonic() < deadline, status
            time.sleep(2)
        assert "Success" in status, status
    finally:
        subprocess.run(["dvc", "queue", "stop"], cwd=repo, env=env(), capture_output=True, timeout=60)
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo).stdout)
    exps = {e["name"]: e["revs"][0]["data"] for rev in shown for e in (rev.get("experiments") or [])}
    assert {"lr002", "queued-lr003"} <= set(exps), json.dumps(shown)[:500]
    for name, lr in (("lr002", 0.02), ("queued-lr003", 0.03)):
        data = exps[name]
        assert data["params"]["params.yaml"]["data"]["train"]["lr"] == lr
        assert 0.0 <= data["metrics"]["reports/metrics.json"]["data"]["test"]["macro_f1"] <= 1.0
