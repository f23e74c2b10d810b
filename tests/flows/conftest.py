"""Flow tests: one Prefect test server for the whole session, and temp copies of the project.

Prefect starts slowly on a small machine, so every flow test shares one `prefect_test_harness`
(a real API server on a temp SQLite database). Repos are built once (`dvc repro` up to vocab,
committed) and copied per test, so a test pays only for the stages it makes run.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.fixtures import make_repo, run

# Offline before Prefect reads its settings: no telemetry calls from the test server.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

GIT_IDENTITY = [("user.name", "textclf-tests"), ("user.email", "tests@example.invalid")]


@pytest.fixture(scope="session", autouse=True)
def prefect_api() -> str:
    """The session's Prefect API URL (a temp server; flows in this process report to it)."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield PREFECT_API_URL.value()


def set_param(repo: Path, dotted: str, value) -> None:
    """Edit one value of the repo's params.yaml (as a user would; not an override)."""
    import yaml

    section, key = dotted.split(".")
    path = repo / "params.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data[section][key] = value
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")


def commit_all(repo: Path, message: str) -> None:
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", message], repo)


@pytest.fixture(scope="session")
def built_template(tmp_path_factory) -> Path:
    """A project copy with the data half built by plain `dvc repro vocab` and committed."""
    repo = make_repo(tmp_path_factory.mktemp("built") / "repo")
    for key, value in GIT_IDENTITY:
        run(["git", "config", key, value], repo)
    run(["dvc", "repro", "vocab"], repo, timeout=300)
    commit_all(repo, "data half built")
    return repo


@pytest.fixture()
def built_repo(built_template, tmp_path) -> Path:
    """A fresh copy of the built template: everything up to vocab current and committed."""
    dest = tmp_path / "repo"
    shutil.copytree(built_template, dest, symlinks=True)
    return dest


@pytest.fixture()
def fresh_repo(tmp_path) -> Path:
    """A project copy on which nothing has run yet."""
    repo = make_repo(tmp_path / "fresh")
    for key, value in GIT_IDENTITY:
        run(["git", "config", key, value], repo)
    return repo


@contextmanager
def another_run_holds_the_lock(repo: Path, what: str) -> Iterator[threading.Event]:
    """A thread holding the repository lock, as a concurrent flow run would, until the yielded
    event is set (or the block ends)."""
    from flows import repolock

    held, release = threading.Event(), threading.Event()

    def other_run():
        with repolock.repo_lock(repo, 5, what=what):
            held.set()
            release.wait(60)

    t = threading.Thread(target=other_run)
    t.start()
    try:
        assert held.wait(10)
        yield release
    finally:
        release.set()
        t.join(10)


# the new-data flow's repositories: the built template plus a stand-in metric (or model) stage


@pytest.fixture(scope="module")
def scored_template(built_template, tmp_path_factory) -> Path:
    from tests.flows.incoming_support import SCORE, with_stage

    return with_stage(built_template, tmp_path_factory.mktemp("scored"), "score", SCORE)


@pytest.fixture(scope="module")
def predicting_template(built_template, tmp_path_factory) -> Path:
    from tests.flows.incoming_support import PREDICT, with_stage

    return with_stage(
        built_template,
        tmp_path_factory.mktemp("predicting"),
        "predict",
        PREDICT,
        outs=["reports/standin/predictions.parquet"],
    )
