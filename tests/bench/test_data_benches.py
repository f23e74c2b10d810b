"""Smoke runs of the benchmarks the README quotes that need no built repository: each runs its
README command at a tiny size and must print its figure, so a command that rots fails CI."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.bench.smoke import bench
from tests.fixtures import ROOT, make_docs, run, write_text_dir
from textclf.paths import copy_project


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A 600-document text directory (the fixture corpus) for the `-S ingest.source=…` benches."""
    return write_text_dir(tmp_path_factory.mktemp("bench") / "raw", make_docs(600))


def test_data_diff():
    out = bench("data_diff.py", "--docs", "3000", "--removed", "30", "--relabeled", "20", "--added", "40")
    assert "counts match the known changes: yes" in out


def test_data_stages_in_process_and_via_dvc():
    out = bench("data_stages.py", "--docs", "2000")
    assert re.search(r"reference: CountVectorizer\.fit .* [\d.]+x", out), out
    out = bench("data_stages.py", "--docs", "2000", "--via-dvc")
    assert re.search(r"`dvc repro vocab` is [\d.]+x its speed", out), out


def test_scale_data_runs_the_stages_in_a_copy_of_the_project():
    # the README's 10M-document command, at 2,000: it failed when the work folder lacked data/stopwords.txt
    out = bench("scale_data.py", "--docs", "2000", "--chunk-rows", "500")
    assert re.search(r"data half, +2,000 docs: .* peak RSS", out), out
    for stage in ("ingest", "clean", "split", "vocab"):
        assert re.search(rf"  {stage} +[\d.]+ s", out), out


def test_train_throughput():
    out = bench(
        "train_throughput.py", "--docs", "3000", "--vocab", "2000", "--epochs", "1", "--batch-sizes", "512",
        "--textbook-seconds", "1",
    )  # fmt: skip
    assert re.search(r"project bag \(batch 512, sparse SGD\): [\d.]+ M tok/s = [\d.]+x textbook", out), out


def test_corpora_writes_a_csv(tmp_path):
    dest = tmp_path / "tweets.csv"
    out = bench("corpora.py", "tweets", str(dest))
    assert "2 classes" in out
    assert dest.read_text(encoding="utf-8").startswith("text,label")


def test_label_noise(corpus):
    out = bench("label_noise.py", "-S", f"ingest.source={corpus}")
    assert re.search(r"cleanlab \(the stage\) +[\d.]+ +[\d.]+ +[\d.]+", out), out
    assert "reference: argmax != label" in out


def test_model_vs_baseline(corpus):
    out = bench(
        "model_vs_baseline.py", "--folds", "2", "--fasttext-autotune-s", "0",
        "-S", f"ingest.source={corpus}", "-S", "train.autotune.trials=2",
    )  # fmt: skip
    assert re.search(r"model / best = [\d.]+x; non-inferior .* in \d of 2", out), out


def test_time_to_accuracy(corpus):
    out = bench("time_to_accuracy.py", "-S", f"ingest.source={corpus}")
    assert re.search(r"fastText time / bag time = [\d.]+x", out), out


def test_encoder_embedding():
    if not (ROOT / "models/pretrained/all-MiniLM-L6-v2/config.json").exists():
        pytest.fail("the encoder is not unpacked: `make encoder` (a prerequisite of `make test`)")
    out = bench("encoder.py", "--docs", "40", "--repeat", "1")
    assert re.search(r"ratio textclf / sentence-transformers: [\d.]+x \(cosine of the embeddings: min 1\.0", out), out


def test_explain_trial_changes_a_clean_clone_and_refuses_the_project(tmp_path):
    repo = copy_project(ROOT, tmp_path / "clone", extra=("data/sample",))
    run(["git", "init", "-q"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-qm", "clone"], repo)
    bench("explain_trial.py", "--repo", str(repo), "--unique")
    changed = run(["git", "status", "--porcelain"], repo).stdout
    assert "data/sample/reviews-zh/neg.txt" in changed and "data/sample/reviews-zh/pos.txt" in changed
    refused = subprocess.run(
        [sys.executable, str(ROOT / "bench/explain_trial.py"), "--repo", str(ROOT)], capture_output=True, text=True
    )
    assert refused.returncode == 2 and "not this repository" in refused.stderr
