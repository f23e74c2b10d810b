"""The new-data run's claimed items: where each one went (`Items`), claiming them from the landing
folder, and recovery: a run killed at any point is finished or undone by the next one."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from flows.incoming import landing as landing_zone
from flows.incoming import transaction
from flows.incoming.tasks import push
from flows.incoming.transaction import Journal
from flows.shell import run_logger
from textclf.artifacts import write_bytes

# ---------------------------------------------------------------------------------------------
# the run's bookkeeping of items


class Items:
    """Where every claimed item went; quarantine and return-to-landing in one place."""

    def __init__(self, root: Path, journal: Journal, landing_dir: Path, quarantine_dir: Path):
        self.root, self.journal, self.landing, self.quarantine_dir = (
            root,
            journal,
            landing_dir,
            quarantine_dir,
        )
        self.log = run_logger()

    def note(self, name: str, where: str) -> None:
        self.journal.items[name] = where
        self.journal.save(self.root)

    def quarantine(self, path: Path, name: str, reason: str) -> None:
        dest = landing_zone.move_to_quarantine(path, self.quarantine_dir, name, reason)
        self.log.warning("%s quarantined as %s: %s", name, dest, reason)
        self.note(name, f"quarantined: {reason}")

    def member(self, path: Path, item: str, rel: str, reason: str) -> None:
        self.quarantine(path, f"{item}__{rel.replace('/', '__')}", f"{item}/{rel}: {reason}")

    def give_back(self, path: Path, name: str, why: str) -> None:
        dest = landing_zone.return_to_landing(path, self.landing, name)
        self.log.warning("%s back in the landing folder as %s: %s", name, dest.name, why)
        self.note(name, f"returned: {why}")


def claim_items(ready: list[Path], staging: Path, items: Items) -> list[landing_zone.Claimed]:
    claimed = []
    copies = items.journal.copies(items.root)
    for n, item in enumerate(ready):
        name = item.name
        try:
            original = landing_zone.claim(item, staging)
        except FileNotFoundError:
            continue  # gone since the scan (renamed or deleted by its uploader)
        items.note(name, "claimed")
        kind = landing_zone.kind_of(original)
        if kind == "link":
            items.quarantine(original, name, "a symbolic link: links are never followed into the data")
            continue
        if kind == "special":
            items.quarantine(original, name, "not a regular file (a FIFO, socket or device)")
            continue
        try:
            claimed.append(
                landing_zone.take(
                    original,
                    copies / f"{n:04d}",
                    name,
                    lambda path, rel, reason, name=name: items.member(path, name, rel, reason),
                )
            )
        except landing_zone.Unstable as err:
            items.give_back(original, name, f"{err}: still being written; next run")
        except Exception as err:  # noqa: BLE001 - unreadable, too large, ...: a reason, not a crash
            items.quarantine(original, name, f"could not be read: {type(err).__name__}: {err}")
    return claimed


# ---------------------------------------------------------------------------------------------
# recovery: a run killed at any point is finished or undone by the next one


# How many runs died while checking an item (an OOM-kill in a reader, say), by item name: the
# second time, the item is quarantined instead of going back to the landing folder, where every
# later run would claim it and die again, holding up all new data.
ATTEMPTS = Path(".dvc/tmp/textclf-incoming-attempts.json")
MAX_KILLED_CHECKS = 2


def _attempts(root: Path) -> dict[str, int]:
    try:
        data = json.loads((root / ATTEMPTS).read_text(encoding="utf-8"))
        return {str(k): int(v) for k, v in data.items()} if isinstance(data, dict) else {}
    except (OSError, ValueError, TypeError):
        return {}


def _save_attempts(root: Path, attempts: dict[str, int]) -> None:
    (root / ATTEMPTS).parent.mkdir(parents=True, exist_ok=True)
    write_bytes(root / ATTEMPTS, json.dumps(attempts, sort_keys=True).encode("utf-8"))


def checks_survived(root: Path, name: str) -> None:
    """An item's check finished: its count of killed checks starts again."""
    attempts = _attempts(root)
    if attempts.pop(name, None) is not None:
        _save_attempts(root, attempts)


def recover(root: Path, landing_dir: Path, quarantine_dir: Path, push_remote: bool) -> None:
    log = run_logger()
    journal = Journal.load(root)
    killed_checking: set[str] = set()
    if journal is not None:
        killed_checking = {name for name, where in journal.items.items() if where == "checking"}
        sha = transaction.committed_by(root, journal)
        if sha:
            log.warning(
                "a killed run %s had promoted commit %s: finishing its clean-up",
                journal.run,
                sha[:8],
            )
            for c in _journal_claims(journal):
                if landing_zone.remove_committed(c, landing_dir):
                    log.warning("%s changed after it was taken: back in the landing folder", c.name)
            if push_remote:
                try:
                    push.fn(str(root))
                except Exception as err:  # noqa: BLE001 - the commit stands; the next push sends it
                    log.warning("dvc push after recovery failed (%s): run `dvc push`", err)
        else:
            log.warning("a killed run %s left changes (phase %s): undoing them", journal.run, journal.phase)
            transaction.undo_raw(root, journal, log)
            transaction.restore_pipeline_files(root, journal, log)
        journal.close(root)
    attempts = _attempts(root)
    for name in killed_checking:
        attempts[name] = attempts.get(name, 0) + 1
    for path in landing_zone.leftover_staging(landing_dir):
        if attempts.get(path.name, 0) >= MAX_KILLED_CHECKS:
            reason = (
                f"the run checking it was killed {attempts[path.name]} times (out of memory, or a crash in a "
                "reader): quarantined so that it stops holding up new data; fix or split it and drop it again"
            )
            dest = landing_zone.move_to_quarantine(path, quarantine_dir, path.name, reason)
            attempts.pop(path.name)
            log.warning("%s quarantined as %s: %s", path.name, dest, reason)
            continue
        dest = landing_zone.return_to_landing(path, landing_dir, path.name)
        log.warning("%s from a killed run: back in the landing folder as %s", path.name, dest.name)
    if attempts != _attempts(root):
        _save_attempts(root, attempts)
    landing_zone.prune_staging(landing_dir)


def _journal_claims(journal: Journal) -> list[landing_zone.Claimed]:
    return [
        landing_zone.Claimed(
            rec["name"],
            Path(rec["original"]),
            Path(rec["copy"]),
            rec["kind"],
            [landing_zone.Member(**m) for m in rec["members"]],
        )
        for rec in journal.claims
    ]


def remember_claims(root: Path, journal: Journal, claimed: list[landing_zone.Claimed]) -> None:
    journal.claims = [
        {
            "name": c.name,
            "original": str(c.original),
            "copy": str(c.copy),
            "kind": c.kind,
            "members": [asdict(m) for m in c.members],
        }
        for c in claimed
    ]
    journal.save(root)
