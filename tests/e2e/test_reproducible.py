"""Reproducible rebuilds (issue 13): two fresh copies of the project build byte-identical
pipelines; a clone of this repository rebuilds exactly the committed dvc.lock and outputs; the
corpus and the stopword list are dependencies DVC watches."""

from __future__ import annotations

import json

import pytest

from tests.fixtures import ROOT, make_repo, run

pytestmark = pytest.mark.slow
FAST = {"train": {"autotune": {"trials": 4}}}


def test_a_clone_of_this_repository_rebuilds_the_committed_lock_and_outputs(tmp_path):
    """`git clone` + `dvc repro`: nothing in git changes (dvc.lock, metrics, plots), and
    `dvc status` is clean. The committed lock names the corpus with its hash and size. This is
    the two-clone comparison: the committed lock was built in another clone, on another machine
    (what varies by run, time and versions, is in reports/train/run.json, outside any hash)."""
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(ROOT), str(clone)], tmp_path)
    (clone / "data/raw").mkdir(exist_ok=True)
    lock = (clone / "dvc.lock").read_text()
    assert "path: data/sample/reviews-zh" in lock and "nfiles: 2" in lock
    run(["dvc", "repro"], clone, timeout=1200)
    status = run(["git", "status", "--porcelain"], clone).stdout
    assert status == "", status + run(["git", "diff", "--stat"], clone).stdout
    assert "up to date" in run(["dvc", "status"], clone).stdout.lower()
    run_info = json.loads((clone / "reports/train/run.json").read_text())
    assert run_info["created"] and "torch" in run_info["versions"]  # recorded, outside anything hashed


def test_the_corpus_and_the_stopword_list_are_dependencies(tmp_path):
    repo = make_repo(tmp_path / "repo", params=FAST)
    run(["dvc", "repro", "clean"], repo)
    assert "up to date" in run(["dvc", "status", "clean"], repo).stdout.lower()
    with open(repo / "data/raw/pos.txt", "a", encoding="utf-8") as f:
        f.write("一条新的评论，很好\n")
    status = run(["dvc", "status", "ingest"], repo).stdout
    assert "ingest:" in status and "modified:" in status and "data/raw" in status
    run(["dvc", "repro", "clean"], repo)
    with open(repo / "data/stopwords.txt", "a", encoding="utf-8") as f:
        f.write("房间\n")
    status = run(["dvc", "status"], repo).stdout
    assert "clean:" in status and "data/stopwords.txt" in status
    assert "train:" in status  # its words are in the bundle


def test_the_readmes_own_data_steps_work_verbatim_on_a_fresh_clone(tmp_path):
    """README "Your own data": files under data/raw, `dvc add data/raw`, commit, point
    ingest.source at it, `dvc repro`."""
    import yaml

    from tests.fixtures import make_docs, write_text_dir

    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(ROOT), str(clone)], tmp_path)
    write_text_dir(clone / "data/raw", make_docs(300, seed=5))
    run(["dvc", "add", "data/raw"], clone)
    run(["git", "add", "data/raw.dvc", "data/.gitignore"], clone)
    run(["git", "commit", "-qm", "my corpus"], clone)
    params = yaml.safe_load((clone / "params.yaml").read_text(encoding="utf-8"))
    params["ingest"]["source"] = "data/raw"
    params["train"]["autotune"]["trials"] = 4  # test time; the steps are the README's
    (clone / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=False), encoding="utf-8")
    run(["dvc", "repro"], clone, timeout=900)
    stats = json.loads((clone / "reports/data/ingest.json").read_text())
    assert stats["read"] == 300 and stats["kept"] > 250
    assert "path: data/raw" in (clone / "dvc.lock").read_text()
