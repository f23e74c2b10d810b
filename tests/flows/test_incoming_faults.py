"""The new-data flow against hostile landing folders and faults: links to secrets, FIFOs, hidden
files, unreadable or endlessly nested input, files re-dropped mid-run, user edits, a commit that
fails, a SIGKILL at every step. Every item must end committed, quarantined with a reason, or
untouched in the landing folder; nothing outside the repository may reach the raw data, the DVC
cache, git or an artifact; no user change may be lost."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import flows.incoming.flow as incoming_mod
from flows.incoming.flow import incoming
from flows.shell import RepositoryError
from tests.fixtures import env, run
from tests.flows.incoming_support import GATE, drop, head, incoming_artifact, lines, tracked_changes

SECRET = "AKIA-TOP-SECRET-7f3e9c"


@pytest.fixture()
def repo(scored_template, tmp_path) -> Path:
    dest = tmp_path / "repo"
    shutil.copytree(scored_template, dest, symlinks=True)
    return dest


@pytest.fixture()
def secret(tmp_path) -> Path:
    """A credentials file outside the repository, as ~/.aws/credentials would be."""
    path = tmp_path / "outside" / "credentials"
    path.parent.mkdir()
    path.write_text(f"neg {SECRET}\n[default]\naws_secret_access_key = {SECRET}\n")
    (tmp_path / "outside" / "id_rsa").write_text(f"-----BEGIN KEY----- {SECRET}\n")
    return path


def leaked(repo: Path, extra_text: str = "") -> list[str]:
    """Where the secret shows up: raw data, DVC cache, any git object, the artifact text."""
    hits = [str(p) for p in (repo / "data/raw").rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    hits += [str(p) for p in (repo / ".dvc/cache").rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    objects = run(["git", "rev-list", "--all", "--objects"], repo).stdout.split()
    for sha in {o for o in objects if len(o) == 40}:
        blob = subprocess.run(["git", "cat-file", "-p", sha], cwd=repo, capture_output=True).stdout
        if SECRET.encode() in blob:
            hits.append(f"git object {sha}")
    if SECRET in extra_text:
        hits.append("artifact")
    return hits


def reason_of(repo: Path, name: str) -> str:
    return (repo / "data/quarantine" / f"{name}.reason.txt").read_text()


def test_links_fifos_and_hidden_files_are_quarantined_and_nothing_outside_leaks(repo, secret):
    landing = repo / "data/incoming"
    landing.mkdir(parents=True)
    (landing / "neg.txt").symlink_to(secret)  # a file link to a secret
    (landing / "dangling.txt").symlink_to(repo / "nowhere.txt")
    (landing / "everything").symlink_to(secret.parent, target_is_directory=True)  # a folder link
    os.mkfifo(landing / "pipe.txt")  # would block a reader forever
    pos = landing / "pos"
    pos.mkdir()
    (pos / "good.txt").write_text("这个真的很好，推荐\n", encoding="utf-8")
    (pos / ".x").symlink_to(secret.parent / "id_rsa")  # hidden link inside a folder
    (pos / ".notes").write_text("a hidden file")
    drop(repo, "pos.txt", lines("新到的评论", "很好满意推荐", 40))

    state = incoming(repo=str(repo), **GATE, return_state=True)
    assert state.is_completed()
    out = state.result()
    assert out["promoted"], out
    assert not leaked(repo, incoming_artifact(state))
    assert secret.read_text().count(SECRET) == 2  # the target was never moved or changed
    for name in ("neg.txt", "dangling.txt", "everything"):
        assert (repo / "data/quarantine" / name).is_symlink(), name  # moved as a link, never followed
        assert "symbolic link" in reason_of(repo, name)
    assert "not a regular file" in reason_of(repo, "pipe.txt")
    assert "hidden" in reason_of(repo, "pos__.notes") and "symbolic link" in reason_of(repo, "pos__.x")
    # what was good is committed; nothing is left half-way
    assert "这个真的很好" in (repo / "data/raw/pos/good.txt").read_text(encoding="utf-8")
    assert sorted(p.name for p in landing.iterdir()) == []
    assert tracked_changes(repo) == ""


def test_hidden_folders_inside_a_landing_item_are_quarantined_whole(repo):
    """Issue 27: pos/.git/config and pos/.ssh/id_rsa (names that are not hidden, in hidden
    folders) were read as `pos` documents, committed and pushed. Now the hidden folder goes to
    quarantine as it is, and no byte of it reaches the raw data, the DVC cache, git or an artifact."""
    pos = repo / "data/incoming/pos"
    (pos / ".git").mkdir(parents=True)
    (pos / ".git" / "config").write_text(f"[remote]\n  url = https://x:{SECRET}@example.com/r.git\n")
    (pos / ".ssh").mkdir()
    (pos / ".ssh" / "id_rsa").write_text(f"-----BEGIN KEY----- {SECRET}\n")
    (pos / "good.txt").write_text("这个真的很好，推荐\n", encoding="utf-8")
    drop(repo, "pos.txt", lines("新到的评论", "很好满意推荐", 40))
    state = incoming(repo=str(repo), **GATE, return_state=True)
    assert state.is_completed()
    assert state.result()["promoted"], state.result()
    assert not leaked(repo, incoming_artifact(state))
    for name in ("pos__.git", "pos__.ssh"):
        assert (repo / "data/quarantine" / name).is_dir(), name  # moved whole
        assert "a hidden folder" in reason_of(repo, name)
    assert SECRET in (repo / "data/quarantine/pos__.git/config").read_text()  # kept, not deleted
    assert "这个真的很好" in (repo / "data/raw/pos/good.txt").read_text(encoding="utf-8")
    assert tracked_changes(repo) == ""


def test_readers_skip_any_path_with_a_hidden_part(tmp_path):
    from textclf.sources.text_formats import read_file_per_doc

    (tmp_path / "pos" / ".git").mkdir(parents=True)
    (tmp_path / "pos" / ".git" / "config").write_text("secret")
    (tmp_path / "pos" / "a.txt").write_text("很好")
    df = read_file_per_doc(tmp_path / "pos", "pos", None, "utf-8")
    assert df["text"].tolist() == ["很好"]


def test_a_reason_file_is_never_written_through_a_planted_link(tmp_path):
    from flows.incoming.landing import REASON_SUFFIX, move_to_quarantine

    target = tmp_path / "victim.txt"
    target.write_text("keep me")
    q = tmp_path / "q"
    q.mkdir()
    (q / f"bad.txt{REASON_SUFFIX}").symlink_to(target)  # planted before the run
    item = tmp_path / "bad.txt"
    item.write_text("x")
    dest = move_to_quarantine(item, q, "bad.txt", "a reason")
    assert target.read_text() == "keep me"
    notes = [p for p in q.iterdir() if p.name.endswith(REASON_SUFFIX) and not p.is_symlink()]
    assert dest.exists() and len(notes) == 1 and "a reason" in notes[0].read_text()


def test_an_item_too_large_to_take_is_quarantined_and_the_rest_goes_on(repo, monkeypatch):
    import flows.incoming.landing

    monkeypatch.setattr(flows.incoming.landing, "MAX_ITEM_BYTES", 4096)
    drop(repo, "pos.txt", lines("新到的评论", "很好满意推荐", 40))  # about 1.6 KB
    drop(repo, "neg.txt", lines("很长的", "很差" * 50, 60))  # about 19 KB
    out = incoming(repo=str(repo), **GATE)
    assert [v["file"] for v in out["accepted"]] == ["pos.txt"] and out["promoted"]
    assert "over the intake limit" in reason_of(repo, "neg.txt")


def test_a_jsonl_file_nested_past_the_stack_gets_a_verdict(tmp_path):
    """The per-file check turns any error into a verdict (here the JSONL reader's own guard)."""
    from flows.incoming.intake import RawSpec, check_file
    from tests.fixtures import make_repo

    repo = make_repo(tmp_path / "repo", docs=[], git=False)
    (repo / "data/raw/a.jsonl").write_text('{"text": "很好", "label": "pos"}\n', encoding="utf-8")
    copy = tmp_path / "copies" / "0000" / "deep.jsonl"
    copy.parent.mkdir(parents=True)
    copy.write_text("[" * 100_000 + "\n" + '{"text": "也很好", "label": "pos"}\n', encoding="utf-8")
    v, _ = check_file(copy, repo, RawSpec("data/raw", "jsonl"), {"pos", "neg"}, 0.2, False)
    assert not v.accepted and "50%" in v.reason and "malformed" in v.reason


def test_a_file_dropped_again_while_the_flow_runs_stays_in_landing(repo, monkeypatch):
    real = incoming_mod.pipeline
    second = lines("第二批评论", "也很好", 7)

    def pipeline_while_uploading(**kw):
        drop(repo, "pos.txt", second)  # the uploader drops the same name again mid-run
        return real(**kw)

    monkeypatch.setattr(incoming_mod, "pipeline", pipeline_while_uploading)
    raw_before = (repo / "data/raw/pos.txt").read_bytes()
    drop(repo, "pos.txt", lines("新到的评论", "很好满意推荐", 40))
    out = incoming(repo=str(repo), **GATE)
    assert out["promoted"]
    assert (repo / "data/incoming/pos.txt").read_bytes() == second  # untouched, for the next run
    raw = (repo / "data/raw/pos.txt").read_bytes()
    assert raw.count(b"\n") == raw_before.count(b"\n") + 40 and "第二批".encode() not in raw


def test_uncommitted_raw_changes_refuse_the_run_and_survive(repo):
    edit = "用户自己加的一行，还没提交\n"
    with open(repo / "data/raw/neg.txt", "a", encoding="utf-8") as f:
        f.write(edit)
    drop(repo, "pos.txt", lines("新到的评论", "很好满意推荐", 40))
    with pytest.raises(RepositoryError, match="uncommitted changes"):
        incoming(repo=str(repo), **GATE)
    assert (repo / "data/raw/neg.txt").read_text(encoding="utf-8").endswith(edit)
    assert (repo / "data/incoming/pos.txt").exists()  # untouched: the run never claimed it


@pytest.mark.parametrize("outcome", ["rejected", "failed"])
def test_an_edit_made_during_a_run_survives_its_rejection_or_failure(repo, monkeypatch, outcome):
    real = incoming_mod.pipeline
    edit = "运行期间用户改的\n"

    def pipeline_then_edit(**kw):
        result = real(**kw)
        with open(repo / "data/raw/neg.txt", "a", encoding="utf-8") as f:  # the user edits meanwhile
            f.write(edit)
        if outcome == "failed":
            raise RuntimeError("a transient failure after the pipeline")
        return result

    monkeypatch.setattr(incoming_mod, "pipeline", pipeline_then_edit)
    drop(repo, "neg.txt", lines("刚收到的评论", "很差失望退货", 200))  # lowers the score: rejected
    if outcome == "failed":
        with pytest.raises(RuntimeError):
            incoming(repo=str(repo), **GATE)
        assert (repo / "data/incoming/neg.txt").exists()  # back for the next run
    else:
        assert not incoming(repo=str(repo), **GATE)["promoted"]
    text = (repo / "data/raw/neg.txt").read_text(encoding="utf-8")
    assert text.endswith(edit)  # the user's edit survived the undo (the file was left as it is)


def test_label_flips_of_existing_documents_are_quarantined_for_review(repo):
    existing = (repo / "data/raw/pos.txt").read_text(encoding="utf-8").splitlines()[:5]
    drop(repo, "neg.txt", ("\n".join(existing) + "\n").encode())
    sha = head(repo)
    out = incoming(repo=str(repo), **GATE)
    assert not out["accepted"] and not out["promoted"] and head(repo) == sha
    reason = reason_of(repo, "neg.txt")
    assert "would relabel existing documents" in reason and "`pos` in the corpus, `neg` here" in reason


def test_a_predefined_split_that_would_move_an_existing_group_is_refused(repo):
    from flows.incoming.intake import batch_problems
    from textclf.artifacts import read_parquet

    test_doc = read_parquet(repo / "data/processed/test.parquet").iloc[0]
    import pandas as pd

    docs = pd.DataFrame(
        {
            "doc_id": ["new1"],
            "label": [test_doc["label"]],
            "split": ["train"],
            "text": [test_doc["text"]],
        }
    )
    problems = batch_problems(repo, [("train_me.txt", docs)])
    assert (
        "would move 1 existing duplicate group" in problems["train_me.txt"]
        and "test → train" in problems["train_me.txt"]
    )


def test_a_failed_commit_is_rolled_back_and_the_next_run_promotes(repo, monkeypatch):
    # `git commit` refuses: no e-mail configured, and no guessing one from the host
    run(["git", "config", "--unset", "user.email"], repo)
    run(["git", "config", "user.useConfigOnly", "true"], repo)
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    for var in ("GIT_AUTHOR_EMAIL", "GIT_COMMITTER_EMAIL", "EMAIL"):
        monkeypatch.delenv(var, raising=False)
    sha = head(repo)
    drop(repo, "pos.txt", lines("新到的评论", "很好满意推荐", 40))
    with pytest.raises(Exception, match="git commit"):
        incoming(repo=str(repo), **GATE)
    assert head(repo) == sha and tracked_changes(repo) == ""
    assert run(["git", "diff", "--cached", "--name-only"], repo).stdout == ""  # nothing left staged
    assert (repo / "data/incoming/pos.txt").exists()
    run(["git", "config", "user.email", "tests@example.invalid"], repo)
    out = incoming(repo=str(repo), **GATE)
    assert out["promoted"] and not (repo / "data/incoming/pos.txt").exists()


STEPS = ["claimed", "checked", "placed", "tracked", "gated", "committed", "done"]


@pytest.mark.parametrize("step", STEPS)
def test_a_run_killed_at_any_step_converges_on_the_next(repo, step, prefect_api):
    """SIGKILL the flow (a real process) at `step`; the next run finishes or undoes it: the new
    lines are in the committed raw data exactly once, nothing is left staged or half-placed."""
    raw_before = (repo / "data/raw/pos.txt").read_bytes()
    drop(repo, "pos.txt", lines("新到的评论", "很好满意推荐", 40))
    cmd = [
        sys.executable,
        "-m",
        "flows.incoming",
        "--repo",
        str(repo),
        "--target",
        "score",
        "--metrics-file",
        "reports/score.json",
        "--min-age-s",
        "0",
        "--retry-delay-s",
        "0",
        "--no-push",
    ]
    e = {**env(), "PREFECT_API_URL": prefect_api, "TEXTCLF_FAULT_INJECT": step}
    e["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    killed = subprocess.run(cmd, cwd=repo, env=e, capture_output=True, text=True, timeout=600)
    assert killed.returncode == -9, killed.stdout + killed.stderr
    e.pop("TEXTCLF_FAULT_INJECT")
    again = subprocess.run(cmd, cwd=repo, env=e, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    raw = (repo / "data/raw/pos.txt").read_bytes()
    assert raw.startswith(raw_before) and raw.count(b"\n") == raw_before.count(b"\n") + 40, step
    assert run(["git", "log", "--format=%s"], repo).stdout.count("promote new data") == 1
    assert tracked_changes(repo) == "" and run(["git", "diff", "--cached", "--name-only"], repo).stdout == ""
    assert not (repo / "data/incoming").exists() or not any((repo / "data/incoming").iterdir())
    assert not (repo / ".dvc/tmp/textclf-incoming/journal.json").exists()
    assert "up to date" in run(["dvc", "status", "--with-deps", "score"], repo).stdout
    assert json.loads((repo / "reports/score.json").read_text())["test"]["macro_f1"] > 0.5


def test_an_unreadable_journal_is_moved_aside_not_a_crash_every_run(tmp_path, caplog):
    from flows.incoming.transaction import Journal

    folder = Journal.folder(tmp_path)
    folder.mkdir(parents=True)
    (folder / "journal.json").write_text('{"run": "x", "head": ')  # a torn write
    assert Journal.load(tmp_path) is None
    assert not (folder / "journal.json").exists()
    aside = list(folder.glob("journal.unreadable-*.json"))
    assert len(aside) == 1 and aside[0].read_text() == '{"run": "x", "head": '  # kept for a person
    assert "could not be read" in caplog.text and "moved aside" in caplog.text
    (folder / "journal.json").write_text('["not", "a", "journal"]')
    assert Journal.load(tmp_path) is None


def test_a_file_added_to_a_claimed_folder_during_the_run_survives(tmp_path):
    """Issue 27: promotion removed the whole claimed folder, so a file uploaded into it while the
    run checked and retrained was lost. Only the members that were read are removed; the rest
    goes back to the landing folder."""
    from flows.incoming import landing as lz

    landing = tmp_path / "incoming"
    (landing / "pos" / "sub").mkdir(parents=True)
    (landing / "pos" / "a.txt").write_text("很好")
    (landing / "pos" / "sub" / "b.txt").write_text("不错")
    staging = lz.new_staging(landing)
    original = lz.claim(landing / "pos", staging)
    claimed = lz.take(original, tmp_path / "copies", "pos", lambda *a: None)
    (original / "sub" / "late.txt").write_text("uploaded while the run went on")
    assert lz.remove_committed(claimed, landing) is True
    back = landing / "pos"
    assert (back / "sub" / "late.txt").read_text() == "uploaded while the run went on"
    assert not (back / "a.txt").exists() and not (back / "sub" / "b.txt").exists()
    # with nothing new, the folder goes entirely
    (landing / "neg").mkdir()
    (landing / "neg" / "c.txt").write_text("很差")
    original = lz.claim(landing / "neg", staging)
    claimed = lz.take(original, tmp_path / "copies2", "neg", lambda *a: None)
    assert lz.remove_committed(claimed, landing) is False and not original.exists()


def test_an_item_whose_check_is_killed_twice_is_quarantined_not_retried_forever(repo, prefect_api):
    """Issue 27: one poison item (its check OOM-killed every time) went back to the landing folder
    and killed every later run, holding up all new data. The second killed check quarantines it."""
    drop(repo, "pos.txt", lines("新到的评论", "很好满意推荐", 40))
    cmd = [sys.executable, "-m", "flows.incoming", "--repo", str(repo), "--target", "score"]
    cmd += ["--metrics-file", "reports/score.json", "--min-age-s", "0", "--retry-delay-s", "0", "--no-push"]
    e = {**env(), "PREFECT_API_URL": prefect_api, "TEXTCLF_FAULT_INJECT": "checking"}
    e["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    for attempt in (1, 2):  # killed while checking it, twice
        killed = subprocess.run(cmd, cwd=repo, env=e, capture_output=True, text=True, timeout=600)
        assert killed.returncode == -9, (attempt, killed.stdout + killed.stderr)
    e.pop("TEXTCLF_FAULT_INJECT")
    again = subprocess.run(cmd, cwd=repo, env=e, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "killed 2 times" in reason_of(repo, "pos.txt")
    assert (repo / "data/quarantine/pos.txt").exists()  # kept, not deleted
    assert not (repo / "data/incoming").exists() or not any((repo / "data/incoming").iterdir())
    assert tracked_changes(repo) == ""
