"""The repository lock: one flow run at a time works on a repository.

Two layers (`run_slot`):
- a Prefect global concurrency limit per repository (`textclf-repo-<hash>`, one slot), taken
  with Prefect's own `concurrency()`, so Prefect shows who works on the repository and who
  waits: the Concurrency page lists the limit with its active slot, the slot's lease names the
  holding flow run, and a waiting run logs that it waits for the slot and for whom;
- underneath, a file lock under .dvc/tmp (held by a process, released when it dies) plus an owner
  file that names the holder; it also keeps apart runs outside Prefect or on another server.
A slot is a lease (`SLOT_LEASE_S`, renewed by Prefect while held): a holder that is killed
cannot give it back. What Prefect does not do is added on top: the holder records its lease
beside the file lock (`SLOT_FILE`; Prefect's `ConcurrencyContext` holds the granted lease id),
and a run that finds the recorded holder dead on this host releases that lease at once, before
and while it waits, instead of waiting for the lease to expire (a holder on another host: the
lease expires after `SLOT_LEASE_S`).
Both layers are re-entrant within a run (a flow calling the pipeline as a subflow does not wait
for itself)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path

from flows import dvcops
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
SLOT_FILE = Path(".dvc/tmp/textclf-pipeline.slot.json")  # the held slot's lease, pid and host
SLOT_LEASE_S = 60.0  # renewed by Prefect while held; Prefect's server accepts no less
ACQUIRE_MIN_S = 2.0  # the least time concurrency() gets: taking a free slot is an API call too


class RepoBusy(RunError):
    """Another run holds the repository lock and did not release it in time."""


# Locks this run already holds (a flow calling the pipeline as a subflow must not wait for itself).
_HELD: ContextVar[frozenset[str]] = ContextVar("textclf_repo_locks", default=frozenset())


def _record(path: Path) -> dict | None:
    """A holder record (the file lock's owner, or the slot's), None when absent or unreadable."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def lock_holder(root: Path) -> dict | None:
    return _record(root / OWNER_FILE)


def slot_holder(root: Path) -> dict | None:
    return _record(root / SLOT_FILE)


def _dead(holder: dict) -> bool:
    """True only when the holder was a process on this host that no longer runs."""
    if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
        return False
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass
    return False


def describe_holder(holder: dict | None) -> str:
    if not holder:
        return "another process"
    alive = ", no longer running" if _dead(holder) else ""
    run = f", {holder['what']}" if holder.get("what") else ""
    return f"pid {holder.get('pid')} on {holder.get('host')}{run}, since {holder.get('since')}{alive}"


def _holder_record(what: str, **extra) -> bytes:
    record = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "what": what,
        "since": datetime.now(UTC).isoformat(timespec="seconds"),
        **extra,
    }
    return json.dumps(record).encode()


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
            raise RepoBusy(
                f"repository {root} is busy: another pipeline run holds {LOCK_FILE} "
                f"({describe_holder(lock_holder(root))}); gave up after {asked_s or timeout_s:g} s. "
                "Nothing was changed. Run again later, or raise lock_timeout_s."
            ) from None
    token = _HELD.set(_HELD.get() | {key})
    owner = root / OWNER_FILE
    try:
        write_bytes(owner, _holder_record(what))
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


def _ensure_limit(client, name: str) -> bool:
    """The repository's limit (one slot) in place; whether another run holds its slot now."""
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    try:
        return client.read_global_concurrency_limit_by_name(name).active_slots >= 1
    except ObjectNotFound:
        try:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
        except ObjectAlreadyExists:
            pass  # another run created it meanwhile
        return False


def _flow_run_holder():
    from prefect.client.schemas.objects import ConcurrencyLeaseHolder
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    return ConcurrencyLeaseHolder(type="flow_run", id=ctx.flow_run.id) if ctx and ctx.flow_run else None


def _lease_known(client, lease_id: str) -> bool:
    """Whether the server still has the lease (renewing it is the one way to ask: 410 Gone when
    it does not, e.g. a server restarted with its leases in memory, or another temporary server)."""
    from prefect.exceptions import PrefectHTTPStatusError

    try:
        client.renew_concurrency_lease(lease_id, lease_duration=SLOT_LEASE_S)
    except PrefectHTTPStatusError as err:
        if err.response.status_code in (404, 410):
            return False
        raise
    return True


def _release_dead_holders_slot(client, root: Path, name: str) -> bool:
    """If the recorded slot holder is a process on this host that no longer runs, give back the
    slot it could not (it was killed) and say so; True when one was given back.

    Its lease is released; if the server no longer knows that lease, the slot it still counts
    belongs to nobody alive and is decremented directly."""
    holder = slot_holder(root)
    if not holder or not _dead(holder) or not holder.get("lease_id") or holder.get("limit") != name:
        return False
    lease_id = holder["lease_id"]
    if _lease_known(client, lease_id):
        client.release_concurrency_slots_with_lease(lease_id)
        how = f"released its lease {lease_id}"
    else:
        client.release_concurrency_slots(names=[name], slots=1, occupancy_seconds=1.0)
        how = f"the server had lost its lease {lease_id}: decremented the slot"
    _forget_slot(root, lease_id)
    log.warning(
        "gave back the repository's Prefect slot held by %s, which was killed (%s)", describe_holder(holder), how
    )
    return True


@contextmanager
def _reclaiming(root: Path, name: str, poll_s: float) -> Iterator[None]:
    """While this run waits in Prefect's `concurrency()`, a thread gives back the slot of a
    recorded holder that was killed (Prefect alone would wait for its lease to expire)."""
    from prefect.client.orchestration import get_client

    stop = threading.Event()

    def watch() -> None:
        try:
            with get_client(sync_client=True) as client:
                while not stop.wait(poll_s):
                    try:
                        _release_dead_holders_slot(client, root, name)
                    except Exception as err:  # noqa: BLE001 - a server restarting: try again next round
                        log.debug("could not check the slot's holder (%s)", err)
        except Exception as err:  # noqa: BLE001 - no client: the lease then expires by itself
            log.warning("cannot give back a killed holder's slot while waiting (%s)", err)

    watcher = dvcops.context_thread(watch, name="textclf-slot-reclaim")
    watcher.start()
    try:
        yield
    finally:
        stop.set()
        watcher.join(5)


def _take_slot(stack: ExitStack, root: Path, name: str, left_s: float, asked_s: float, poll_s: float) -> str:
    """The repository's slot through Prefect's `concurrency()` (which keeps renewing its lease
    until `stack` closes, and then releases it), waiting at most `left_s`; its lease id (read
    from the `ConcurrencyContext` Prefect records granted leases in). RepoBusy after the wait."""
    from prefect.concurrency.context import ConcurrencyContext
    from prefect.concurrency.sync import concurrency

    leases = stack.enter_context(ConcurrencyContext())
    try:
        with _reclaiming(root, name, poll_s):
            stack.enter_context(
                concurrency(
                    name,
                    timeout_seconds=max(left_s, ACQUIRE_MIN_S),
                    lease_duration=SLOT_LEASE_S,
                    strict=True,
                    holder=_flow_run_holder(),
                    raise_on_lease_renewal_failure=False,  # the file lock still keeps runs apart
                )
            )
    except TimeoutError:
        raise RepoBusy(
            f"repository {root} is busy: another flow run holds the Prefect concurrency limit "
            f"{name} ({describe_holder(slot_holder(root))}); gave up after {asked_s:g} s. "
            "Nothing was changed. Run again later, or raise lock_timeout_s."
        ) from None
    return str(leases.cleanup_lease_ids[-1])


@contextmanager
def run_slot(root: Path, timeout_s: float, what: str = "", poll_s: float = 1.0) -> Iterator[None]:
    """The repository's Prefect concurrency slot (Prefect's `concurrency()`), then its file
    lock; at most `timeout_s` for both.

    What Prefect does not do is added on top: the slot's lease is recorded beside the file lock,
    and a killed holder's slot is given back at once, before and while this run waits. A Prefect
    API that cannot be reached or refuses the request leaves the file lock alone in charge."""
    from prefect.client.orchestration import get_client

    if timeout_s is None or timeout_s < 0:
        raise ParamsError("lock_timeout_s must be >= 0 (the wait for another run is bounded)")
    name = slot_name(root)
    started = time.monotonic()
    with ExitStack() as stack:
        lease_id = None
        if name not in _SLOTS.get():
            try:
                with get_client(sync_client=True) as client:
                    busy = _ensure_limit(client, name) and not _release_dead_holders_slot(client, root, name)
                if busy:
                    log.warning(
                        "waiting for the repository's Prefect concurrency slot %s (held by %s); up to %g s",
                        name,
                        describe_holder(slot_holder(root)),
                        timeout_s,
                    )
                lease_id = _take_slot(stack, root, name, timeout_s - (time.monotonic() - started), timeout_s, poll_s)
            except RepoBusy:
                raise
            except Exception as err:  # noqa: BLE001 - no server, or an old one: the file lock still holds
                log.warning("no Prefect concurrency slot for this repository (%s); the file lock alone applies", err)
        if lease_id is not None:
            # recorded at once, so a waiting run can tell when this process is gone
            write_bytes(root / SLOT_FILE, _holder_record(what, lease_id=lease_id, limit=name))
            stack.callback(_forget_slot, root, lease_id)
            token = _SLOTS.set(_SLOTS.get() | {name})
            stack.callback(_SLOTS.reset, token)
            log.info("holding the repository's Prefect concurrency slot %s", name)
        left = max(0.0, timeout_s - (time.monotonic() - started))
        stack.enter_context(repo_lock(root, left, what, asked_s=timeout_s))
        yield


def _forget_slot(root: Path, lease_id: str) -> None:
    """Remove the slot record if it is still this lease's (not a newer holder's)."""
    if (slot_holder(root) or {}).get("lease_id") == lease_id:
        (root / SLOT_FILE).unlink(missing_ok=True)
