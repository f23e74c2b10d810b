"""Subprocess plumbing for the flows, in one place: git, the DVC command line, the run logger.

Every flow module that runs git goes through `git` here, so time-outs, the environment
(`dvcops.subprocess_env`) and the error a failure raises are the same everywhere; `dvc_cli` runs a
DVC command that must succeed (two callers that read DVC's exit code themselves, `dvc status` in
the transaction and `dvc config` in the tasks, call `dvcops.run_command` directly).
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

from flows import dvcops
from textclf.errors import RunError, StageError

log = logging.getLogger("textclf.flows")

GIT_TIMEOUT_S = 120


class RepositoryError(RunError):
    """The repository is not in a state the flow can work from (uncommitted changes where the
    flow writes, a git command that failed)."""


def run_logger() -> logging.Logger | logging.LoggerAdapter:
    """The Prefect run logger inside a run (logs reach the UI), a plain logger outside one."""
    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:
        return log


def git(
    root: Path, *args: str, check: bool = True, text: bool = True, timeout_s: float = GIT_TIMEOUT_S
) -> subprocess.CompletedProcess:
    """`git <args>` in `root`. With `check`, a failure (exit code, no git, time-out) raises
    RepositoryError; without, it comes back as a non-zero returncode with the reason in stderr."""
    try:
        proc = subprocess.run(
            ["git", *args], cwd=root, env=dvcops.subprocess_env(), capture_output=True, text=text, timeout=timeout_s
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        proc = subprocess.CompletedProcess(
            ["git", *args], -1, "" if text else b"", str(err) if text else str(err).encode()
        )
        if check:
            raise RepositoryError(f"git {' '.join(args)} failed: {err}") from err
    if check and proc.returncode != 0:
        raise RepositoryError(f"git {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def dvc_cli(root: Path, *args: str, timeout_s: float = 1800, logger=log) -> list[str]:
    """`python -m dvc <args>` in `root`, its output lines logged; StageError on a non-zero exit."""

    def emit(line: str) -> None:
        if line.strip():
            logger.info("dvc %s | %s", args[0], line)

    rc, lines = dvcops.run_command([sys.executable, "-m", "dvc", *args], root, timeout_s, emit)
    if rc != 0:
        raise StageError(f"dvc {args[0]}", f"exited with {rc}:\n" + "\n".join(lines[-30:]))
    return lines
