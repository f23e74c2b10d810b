"""The model registry (textclf.registry) on a tiny real git + DVC repository whose one stage
writes the two declared artifacts; the whole pipeline's path is in tests/e2e/test_remote.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.fixtures import env, run
from textclf import registry
from textclf.cli import main as cli
from textclf.errors import InputError

DVC_YAML = {
    "stages": {
        "make": {"cmd": "python make.py", "deps": ["make.py", "seed.txt"], "outs": ["models/classifier"]},
        "export": {"cmd": "python export.py", "deps": ["export.py", "models/classifier"], "outs": ["models/onnx"]},
    },
    "artifacts": {
        "classifier": {"path": "models/classifier", "type": "model"},
        "classifier-onnx": {"path": "models/onnx", "type": "model"},
    },
}
MAKE = """from pathlib import Path
Path("models/classifier").mkdir(parents=True, exist_ok=True)
Path("models/classifier/model.bin").write_text("weights " + Path("seed.txt").read_text())
"""
EXPORT = """from pathlib import Path
Path("models/onnx").mkdir(parents=True, exist_ok=True)
Path("models/onnx/model.onnx").write_text("graph " + Path("models/classifier/model.bin").read_text().split()[1])
"""


def commit(repo: Path, message: str) -> str:
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", message], repo)
    return run(["git", "rev-parse", "HEAD"], repo).stdout.strip()


@pytest.fixture
def repo(tmp_path, monkeypatch) -> Path:
    # GTO writes annotated tags in this process: a committer identity, as CI has no git config
    for key, value in env().items():
        if key.startswith("GIT_"):
            monkeypatch.setenv(key, value)
    root = tmp_path / "repo"
    root.mkdir()
    (root / "dvc.yaml").write_text(yaml.safe_dump(DVC_YAML, sort_keys=False))
    (root / "make.py").write_text(MAKE)
    (root / "export.py").write_text(EXPORT)
    (root / "seed.txt").write_text("one")
    run(["git", "init", "-q", "-b", "main"], root)
    run(["dvc", "init", "-q"], root)
    run(["dvc", "config", "core.analytics", "false"], root)
    run(["dvc", "repro", "-q"], root)
    commit(root, "model one")
    return root


@pytest.mark.parametrize(
    ("text", "ref"),
    [
        ("classifier#prod", registry.ModelRef("classifier", stage="prod")),
        ("classifier@v0.3.0", registry.ModelRef("classifier", version="v0.3.0")),
        ("classifier-onnx#staging-2", registry.ModelRef("classifier-onnx", stage="staging-2")),
        ("models/classifier", None),
        ("classifier@0.3.0", None),
        ("classifier#", None),
        ("Classifier#prod", None),
    ],
)
def test_references_and_paths_are_told_apart(text, ref):
    assert registry.parse_ref(text) == ref


def test_promote_tags_versions_and_stages_and_a_ref_reads_the_committed_model(repo, capsys):
    first = registry.promote(repo)
    assert [(p.artifact, p.version, p.version_tag, p.stage_tag, p.new_version) for p in first] == [
        ("classifier", "v0.0.1", "classifier@v0.0.1", "classifier#prod#1", True),
        ("classifier-onnx", "v0.0.1", "classifier-onnx@v0.0.1", "classifier-onnx#prod#1", True),
    ]
    # promoting the same commit again changes nothing
    again = registry.promote(repo)
    assert [(p.version, p.stage_tag, p.new_version) for p in again] == [("v0.0.1", "classifier#prod#1", False)] * 1 + [
        ("v0.0.1", "classifier-onnx#prod#1", False)
    ]
    # a new model, registered with a bump, becomes prod; the old one stays reachable by version
    (repo / "seed.txt").write_text("two")
    run(["dvc", "repro", "-q"], repo)
    second = commit(repo, "model two")
    assert cli(["promote", "--repo", str(repo), "--bump", "minor"]) == 0
    assert "classifier: v0.1.0 registered (classifier@v0.1.0), stage prod assigned (classifier#prod#2)" in (
        capsys.readouterr().out
    )
    # the workspace changes, uncommitted: a reference still reads what was promoted
    (repo / "seed.txt").write_text("three")
    run(["dvc", "repro", "-q"], repo)
    bundle, graph, what = registry.model_paths(repo, "classifier#prod", onnx=True)
    assert (bundle / "model.bin").read_text() == "weights two" and (graph / "model.onnx").read_text() == "graph two"
    assert what == f"classifier#prod = {second[:12]}"
    old, none, _ = registry.model_paths(repo, "classifier@v0.0.1")
    assert (old / "model.bin").read_text() == "weights one" and none is None
    assert Path(repo / ".textclf/registry" / second / "models/classifier") == bundle
    # roll back: the first commit becomes prod again (a new stage tag on it), and is served
    first_commit = run(["git", "rev-parse", "classifier@v0.0.1^{commit}"], repo).stdout.strip()
    back = registry.promote(repo, rev=first_commit)
    assert [(p.version, p.stage_tag, p.new_version) for p in back][0] == ("v0.0.1", "classifier#prod#3", False)
    bundle, _, what = registry.model_paths(repo, "classifier#prod")
    assert (bundle / "model.bin").read_text() == "weights one" and what.endswith(first_commit[:12])


def test_what_cannot_be_promoted_or_found_is_a_clear_error(repo, capsys):
    with pytest.raises(InputError, match="classifier#prod: not in the model registry"):
        registry.model_paths(repo, "classifier#prod")
    with pytest.raises(InputError, match="expected NAME#STAGE or NAME@vX.Y.Z"):
        registry.model_paths(repo, "models/classifier")
    with pytest.raises(InputError, match="stage 'Prod'"):
        registry.promote(repo, stage="Prod")
    with pytest.raises(InputError, match="version '1.0': expected vMAJOR.MINOR.PATCH"):
        registry.promote(repo, version="1.0")
    with pytest.raises(InputError, match="no-such-rev"):
        registry.promote(repo, rev="no-such-rev")
    # a crafted artifact path cannot reach outside the project's registry folder
    for bad in ("/etc", "../outside", "models/../../x"):
        with pytest.raises(InputError, match="must be a relative path inside the project"):
            registry.fetch(repo, "0" * 40, bad)
    with pytest.raises(InputError, match="not a full commit id"):
        registry.fetch(repo, "HEAD", "models/classifier")
    # a commit whose dvc.lock does not have the model yet
    spec = yaml.safe_load((repo / "dvc.yaml").read_text())
    spec["artifacts"]["extra"] = {"path": "models/extra", "type": "model"}
    (repo / "dvc.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    commit(repo, "declare another artifact")
    with pytest.raises(InputError, match=r"extra: models/extra is not an output in dvc.lock .* run `dvc repro`"):
        registry.promote(repo, artifacts=("extra",))
    # a bundle retrained but not exported: its ONNX graph is the old model's, so it is not promoted
    (repo / "seed.txt").write_text("two")
    run(["dvc", "repro", "-q", "--single-item", "make"], repo)
    stale = commit(repo, "retrained, not exported")
    with pytest.raises(InputError, match=r"models/onnx at .* was not exported from the models/classifier"):
        registry.promote(repo)
    assert run(["git", "tag", "--points-at", stale], repo).stdout == ""  # nothing tagged
    run(["dvc", "repro", "-q"], repo)
    commit(repo, "exported")
    assert cli(["promote", "--repo", str(repo), "--version", "v1.0.0", "--stage", "prod"]) == 0
    assert cli(["predict", "--repo", str(repo), "--model", "classifier#staging", "text"]) == 2
    assert "classifier#staging: not in the model registry" in capsys.readouterr().err
    assert cli(["predict", "--repo", str(repo), "--model", "classifier#prod", "--bundle", "elsewhere", "t"]) == 2
    assert "give --model or --bundle, not both" in capsys.readouterr().err
    assert set(run(["git", "tag"], repo).stdout.split()) == {
        "classifier@v1.0.0",
        "classifier#prod#1",
        "classifier-onnx@v1.0.0",
        "classifier-onnx#prod#1",
    }


def test_a_promoted_model_missing_from_the_cache_is_a_warning_then_one_message(repo, capsys):
    """Issue 29: a clone that rebuilt another model promotes the committed one; its files are in
    no cache or remote. promote warns; predict and serve --model stop with one message (exit 2),
    not DVC's traceback."""
    import shutil

    shutil.rmtree(repo / ".dvc" / "cache")  # what a fresh clone without the remote has
    assert cli(["promote", "--repo", str(repo)]) == 0
    err = capsys.readouterr().err
    assert "warning: classifier's files at HEAD are not in this repository's DVC cache" in err
    for command in (["predict", "text"], ["serve", "--port", "1"]):
        assert cli([command[0], "--repo", str(repo), "--model", "classifier#prod", *command[1:]]) == 2
        err = capsys.readouterr().err
        assert "in neither this repository's DVC cache nor a reachable remote" in err and "dvc pull" in err
        assert "Traceback" not in err and len(err.strip().splitlines()) <= 2, err
