"""flows/dvcops.py on real temp repos: the graph from dvc.yaml, one stage through DVC, failure
classification, params overrides, the repository lock. No flow runs here."""

from __future__ import annotations

import threading
import time

import pytest
import yaml

from flows import dvcops, repolock
from tests.fixtures import ROOT
from tests.flows.conftest import another_run_holds_the_lock, set_param
from textclf.errors import ContractError, InputError, ParamsError, StageError, TextclfError, is_retryable

DATA_HALF = ["ingest", "clean", "split", "vocab"]


def test_stage_order_is_read_from_dvc_yaml_at_run_time(built_repo):
    declared = list(yaml.safe_load((built_repo / "dvc.yaml").read_text())["stages"])
    order = dvcops.stage_order(built_repo)
    assert sorted(order) == sorted(declared)
    assert [s for s in order if s in DATA_HALF] == DATA_HALF
    assert dvcops.stage_order(built_repo, "split") == ["ingest", "clean", "split"]

    # a stage added to dvc.yaml is picked up with no change to Python, after what it depends on
    spec = yaml.safe_load((built_repo / "dvc.yaml").read_text())
    spec["stages"] = {
        "vocab_size": {"cmd": "python -c pass", "deps": ["data/processed/vocab.json"]},
        **spec["stages"],
    }
    (built_repo / "dvc.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    order = dvcops.stage_order(built_repo, "vocab_size")
    assert order == [*DATA_HALF, "vocab_size"]

    with pytest.raises(ParamsError, match="no stage 'nope'.*vocab"):
        dvcops.stage_order(built_repo, "nope")


def test_repro_stage_runs_when_changed_and_skips_when_not(built_repo):
    lines = []
    first = dvcops.repro_stage(built_repo, "vocab", on_line=lines.append)
    assert first.status == "skipped"
    forced = dvcops.repro_stage(built_repo, "vocab", force=True, on_line=lines.append)
    assert forced.status == "ran" and forced.seconds > 0
    assert any("textclf.vocab: vocab:" in line for line in lines)  # the stage's own log, streamed


def test_invalid_params_in_a_stage_is_permanent(built_repo):
    set_param(built_repo, "vocab.min_freq", 0)
    with pytest.raises(ParamsError, match=r"params\.yaml: vocab\.min_freq") as err:
        dvcops.repro_stage(built_repo, "vocab")
    assert not is_retryable(err.value)
    with pytest.raises(ParamsError, match="vocab.min_freq"):
        dvcops.validate_params(built_repo)


def test_a_missing_source_path_names_its_key_before_any_stage_runs(built_repo):
    set_param(built_repo, "ingest.source", "data/no-such-corpus")
    with pytest.raises(ParamsError, match=r"params\.yaml: ingest\.source: data/no-such-corpus not found") as err:
        dvcops.validate_params(built_repo)
    assert not is_retryable(err.value)


def test_unclassified_failure_is_retryable(built_repo):
    """A stage killed by a signal (here it kills itself) is worth another try."""
    with (built_repo / "dvc.yaml").open("a", encoding="utf-8") as f:
        f.write('  crash:\n    cmd: python -c "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"\n')
    with pytest.raises(StageError, match="exited with") as err:
        dvcops.repro_stage(built_repo, "crash")
    assert is_retryable(err.value)


def test_unreadable_input_is_permanent(built_repo):
    (built_repo / "data/processed/train.parquet").write_bytes(b"not parquet")
    with pytest.raises(InputError, match="train.parquet: not a readable Parquet file") as err:
        dvcops.repro_stage(built_repo, "vocab")
    assert not is_retryable(err.value)


@pytest.mark.parametrize(
    ("code", "kind", "retry"),
    [
        (3, ParamsError, False),
        (4, ContractError, False),
        (5, InputError, False),
        (70, TextclfError, False),
        (2, TextclfError, False),
        (75, StageError, True),
        (-9, StageError, True),
        (None, StageError, True),
    ],
)
def test_the_stage_exit_code_decides_the_kind_and_the_retry(tmp_path, code, kind, retry):
    lines = ["2026-01-01 10:00:00,000 ERROR textclf: vocab: something"]
    if code is not None:
        lines.append(f"ERROR: failed to reproduce 'vocab': failed to run: python -m stages.vocab, exited with {code}")
    err = dvcops.classify_failure(tmp_path, "vocab", 255, lines)
    assert type(err) is kind and is_retryable(err) is retry


def test_stage_timeout_kills_the_stage(built_repo):
    with pytest.raises(StageError, match="timed out"):
        dvcops.repro_stage(built_repo, "vocab", force=True, timeout_s=0.3)
    assert is_retryable(StageError("x", "timed out"))


def test_params_overrides_are_applied_then_restored(built_repo):
    params = built_repo / "params.yaml"
    before = params.read_bytes()
    with dvcops.params_overrides(built_repo, ["vocab.min_freq=4", "split.seed=7"]):
        data = yaml.safe_load(params.read_text())
        assert data["vocab"]["min_freq"] == 4 and data["split"]["seed"] == 7
    assert params.read_bytes() == before

    params.write_text("# a comment DVC's round-trip modifier keeps\n" + before.decode())
    expected = yaml.safe_load(before)
    expected["vocab"]["ngrams"] = 3 - expected["vocab"]["ngrams"]  # 1 <-> 2: a real change
    with dvcops.params_overrides(built_repo, [f"vocab.ngrams={expected['vocab']['ngrams']}"], keep=True):
        pass
    assert yaml.safe_load(params.read_text()) == expected  # kept; nothing else changed
    assert params.read_text().startswith("# a comment")
    params.write_bytes(before)

    for bad, match in [
        ("vocab.min_freq", "section.key=value"),
        ("vocab.nope=1", "vocab.nope"),
        ("vocab.min_freq=[", "vocab.min_freq"),
    ]:
        with pytest.raises(ParamsError, match=match):
            with dvcops.params_overrides(built_repo, [bad]):
                pass
        assert params.read_bytes() == before


def test_an_override_of_any_other_file_is_refused_and_nothing_is_touched(built_repo, tmp_path):
    """Issue 27's attack: DVC's FILE:key=value grammar let a run's parameters rewrite dvc.yaml's
    stage commands (then run by `dvc repro`), or any file outside the repo."""
    outside = tmp_path / "outside.yaml"
    outside.write_text("a: 1\n")
    files = {p: p.read_bytes() for p in (built_repo / "dvc.yaml", built_repo / "params.yaml", outside)}
    attacks = [
        ["dvc.yaml:stages.ingest.cmd='id > pwned.txt'", "dvc.yaml:~stages.ingest.deps"],
        ["train.lr=0.1", "dvc.yaml:stages.train.cmd=id"],  # one bad item refuses the whole run
        [f"{outside}:a=2"],
        ["../outside.yaml:a=2"],
        ["prefect.yaml:name=x"],
    ]
    for overrides in attacks:
        with pytest.raises(ParamsError, match="not a params file this project lets a run change"):
            with dvcops.params_overrides(built_repo, overrides):
                pass
        with pytest.raises(ParamsError, match="only params.yaml"):
            dvcops.check_override_targets(built_repo, overrides)
    assert {p: p.read_bytes() for p in files} == files
    assert not (built_repo / "pwned.txt").exists()
    with dvcops.params_overrides(built_repo, ["params.yaml:vocab.min_freq=4", "./params.yaml:split.seed=7"]):
        assert yaml.safe_load((built_repo / "params.yaml").read_text())["vocab"]["min_freq"] == 4


def test_path_parameters_must_stay_inside_the_repo(built_repo):
    assert dvcops.inside_repo(built_repo, "data/incoming", "landing") == (built_repo / "data/incoming").resolve()
    for bad in ["/etc", "../x", "data/../../x", "", "."]:
        with pytest.raises(ParamsError, match="landing"):
            dvcops.inside_repo(built_repo, bad, "landing")
    (built_repo / "link").symlink_to("/tmp")
    with pytest.raises(ParamsError, match="outside the repository"):
        dvcops.inside_repo(built_repo, "link/x", "quarantine_dir")


def test_repo_lock_is_bounded_reentrant_and_names_its_holder(built_repo):
    with another_run_holds_the_lock(built_repo, "flow run other") as release:
        started = time.monotonic()
        with pytest.raises(repolock.RepoBusy, match=r"busy.*flow run other.*gave up after 0\.5 s"):
            with repolock.repo_lock(built_repo, 0.5):
                pass
        assert time.monotonic() - started < 5
        threading.Timer(0.5, release.set).start()
        with repolock.repo_lock(built_repo, 10, what="me"):  # waits for the other run, then gets it
            assert repolock.lock_holder(built_repo)["what"] == "me"
            with repolock.repo_lock(built_repo, 0):  # re-entrant in the same run
                pass
    assert repolock.lock_holder(built_repo) is None
    with pytest.raises(ParamsError, match="bounded"):
        with repolock.repo_lock(built_repo, -1):
            pass


def test_a_killed_runs_overrides_are_put_back_by_the_next_run(built_repo):
    """Issue 27: a SIGKILLed `-S` run left its overrides in params.yaml, which a later promotion
    could commit. Its backup names a process that is gone: the next run restores the file."""
    import subprocess
    import sys

    params = built_repo / "params.yaml"
    before = params.read_bytes()
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, sys; from pathlib import Path; from flows import dvcops\n"
            "with dvcops.params_overrides(Path(sys.argv[1]), ['vocab.min_freq=9']):\n"
            "    os.kill(os.getpid(), 9)",
            str(built_repo),
        ],
        cwd=ROOT,
    )
    child.wait(60)
    assert child.returncode == -9
    assert params.read_bytes() != before and (built_repo / dvcops.PARAMS_BACKUP).exists()
    with dvcops.params_overrides(built_repo, []):  # the next run, with or without overrides
        assert params.read_bytes() == before
    assert not (built_repo / dvcops.PARAMS_BACKUP).exists()


def test_a_hand_edit_after_a_killed_override_run_is_never_restored_away(built_repo):
    """The backup restores only what the killed run's overrides wrote: a params.yaml a person
    edited since is left as it is (its pre-run bytes kept aside, in .dvc/tmp)."""
    import subprocess
    import sys

    params = built_repo / "params.yaml"
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, sys; from pathlib import Path; from flows import dvcops\n"
            "with dvcops.params_overrides(Path(sys.argv[1]), ['vocab.min_freq=9']):\n"
            "    os.kill(os.getpid(), 9)",
            str(built_repo),
        ],
        cwd=ROOT,
    )
    child.wait(60)
    edited = params.read_text() + "# my own edit after the crash\n"
    params.write_text(edited)
    with dvcops.params_overrides(built_repo, []):
        assert params.read_text() == edited
    assert not (built_repo / dvcops.PARAMS_BACKUP).exists()
    assert list((built_repo / ".dvc/tmp").glob("textclf-params-backup.*.json"))
