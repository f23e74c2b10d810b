"""Smoke runs of the benchmarks the README quotes that read a built repository (after `dvc repro`):
one tiny repository built once, each bench run on it with its README command's options."""

from __future__ import annotations

import re

import pytest

from tests.bench.smoke import bench
from tests.fixtures import make_docs, make_repo, run, write_text_dir


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    repo = make_repo(tmp_path_factory.mktemp("bench") / "repo", params={"train": {"autotune": {"trials": 2}}})
    run(["dvc", "repro"], repo, timeout=600)
    return repo


def _model_args(repo):
    return [
        "--bundle", str(repo / "models/classifier"),
        "--test", str(repo / "data/processed/test.parquet"),
        "--train", str(repo / "data/processed/train.parquet"),
    ]  # fmt: skip


def test_inference(built):
    out = bench("inference.py", *_model_args(built), "--onnx-dir", str(built / "models/onnx"),
                "--single", "20", "--repeat", "1", "--no-serve")  # fmt: skip
    assert "agreement with torch: onnx fp32 labels" in out
    assert re.search(r"single-document p50 <= 1 ms: onnx fp32 [\d.]+ ms \((met|NOT met)\)", out), out


def test_serve_load(built):
    out = bench("serve_load.py", *_model_args(built), "--seconds", "0.3")
    assert re.search(r"textclf torch / fastText docs/s: [\d.]+x \.\. [\d.]+x over the six loads", out), out


def test_drift(built, tmp_path):
    foreign = tmp_path / "foreign.csv"
    foreign.write_text("text\n" + "\n".join(f"an english sentence number {i} about weather" for i in range(60)) + "\n")
    out = bench("drift.py", "--repo", str(built), "--batches", "2", "--sizes", "30", "--foreign", str(foreign))
    assert re.search(r"in-distribution, 2 batches of 30: held \d+", out), out
    assert re.search(r"foreign \(.*\): HELD: drift: OOV rate", out), out


def test_flow_overhead(tmp_path):
    corpus = tmp_path / "raw"
    write_text_dir(corpus, make_docs(400))
    out = bench("flow_overhead.py", "--source", str(corpus), "--target", "vocab", timeout=900)
    assert re.search(r"flows\.pipeline, from scratch, the server up \(copy C\) +[\d.]+ s = [\d.]+x dvc repro", out), out
    assert re.search(r"no-op: dvc repro [\d.]+ s; flows\.pipeline [\d.]+ s", out), out


def test_slot_wait():
    out = bench("slot_wait.py", "--rounds", "1", "--hold", "1", timeout=300)
    assert re.search(r"median: run_slot [\d.]+ s, concurrency\(\) [\d.]+ s; ratio [\d.]+x", out), out
