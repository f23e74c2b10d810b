"""DVC remote storage end to end: push every pipeline output to a local-directory remote, then a
fresh `git clone` + `dvc pull` has a pipeline that is already up to date (nothing reruns)."""

from __future__ import annotations

import pytest
import yaml

from tests.fixtures import make_repo, run

pytestmark = pytest.mark.slow
FAST = {"train": {"epochs": 3, "batch_size": 32}}


def test_push_clone_pull_then_nothing_reruns(tmp_path):
    repo = make_repo(tmp_path / "repo", params=FAST)
    remote = tmp_path / "remote"
    # -d: the default remote, written to .dvc/config, which is committed: a clone finds it
    run(["dvc", "remote", "add", "-d", "storage", str(remote)], repo)
    stages = list(yaml.safe_load((repo / "dvc.yaml").read_text(encoding="utf-8"))["stages"])
    out = run(["dvc", "repro"], repo).stdout
    for stage in stages:
        assert f"Running stage '{stage}'" in out
    run(["dvc", "push"], repo)
    assert any(remote.rglob("*")), "nothing was pushed"
    # dvc.lock, params and the uncached outputs (metrics, plots, the checkpoint) go to git
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "pipeline run"], repo)

    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
    assert not (clone / "models/classifier").exists()  # cached outputs are not in git
    run(["dvc", "pull"], clone)
    for path in (
        "data/processed/train.parquet",
        "data/processed/vocab.json",
        "models/classifier/manifest.json",
        "reports/predictions.parquet",
    ):
        assert (clone / path).read_bytes() == (repo / path).read_bytes(), path

    again = run(["dvc", "repro"], clone).stdout
    assert "Running stage" not in again, again
    for stage in stages:
        assert f"Stage '{stage}' didn't change, skipping" in again
    assert "up to date" in run(["dvc", "status"], clone).stdout
    assert "in sync" in run(["dvc", "status", "--cloud"], clone).stdout
    assert run(["git", "status", "--porcelain"], clone).stdout == ""
