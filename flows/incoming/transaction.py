"""The new-data flow's transaction over the repository: what it may change, a journal of every
change it makes, and how it puts things back — without ever touching what the user changed.

- Before anything: the run refuses to start when the raw folder has uncommitted changes
  (`git status`, `dvc status` of its .dvc file) or the git index holds staged changes, and says
  what to commit. So "back to HEAD" under the raw folder can only undo the run's own changes.
- Every change to the raw folder is written to the journal *before* it is made: a created file
  with the SHA-256 it will have, an appended-to file with a backup of its bytes and the SHA-256 it
  will have. Undoing a change checks the file still holds exactly what the run wrote; a file the
  user edited meanwhile is left alone (and the log says so). Nothing is restored with
  `--force` over user data: `dvc checkout --force` is used for pipeline outputs only.
- The journal (`.dvc/tmp/textclf-incoming/journal.json`, written atomically at every phase)
  lets the next run finish or undo a run that was killed at any point (see `recover`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import signal
import sys
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from flows import dvcops
from flows.shell import RepositoryError, dvc_cli, git
from textclf.artifacts import write_bytes

log = logging.getLogger("textclf.flows")

JOURNAL_DIR = Path(".dvc/tmp/textclf-incoming")
PHASES = ("claimed", "placed", "committed")
# the subject of a promotion commit (how recovery knows a commit on top of the run's start is ours)
PROMOTE_PREFIX = "textclf: promote new data"


def tracked_at_head(root: Path, path: str) -> bool:
    return bool(git(root, "ls-tree", "-r", "--name-only", "HEAD", "--", path, check=False).stdout.strip())


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: Path) -> str | None:
    try:
        return sha256(path.read_bytes()) if path.is_file() else None
    except OSError:
        return None


# ---------------------------------------------------------------------------------------------
# preconditions


def uncommitted_raw_changes(root: Path, raw: str) -> list[str]:
    """What `git status` / `dvc status` show as uncommitted under the raw folder: files git
    tracks or does not know (a folder DVC tracks is git-ignored), its .dvc file, and the data
    behind that .dvc file."""
    status = git(root, "status", "--porcelain", "--untracked-files=all", "--", raw, f"{raw}.dvc", check=False).stdout
    problems = [f"git status: {line.strip()}" for line in status.splitlines()]
    if (root / f"{raw}.dvc").exists():
        rc, lines = dvcops.run_command([sys.executable, "-m", "dvc", "status", "--json", f"{raw}.dvc"], root, 300)
        text = "\n".join(lines).strip()
        try:
            changed = json.loads(text[text.index("{") :]) if "{" in text else {"output": text}
        except ValueError:
            changed = {"output": text}
        if rc != 0 or changed:
            problems.append(f"dvc status {raw}.dvc: {json.dumps(changed, ensure_ascii=False)[:300]}")
    return problems


def check_preconditions(root: Path, raw: str) -> None:
    if git(root, "rev-parse", "--verify", "-q", "HEAD", check=False).returncode != 0:
        raise RepositoryError(f"{root} has no git commit to compare with or promote onto")
    if git(root, "diff", "--cached", "--quiet", check=False).returncode != 0:
        raise RepositoryError(
            "the git index has staged changes; commit or unstage them first "
            "(the promotion commit must contain only the pipeline's files)"
        )
    problems = uncommitted_raw_changes(root, raw)
    if problems:
        raise RepositoryError(
            f"{raw} has uncommitted changes, which a rejected or failed run must not touch: "
            + "; ".join(problems[:5])
            + f". Commit them first: `dvc add {raw} && git add {raw}.dvc "
            f"&& git commit` (or `git add {raw} && git commit` for a folder git tracks)"
        )


# ---------------------------------------------------------------------------------------------
# the journal


@dataclass
class Journal:
    run: str
    head: str  # the commit the run started from
    staging: str  # where the claimed originals are (see flows.incoming.landing)
    phase: str = "claimed"  # claimed | placed | committed
    created: list[dict] = field(default_factory=list)  # {"path", "sha256"}
    appended: list[dict] = field(default_factory=list)  # {"path", "backup", "before", "after"}
    params: dict[str, str] = field(default_factory=dict)  # params file -> backup (bytes at the start)
    meta_paths: list[str] = field(default_factory=list)  # git-tracked files the pipeline may change
    meta_existed: list[str] = field(default_factory=list)
    stages: list[str] = field(default_factory=list)
    raw: str = ""
    raw_in_git: bool = False
    commit: str | None = None
    items: dict[str, str] = field(default_factory=dict)  # name -> where it went (for the log)
    claims: list[dict] = field(default_factory=list)  # claimed items: original, copy, members' stat

    @staticmethod
    def folder(root: Path) -> Path:
        return root / JOURNAL_DIR

    def path(self, root: Path) -> Path:
        return self.folder(root) / "journal.json"

    def save(self, root: Path) -> None:
        write_bytes(self.path(root), json.dumps(asdict(self), indent=1, sort_keys=True).encode("utf-8"))

    @classmethod
    def load(cls, root: Path) -> Journal | None:
        path = cls.folder(root) / "journal.json"
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise TypeError(f"a JSON {type(data).__name__}, not an object")
            return cls(**data)
        except (OSError, UnicodeDecodeError, ValueError, TypeError) as err:
            # unreadable (a torn write, a hand edit, another version's format): moved aside, so it
            # does not block every later run; what it described is left where it is, for a person
            aside = path.with_name(f"journal.unreadable-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json")
            os.replace(path, aside)
            logging.getLogger("textclf.flows").warning(
                "the new-data journal %s could not be read (%s: %s): moved aside to %s; a killed run's "
                "staged items, if any, are under %s",
                path,
                type(err).__name__,
                err,
                aside,
                cls.folder(root),
            )
            return None

    def backups(self, root: Path) -> Path:
        return self.folder(root) / self.run / "backups"

    def copies(self, root: Path) -> Path:
        return self.folder(root) / self.run / "copies"

    def close(self, root: Path) -> None:
        shutil.rmtree(self.folder(root) / self.run, ignore_errors=True)
        self.path(root).unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# changes to the raw folder, journalled before they are made


def record_create(root: Path, journal: Journal, target: Path, data: bytes) -> None:
    journal.created.append({"path": str(target.relative_to(root)), "sha256": sha256(data)})
    journal.save(root)


def record_append(root: Path, journal: Journal, target: Path, old: bytes, new: bytes) -> None:
    backups = journal.backups(root)
    backups.mkdir(parents=True, exist_ok=True)
    backup = backups / f"{len(journal.appended):04d}-{target.name}"
    write_bytes(backup, old)
    journal.appended.append(
        {
            "path": str(target.relative_to(root)),
            "backup": str(backup.relative_to(root)),
            "before": sha256(old),
            "after": sha256(new),
        }
    )
    journal.save(root)


def undo_raw(root: Path, journal: Journal, logger=log) -> list[str]:
    """Undo the journalled changes to the raw folder that are still exactly as the run made
    them; returns the files left alone because someone changed them since."""
    kept = []
    for rec in reversed(journal.appended):
        path = root / rec["path"]
        now = file_sha256(path)
        if now == rec["after"]:
            write_bytes(path, (root / rec["backup"]).read_bytes())
        elif now != rec["before"]:
            kept.append(rec["path"])
            logger.warning(
                "%s changed after this run appended to it: left as it is (the run's lines may be "
                "in it; its original is kept in %s)",
                rec["path"],
                rec["backup"],
            )
    for rec in reversed(journal.created):
        path = root / rec["path"]
        now = file_sha256(path)
        if now == rec["sha256"]:
            path.unlink()
        elif now is not None:
            kept.append(rec["path"])
            logger.warning("%s changed after this run created it: left as it is", rec["path"])
    return kept


def restore_pipeline_files(root: Path, journal: Journal, logger=log) -> None:
    """Params as they were, git-tracked pipeline files from HEAD (dvc.lock, the raw folder's .dvc
    file, .gitignore files, metrics), the index back to HEAD, pipeline outputs checked out to
    match (`--force` on outputs only: they are not user data)."""
    for name, backup in journal.params.items():
        write_bytes(root / name, (root / backup).read_bytes())
    git(root, "reset", "-q")  # the index was clean when the run started (check_preconditions)
    at_head = [p for p in journal.meta_paths if tracked_at_head(root, p)]
    if journal.raw_in_git:
        # the run may have moved the folder from git to DVC (`git rm --cached`): only the index
        # changed, which the reset above undid; the files themselves are untouched by git
        pass
    if at_head:
        git(root, "checkout", "HEAD", "--", *at_head)
    for p in journal.meta_paths:
        if p not in journal.meta_existed and p not in at_head:
            (root / p).unlink(missing_ok=True)
    targets = [s for s in journal.stages if dvcops.lock_entry(root, s) is not None]
    if targets:
        dvc_cli(root, "checkout", "--force", *targets, logger=logger)


def capture(root: Path, journal: Journal, raw: str, params_files: list[str], target: str | None) -> None:
    """What the pipeline step may change, recorded before it runs."""
    outs = dvcops.git_tracked_outputs(root)
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        out_dirs = {Path(o.fs_path).parent for s in repo.index.stages for o in s.outs}
    gitignores = {
        str((d / ".gitignore").relative_to(root)) for d in out_dirs | {(root / raw).parent} if d.is_relative_to(root)
    }
    meta = sorted({"dvc.lock", f"{raw}.dvc", *outs, *gitignores})
    journal.meta_paths = meta
    journal.meta_existed = [p for p in meta if (root / p).exists()]
    journal.raw = raw
    journal.raw_in_git = bool(git(root, "ls-files", "--", raw).stdout.strip())
    journal.stages = dvcops.stage_order(root, target)
    backups = journal.backups(root)
    backups.mkdir(parents=True, exist_ok=True)
    for name in params_files:
        if (root / name).exists():
            dest = backups / f"params-{name.replace('/', '_')}"
            write_bytes(dest, (root / name).read_bytes())
            journal.params[name] = str(dest.relative_to(root))
    journal.save(root)


def changed_paths(root: Path, journal: Journal) -> list[str]:
    """What the promotion commit stages: present or tracked, and not ignored by git."""
    paths = [p for p in journal.meta_paths if (root / p).exists() or tracked_at_head(root, p)]
    paths += [p for p, backup in journal.params.items() if (root / p).read_bytes() != (root / backup).read_bytes()]
    ignored = set(git(root, "check-ignore", "--", *paths, check=False).stdout.split()) if paths else set()
    return sorted(set(paths) - ignored)


def committed_by(root: Path, journal: Journal) -> str | None:
    """The promotion commit of this journal's run, if it was made (HEAD is a commit of ours on
    top of the run's starting commit, even if the journal did not get to record it)."""
    if journal.commit:
        return journal.commit
    head = git(root, "rev-parse", "HEAD", check=False).stdout.strip()
    if head == journal.head:
        return None
    parent = git(root, "rev-parse", "HEAD~1", check=False).stdout.strip()
    message = git(root, "log", "-1", "--format=%s", check=False).stdout.strip()
    return head if parent == journal.head and message.startswith(PROMOTE_PREFIX) else None


def fault_point(name: str) -> None:
    """Test-only fault injection: with TEXTCLF_FAULT_INJECT=<name>, the process SIGKILLs itself
    here (the crash tests use it to stop the flow at each step). No effect otherwise."""
    if os.environ.get("TEXTCLF_FAULT_INJECT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


def dvc_params_files(overrides: list[str] | None) -> list[str]:
    """The params files `-S FILE:key=value` overrides name (DVC's grammar), which the run captures."""
    if not overrides:
        return []
    from dvc.utils.cli_parse import to_path_overrides

    return list(to_path_overrides(overrides))
