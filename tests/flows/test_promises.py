"""Behaviours the README's fault table promises that no other test checked (issue 27, item 6):
a check that fails in any way is a verdict, a file still being written is given back, the run
refuses to start over staged changes, and the gate's `first` / `best` references walk the real
history of committed predictions."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flows.incoming import intake, landing
from flows.incoming.transaction import check_preconditions
from flows.shell import RepositoryError
from tests.fixtures import run


def test_an_unexpected_error_while_checking_is_a_verdict_not_a_crash(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise KeyError("a reader's bug")

    monkeypatch.setattr(intake, "_check", boom)
    v, docs = intake.check_file(tmp_path / "x.txt", tmp_path, intake.RawSpec("data/raw", "text_dir"), None, 0.2, False)
    assert not v.accepted and docs is None
    assert v.reason.startswith("could not be checked: KeyError:") and "a reader's bug" in v.reason


def test_a_file_still_being_written_is_unstable_and_goes_back(tmp_path, monkeypatch):
    """read_once sees the file grow while it reads it; `take` raises Unstable (the caller gives
    the item back to the landing folder for the next run)."""
    path = tmp_path / "incoming" / "pos.txt"
    path.parent.mkdir()
    path.write_text("很好\n" * 1000, encoding="utf-8")
    real_read = os.read
    grown = []

    def read_while_writing(fd, n):
        chunk = real_read(fd, n)
        if not grown:
            with open(path, "a", encoding="utf-8") as f:  # the uploader is still writing
                f.write("还在写\n")
            grown.append(1)
        return chunk

    monkeypatch.setattr(landing.os, "read", read_while_writing)
    with pytest.raises(landing.Unstable, match="changed while it was read"):
        landing.take(path, tmp_path / "copies", "pos.txt", lambda *a: None)


def test_the_run_refuses_to_start_over_staged_changes(tmp_path):
    root = tmp_path / "repo"
    (root / "data/raw").mkdir(parents=True)
    (root / "data/raw/pos.txt").write_text("很好\n", encoding="utf-8")
    (root / "notes.txt").write_text("a\n")
    run(["git", "init", "-q", "-b", "main"], root)
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "start"], root)
    check_preconditions(root, "data/raw")  # clean: no complaint
    (root / "notes.txt").write_text("b\n")
    run(["git", "add", "notes.txt"], root)
    with pytest.raises(RepositoryError, match="the git index has staged changes"):
        check_preconditions(root, "data/raw")
    run(["git", "reset", "-q"], root)
    (root / "data/raw/pos.txt").write_text("很好\n手改\n", encoding="utf-8")  # an uncommitted edit
    with pytest.raises(RepositoryError, match="data/raw has uncommitted changes"):
        check_preconditions(root, "data/raw")
    assert (root / "data/raw/pos.txt").read_text(encoding="utf-8") == "很好\n手改\n"  # untouched


def test_first_and_best_references_walk_the_commits_that_changed_the_predictions(tmp_path, monkeypatch):
    """reference_commits on a real git history: `head` is HEAD; `first` the oldest first-parent
    commit that changed dvc.lock and has predictions; `best` every such commit, oldest first."""
    from flows import report
    from flows.incoming import gate

    root = tmp_path / "repo"
    root.mkdir()
    run(["git", "init", "-q", "-b", "main"], root)
    shas = []
    for i, text in enumerate(["a", "b", "c"]):
        (root / "dvc.lock").write_text(f"lock {text}\n")
        if i == 1:
            (root / "other.txt").write_text("x")  # a commit that does not touch dvc.lock follows
        run(["git", "add", "-A"], root)
        run(["git", "commit", "-qm", f"c{i}"], root)
        shas.append(run(["git", "rev-parse", "HEAD"], root).stdout.strip())
    (root / "readme.md").write_text("no lock change")
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "docs"], root)
    # commit 0 has no predictions file yet (the pipeline had not produced one)
    monkeypatch.setattr(report, "committed_predictions", lambda r, f, c: None if c == shas[0] else "preds")
    assert gate.reference_commits(root, "head", "p") == ["HEAD"]
    assert gate.reference_commits(root, "first", "p") == [shas[1]]
    assert gate.reference_commits(root, "best", "p") == [shas[1], shas[2]]
    monkeypatch.setattr(report, "committed_predictions", lambda r, f, c: None)
    assert gate.reference_commits(root, "first", "p") == ["HEAD"]  # nothing committed yet: HEAD
    assert Path(root / "dvc.lock").exists()
