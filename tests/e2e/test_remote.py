"""DVC remote storage end to end: push every pipeline output to a local-directory remote, then a
fresh `git clone` + `dvc pull` has a pipeline that is already up to date (nothing reruns). The
model registry on the same path: `textclf promote` tags the commit, and a fresh clone fetches
the promoted model by stage through the remote (`dvc artifacts get`, `textclf predict --model`)."""

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
    promoted = run(["textclf", "promote"], repo).stdout
    assert "classifier: v0.0.1 registered (classifier@v0.0.1), stage prod assigned (classifier#prod#1)" in promoted
    tags = set(run(["git", "tag"], repo).stdout.split())
    assert tags == {"classifier@v0.0.1", "classifier#prod#1", "classifier-onnx@v0.0.1", "classifier-onnx#prod#1"}

    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
    assert not (clone / "models/classifier").exists()  # cached outputs are not in git
    # the promoted model, by stage, from the remote: DVC's own command and ours
    run(["dvc", "artifacts", "get", ".", "classifier", "--stage", "prod", "-o", str(tmp_path / "got")], clone)
    for f in (repo / "models/classifier").iterdir():
        assert (tmp_path / "got" / f.name).read_bytes() == f.read_bytes(), f.name
    texts = ["a fine product, works well", "broken on arrival"]
    expected = run(["textclf", "predict", *texts], repo).stdout
    served = run(["textclf", "predict", "--model", "classifier#prod", *texts], clone)
    assert served.stdout == expected and "model classifier#prod = " in served.stderr
    assert not (clone / "models/classifier").exists()  # read at the commit, not into the workspace
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
