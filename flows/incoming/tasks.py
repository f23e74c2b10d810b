"""The new-data flow's repository steps as Prefect tasks (what shows in the UI): check a file,
`dvc add` the raw folder, commit the promotion, `dvc push`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from flows import dvcops
from flows.incoming.intake import (
    RawSpec,
    check_file,
)
from flows.shell import dvc_cli, git, run_logger

# ---------------------------------------------------------------------------------------------
# tasks: the steps that show in the Prefect UI


@task(name="check-file", cache_policy=NO_CACHE, persist_result=False)
def check_task(
    path: str,
    repo: str,
    spec: RawSpec,
    labels: set[str] | None,
    max_bad_fraction: float,
    allow_new_labels: bool,
):
    v, docs = check_file(Path(path), Path(repo), spec, labels, max_bad_fraction, allow_new_labels)
    run_logger().info("%s: %s (%s)", v.file, "accepted" if v.accepted else "rejected", v.reason)
    return v, docs


@task(name="dvc-add", cache_policy=NO_CACHE, persist_result=False)
def track_raw(repo: str, raw: str, raw_in_git: bool) -> None:
    """`dvc add` the raw folder (first moving it from git to DVC if git tracked it)."""
    root = Path(repo)
    if raw_in_git:
        run_logger().info("%s was tracked by git; moving it to DVC (git rm -r --cached)", raw)
        git(root, "rm", "-r", "-q", "--cached", "--", raw)
    dvc_cli(root, "add", raw, logger=run_logger())


@task(name="promote", cache_policy=NO_CACHE, persist_result=False)
def commit(repo: str, paths: list[str], message: str) -> str:
    root = Path(repo)
    git(root, "add", "-A", "--", *paths)
    git(root, "commit", "-q", "-m", message)
    sha = git(root, "rev-parse", "HEAD").stdout.strip()
    run_logger().info("committed %s: %s", sha[:8], message.splitlines()[0])
    return sha


@task(
    name="dvc-push",
    cache_policy=NO_CACHE,
    persist_result=False,
    retries=2,
    retry_delay_seconds=[5, 20],
)
def push(repo: str) -> str | None:
    """`dvc push` to the default remote, if one is configured; returns its name."""
    root = Path(repo)
    remote = subprocess.run(
        [sys.executable, "-m", "dvc", "config", "core.remote"],
        cwd=root,
        env=dvcops.subprocess_env(),
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()
    if not remote:
        run_logger().info("no default DVC remote: nothing pushed")
        return None
    dvc_cli(root, "push", logger=run_logger())
    return remote
