"""The landing folder: what the new-data flow takes from it, and how, without ever following a
link, reading a file twice or deleting one.

A landing item is a top-level entry of the landing folder (`data/incoming/`):

- hidden names (`.x`) and in-progress suffixes (`.tmp`, `.part`, `.partial`, `.crdownload`) are
  uploads in progress by convention (rsync, browsers, `scp` to a temp name): left untouched;
- anything modified less than `min_age_s` ago is left for the next run;
- every other item is *claimed*: one atomic rename into this run's private staging folder
  (`<landing>/.textclf-claimed/<run>/`, same filesystem). An uploader that drops the same name
  again while the run goes on creates a new item for the next run; the claimed one is never
  read from the landing path again.

A claimed item is classified with `lstat` (no link is followed): a regular file is read once,
through a descriptor opened with O_NOFOLLOW, into a private copy that every later step uses; a
real folder (a text_dir `<label>/`) has its regular files read the same way. Symbolic links,
FIFOs, sockets, devices, and hidden files inside a folder are quarantined with a reason file; a
link is moved as a link, its target is never opened. A file that changes while it is read is
still being written: it goes back to the landing folder for the next run.

Every item ends in one of three places: committed (its private copy was placed in the raw data
and promoted; the claimed original is removed only if it is unchanged since it was read),
quarantine (with `<name>.reason.txt`), or back in the landing folder.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

SKIP_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload")
STAGING = ".textclf-claimed"
REASON_SUFFIX = ".reason.txt"
MAX_ITEM_BYTES = 1 << 30  # one landing item; larger ones are quarantined (load them with dvc add)


class Unstable(Exception):
    """The item changed while it was read: someone is still writing it."""


@dataclass
class Member:
    """One regular file of a claimed item, read once into the private copy."""

    rel: str  # path inside the item ("" for a file item)
    size: int
    mtime_ns: int
    inode: int
    sha256: str


@dataclass
class Claimed:
    """A landing item this run owns: the original (moved, not copied) and its private copy."""

    name: str
    original: Path  # in the staging folder
    copy: Path  # the bytes every check and the placement use
    kind: str  # file | dir
    members: list[Member] = field(default_factory=list)
    rejected_members: list[tuple[str, str]] = field(default_factory=list)  # (rel, reason) quarantined


def is_skipped_name(name: str) -> bool:
    return name.startswith(".") or name.endswith(SKIP_SUFFIXES) or name.endswith(REASON_SUFFIX)


def ready_items(landing: Path, min_age_s: float, log) -> list[Path]:
    """Top-level landing entries to claim now (see the module docstring). Never follows links:
    a link's own mtime counts, and a folder's newest member is found without entering links."""
    if not landing.is_dir() or landing.is_symlink():
        return []
    now = time.time()
    ready = []
    for entry in sorted(os.scandir(landing), key=lambda e: e.name):
        if is_skipped_name(entry.name):
            continue
        newest = _newest_mtime(Path(entry.path))
        if now - newest < min_age_s:
            log.info(
                "%s: modified %.0f s ago (< min_age_s %g); next run",
                entry.name,
                now - newest,
                min_age_s,
            )
            continue
        ready.append(Path(entry.path))
    return ready


def _newest_mtime(path: Path, depth: int = 0) -> float:
    st = path.lstat()
    newest = st.st_mtime
    if stat.S_ISDIR(st.st_mode) and depth < 32:
        try:
            for entry in os.scandir(path):
                newest = max(newest, _newest_mtime(Path(entry.path), depth + 1))
        except OSError:
            pass
    return newest


def staging_root(landing: Path) -> Path:
    return landing / STAGING


def new_staging(landing: Path) -> Path:
    path = staging_root(landing) / f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}-{uuid.uuid4().hex[:8]}"
    path.mkdir(parents=True)
    return path


def claim(item: Path, staging: Path) -> Path:
    """Move one landing item into the staging folder: a rename, atomic on one filesystem."""
    dest = staging / item.name
    os.rename(item, dest)
    return dest


def kind_of(path: Path) -> str:
    """file | dir | link | special (by lstat: links are not followed)."""
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode):
        return "link"
    if stat.S_ISREG(st.st_mode):
        return "file"
    if stat.S_ISDIR(st.st_mode):
        return "dir"
    return "special"


def read_once(path: Path, limit: int | None = None) -> tuple[bytes, os.stat_result]:
    """The bytes of a regular file, opened without following a link (O_NOFOLLOW) and without
    blocking on a FIFO (O_NONBLOCK); `Unstable` if its size or mtime moved while it was read."""
    limit = MAX_ITEM_BYTES if limit is None else limit
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    fd = os.open(path, flags)
    try:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode):
            raise OSError(f"{path.name} is not a regular file")
        if before.st_size > limit:
            raise OSError(f"{path.name} is {before.st_size} bytes, over the intake limit of {limit}")
        chunks, total = [], 0
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise OSError(f"{path.name} grew over the intake limit of {limit} bytes")
        after = os.fstat(fd)
    finally:
        os.close(fd)
    if (after.st_size, after.st_mtime_ns) != (
        before.st_size,
        before.st_mtime_ns,
    ) or after.st_size != total:
        raise Unstable(f"{path.name} changed while it was read")
    return b"".join(chunks), after


def take(original: Path, copies: Path, name: str, quarantine_member) -> Claimed:
    """Read a claimed item into a private copy under `copies`. Members of a folder that are not
    regular files or real folders, or are hidden, are handed to `quarantine_member(path, rel,
    reason)` and left out. Raises Unstable (the caller returns the item) or OSError."""
    kind = kind_of(original)
    copy = copies / name
    if kind == "file":
        data, st = read_once(original)
        _write_new(copy, data)
        return Claimed(name, original, copy, "file", [_member("", data, st)])
    if kind != "dir":
        raise ValueError(kind)
    claimed = Claimed(name, original, copy, "dir")
    copy.mkdir(parents=True)
    total = 0
    hidden: list[str] = []  # hidden folders (pos/.git, pos/.ssh): quarantined whole, never read
    for rel, path, what in _walk(original):
        if any(rel.startswith(h + "/") for h in hidden):
            continue
        if what == "dir" and Path(rel).name.startswith("."):
            hidden.append(rel)
            reason = "a hidden folder: not taken into the data (nothing in it was read)"
            quarantine_member(path, rel, reason)
            claimed.rejected_members.append((rel, reason))
            continue
        if what == "dir":
            (copy / rel).mkdir(parents=True, exist_ok=True)
            continue
        reason = _member_problem(Path(rel).name, what)
        if reason:
            quarantine_member(path, rel, reason)
            claimed.rejected_members.append((rel, reason))
            continue
        data, st = read_once(path, MAX_ITEM_BYTES - total if total else None)
        total += len(data)
        _write_new(copy / rel, data)
        claimed.members.append(_member(rel, data, st))
    return claimed


def _member_problem(name: str, what: str) -> str | None:
    if what == "link":
        return "a symbolic link: links are never followed into the data"
    if what == "special":
        return "not a regular file (a FIFO, socket or device)"
    if name.startswith("."):
        return "a hidden file: not taken into the data"
    return None


def _walk(root: Path, rel: str = "", depth: int = 0):
    """(rel, path, kind) of everything under a real folder, links not followed (a folder is
    listed before its contents, which are read lazily: one moved away meanwhile is not entered)."""
    if depth > 32:
        raise OSError(f"{root}: folders nested more than 32 deep")
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        path = Path(entry.path)
        r = f"{rel}/{entry.name}" if rel else entry.name
        what = kind_of(path)
        yield r, path, what
        if what == "dir" and path.is_dir() and not path.is_symlink():
            yield from _walk(path, r, depth + 1)


def _member(rel: str, data: bytes, st: os.stat_result) -> Member:
    return Member(rel, st.st_size, st.st_mtime_ns, st.st_ino, hashlib.sha256(data).hexdigest())


def _write_new(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def unchanged(claimed: Claimed) -> bool:
    """The claimed original still holds exactly the bytes that were read (no writer kept going)."""
    for m in claimed.members:
        path = claimed.original / m.rel if m.rel else claimed.original
        try:
            st = path.lstat()
        except OSError:
            return False
        if (st.st_size, st.st_mtime_ns, st.st_ino) != (m.size, m.mtime_ns, m.inode):
            return False
    return True


# ---------------------------------------------------------------------------------------------
# where an item goes: never deleted unless its bytes are committed


def unique_path(path: Path) -> Path:
    if not os.path.lexists(path):
        return path
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    for i in range(1000):
        candidate = path.with_name(f"{path.stem}-{stamp}{f'-{i}' if i else ''}{path.suffix}")
        if not os.path.lexists(candidate):
            return candidate
    raise OSError(f"{path}: no free name")


def move_to_quarantine(path: Path, folder: Path, name: str, reason: str) -> Path:
    """Move `path` (a file, folder or link: moved as itself) into quarantine, `<name>.reason.txt`
    beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    dest = unique_path(folder / name)
    for i in range(1, 1000):  # a name whose reason file is free too (a planted link there is left alone)
        if not os.path.lexists(dest.parent / f"{dest.name}{REASON_SUFFIX}"):
            break
        dest = unique_path(folder / f"{Path(name).stem}-{i}{Path(name).suffix}")
    os.rename(path, dest) if _same_fs(path, folder) else shutil.move(str(path), dest)
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    # a new file (O_EXCL | O_NOFOLLOW): never written through a link someone planted at that name
    note = dest.parent / f"{dest.name}{REASON_SUFFIX}"
    _write_new(note, f"file: {name}\nquarantined: {stamp} by the textclf incoming flow\nreason: {reason}\n".encode())
    return dest


def return_to_landing(path: Path, landing: Path, name: str) -> Path:
    """Put a claimed item back (under its own name when it is free, else a new one)."""
    dest = unique_path(landing / name)
    os.rename(path, dest)
    return dest


def _same_fs(a: Path, b: Path) -> bool:
    try:
        return a.lstat().st_dev == b.stat().st_dev
    except OSError:
        return False


def remove_committed(claimed: Claimed, landing: Path) -> bool:
    """After promotion: the original goes if it is unchanged since it was read (its bytes are in
    the commit); if a writer kept writing into it, it goes back to the landing folder (True)."""
    if not os.path.lexists(claimed.original):
        return False
    if not unchanged(claimed):
        return_to_landing(claimed.original, landing, claimed.name)
        return True
    if claimed.kind != "dir":
        claimed.original.unlink()
        return False
    # a folder: only the members that were read (and committed) go; anything that appeared in it
    # since (an upload into the claimed folder) goes back to the landing folder with the folder
    for m in claimed.members:
        (claimed.original / m.rel).unlink()
    for top, _dirs, _files in os.walk(claimed.original, topdown=False):
        if Path(top) != claimed.original:
            try:
                os.rmdir(top)
            except OSError:
                pass  # not empty: something new is in it
    try:
        os.rmdir(claimed.original)
        return False
    except OSError:
        return_to_landing(claimed.original, landing, claimed.name)
        return True


def leftover_staging(landing: Path) -> list[Path]:
    """Items in staging folders of runs that died (the caller holds the repository lock, so no
    live run owns them)."""
    root = staging_root(landing)
    if not root.is_dir() or root.is_symlink():
        return []
    return [
        Path(e.path)
        for run in sorted(os.scandir(root), key=lambda e: e.name)
        if run.is_dir(follow_symlinks=False)
        for e in sorted(os.scandir(run.path), key=lambda e: e.name)
    ]


def prune_staging(landing: Path) -> None:
    """Remove empty staging folders (and the private copies of finished runs)."""
    root = staging_root(landing)
    if not root.is_dir() or root.is_symlink():
        return
    for run in os.scandir(root):
        if run.is_dir(follow_symlinks=False) and not any(os.scandir(run.path)):
            os.rmdir(run.path)
    if not any(os.scandir(root)):
        os.rmdir(root)
