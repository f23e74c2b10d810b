"""The repository lock: one flow run at a time works on a repository.

A file lock under .dvc/tmp (held by a process, released when it dies) plus an owner file that
names the holder, so a run that waits says who it waits for; `repo_lock` is re-entrant within a
run (a flow calling the pipeline as a subflow does not wait for itself)."""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path

from textclf.artifacts import write_bytes
from textclf.errors import (
    ParamsError,
    RunError,
)

# ---------------------------------------------------------------------------------------------
# the repository lock

log = logging.getLogger("textclf.flows")

LOCK_FILE = Path(".dvc/tmp/textclf-pipeline.lock")
OWNER_FILE = Path(".dvc/tmp/textclf-pipeline.owner.json")


class RepoBusy(RunError):
    """Another run holds the repository lock and did not release it in time."""


# Locks this run already holds (a flow calling the pipeline as a subflow must not wait for itself).
_HELD: ContextVar[frozenset[str]] = ContextVar("textclf_repo_locks", default=frozenset())


def lock_holder(root: Path) -> dict | None:
    try:
        return json.loads((root / OWNER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def describe_holder(holder: dict | None) -> str:
    if not holder:
        return "another process"
    alive = ""
    if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
        try:
            os.kill(holder["pid"], 0)
        except ProcessLookupError:
            alive = ", no longer running"
        except PermissionError:
            pass
    run = f", {holder['what']}" if holder.get("what") else ""
    return f"pid {holder.get('pid')} on {holder.get('host')}{run}, since {holder.get('since')}{alive}"


@contextmanager
def repo_lock(root: Path, timeout_s: float, what: str = "", poll_s: float = 0.2) -> Iterator[None]:
    """Hold the repository's pipeline lock; wait at most `timeout_s` (0: do not wait) for it.

    Re-entrant within one run (a flow that holds it may call the pipeline flow as a subflow);
    across processes and threads it is an OS file lock, released even if the holder is killed.
    """
    from filelock import FileLock, Timeout

    if timeout_s is None or timeout_s < 0:
        raise ParamsError("lock_timeout_s must be >= 0 (the wait for another run is bounded)")
    path = (root / LOCK_FILE).resolve()
    key = str(path)
    if key in _HELD.get():
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.warning(
            "repository %s is busy (%s); waiting up to %g s (lock_timeout_s)",
            root,
            describe_holder(lock_holder(root)),
            timeout_s,
        )
        try:
            lock.acquire(timeout=timeout_s, poll_interval=poll_s)
        except Timeout:
            raise RepoBusy(
                f"repository {root} is busy: another pipeline run holds {LOCK_FILE} "
                f"({describe_holder(lock_holder(root))}); gave up after {timeout_s:g} s. "
                "Nothing was changed. Run again later, or raise lock_timeout_s."
            ) from None
    token = _HELD.set(_HELD.get() | {key})
    owner = root / OWNER_FILE
    try:
        write_bytes(
            owner,
            json.dumps(
                {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "what": what,
                    "since": datetime.now(UTC).isoformat(timespec="seconds"),
                }
            ).encode(),
        )
        yield
    finally:
        _HELD.reset(token)
        owner.unlink(missing_ok=True)
        lock.release()
