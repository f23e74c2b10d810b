"""The repository lock: one flow run at a time works on a repository.

Two layers (`run_slot`): a Prefect global concurrency limit per repository (`textclf-repo-<hash>`,
limit 1), so a run that waits shows in Prefect (the Concurrency page lists the limit and its
holder; the run logs that it waits for a slot); underneath, a file lock under .dvc/tmp (held by a
process, released when it dies) plus an owner file that names the holder, which also holds for
runs outside Prefect and against another Prefect server. Both are re-entrant within a run (a
flow calling the pipeline as a subflow does not wait for itself)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
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
def repo_lock(
    root: Path, timeout_s: float, what: str = "", poll_s: float = 0.2, asked_s: float | None = None
) -> Iterator[None]:
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
            waited = asked_s if asked_s is not None else timeout_s
            raise RepoBusy(
                f"repository {root} is busy: another pipeline run holds {LOCK_FILE} "
                f"({describe_holder(lock_holder(root))}); gave up after {waited:g} s. "
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


# ---------------------------------------------------------------------------------------------
# the Prefect slot above it

_SLOTS: ContextVar[frozenset[str]] = ContextVar("textclf_repo_slots", default=frozenset())


def slot_name(root: Path) -> str:
    """The repository's global concurrency limit: one name per resolved path."""
    return "textclf-repo-" + hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:12]


def _ensure_limit(name: str) -> bool:
    """Create the limit (1 slot) if the Prefect API does not have it; False if there is no API
    to ask (the file lock alone then keeps runs apart)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectNotFound

    try:
        with get_client(sync_client=True) as client:
            try:
                client.read_global_concurrency_limit_by_name(name)
            except ObjectNotFound:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
        return True
    except Exception as err:  # noqa: BLE001 - no server, or an old one: the file lock still holds
        log.warning("no Prefect concurrency limit for this repository (%s); the file lock alone applies", err)
        return False


@contextmanager
def run_slot(root: Path, timeout_s: float, what: str = "") -> Iterator[None]:
    """The repository's Prefect concurrency slot, then its file lock; at most `timeout_s` for both."""
    from prefect.concurrency.sync import concurrency

    if timeout_s is None or timeout_s < 0:
        raise ParamsError("lock_timeout_s must be >= 0 (the wait for another run is bounded)")
    name = slot_name(root)
    started = time.monotonic()
    with ExitStack() as stack:
        if name not in _SLOTS.get() and _ensure_limit(name):
            log.info("taking a slot of the Prefect concurrency limit %s (repository %s)", name, root)
            try:
                # the wait for the slot is at least a second: Prefect's own acquire loop needs one round
                stack.enter_context(concurrency(name, occupy=1, timeout_seconds=max(timeout_s, 1.0), strict=True))
            except TimeoutError:
                raise RepoBusy(
                    f"repository {root} is busy: another flow run holds the Prefect concurrency limit {name} "
                    f"({describe_holder(lock_holder(root))}); gave up after {timeout_s:g} s. "
                    "Nothing was changed. Run again later, or raise lock_timeout_s."
                ) from None
            token = _SLOTS.set(_SLOTS.get() | {name})
            stack.callback(_SLOTS.reset, token)
        left = max(0.0, timeout_s - (time.monotonic() - started))
        stack.enter_context(repo_lock(root, left, what, asked_s=timeout_s))
        yield
