"""New data: files dropped into a landing folder become training data only if they pass the
ingest contract and the retrained model is not worse than the committed one.

    python -m flows.incoming                       # data/incoming → data/raw, gate on test.macro_f1
    python -m flows.incoming --tolerance 0.02 --quarantine data/quarantine

1. Pick up the files in the landing folder (`data/incoming/`; hidden, `*.tmp`, `*.part` and
   files younger than `min_age_s` are left for the next run).
2. Check each one on its own against the ingest contract: the real reader and `ingest()` core on
   a copy, the Documents/Rejected pandera schemas, at most `max_bad_fraction` of its records
   quarantined, no label the corpus does not have (unless `allow_new_labels`). A rejected file is
   moved to the quarantine folder with `<name>.reason.txt` beside it.
3. Add the accepted ones to the raw folder (`ingest.source`, in its own layout: lines appended to
   `<label>.txt`, other files copied in), `dvc add` it, and run the pipeline flow as a subflow.
4. Promotion gate: the new model's `test.macro_f1` against the committed model's, on the same
   documents: the committed test documents (doc_ids keep their split, so those still in the
   corpus are in the new test split too), scored from both models' `reports/predictions.parquet`.
   New documents that hash into test would otherwise make the two scores come from different
   test sets. When that cannot apply (no committed or no renewed predictions, fewer than 30
   documents in common, a metric other than test macro-F1 / accuracy) the gate compares the
   metrics files' values and its reason says why. Not worse by more than `tolerance`:
   commit dvc.lock, the .dvc file, params and DVC's git-tracked outputs (metrics) with a message
   that says why, and `dvc push` when a default remote is configured. Otherwise: restore the
   workspace to the committed state and quarantine the files with the reason.

The whole run holds the repository lock, so it never overlaps a scheduled pipeline run. Nothing
is deleted: a file ends up in the committed raw data, in quarantine, or back in the landing folder
(a transient failure: the next run tries again).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows import dvcops, report
from flows.pipeline import pipeline, resolve_repo, run_logger
from stages.artifacts import write_bytes

LANDING = "data/incoming"
QUARANTINE = "data/quarantine"
METRIC = "test.macro_f1"
SKIP_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload")
GIT_TIMEOUT_S = 120


class GateError(dvcops.PermanentError):
    """The repository is not in a state new data can be promoted from."""


# ---------------------------------------------------------------------------------------------
# git and dvc, as subprocesses with bounded time

def git(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["git", *args], cwd=root, env=dvcops.subprocess_env(), capture_output=True,
                          text=True, timeout=GIT_TIMEOUT_S)
    if check and proc.returncode != 0:
        raise GateError(f"git {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def dvc_cli(root: Path, *args: str, timeout_s: float = 1800) -> list[str]:
    logger = run_logger()

    def log(line: str) -> None:
        if line.strip():
            logger.info("dvc %s | %s", args[0], line)

    rc, lines = dvcops.run_command([sys.executable, "-m", "dvc", *args], root, timeout_s, log)
    if rc != 0:
        raise dvcops.StageError(f"dvc {args[0]}", f"exited with {rc}:\n" + "\n".join(lines[-30:]))
    return lines


def tracked_at_head(root: Path, path: str) -> bool:
    return bool(git(root, "ls-tree", "-r", "--name-only", "HEAD", "--", path, check=False).stdout.strip())


# ---------------------------------------------------------------------------------------------
# the raw corpus and the landing folder

@dataclass(frozen=True)
class RawSpec:
    folder: str  # repo-relative, e.g. data/raw
    format: str  # text_dir | csv | tsv | jsonl | parquet | fasttext


def raw_spec(root: Path) -> RawSpec:
    """Where accepted files go: ingest.source, which must be a folder inside the repository."""
    from stages.params import load_params
    from stages.sources import resolve_format

    params = load_params("ingest", root / "params.yaml")
    src = params.source
    path = (root / src).resolve()
    if not path.is_dir() or not path.is_relative_to(root):
        raise GateError(f"ingest.source is {src!r}: new data needs it to be a folder inside the "
                        "repository (e.g. data/raw), which the incoming flow adds files to")
    fmt = resolve_format(params.model_copy(update={"source": str(path)}))
    return RawSpec(str(path.relative_to(root)), fmt)


def landing_files(folder: Path, min_age_s: float) -> list[Path]:
    """Top-level files and `<label>/` folders in the landing folder that are ready."""
    if not folder.is_dir():
        return []
    now = time.time()
    ready = []
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or p.name.endswith(SKIP_SUFFIXES) or p.name.endswith(".reason.txt"):
            continue
        inside = [q.stat().st_mtime for q in p.rglob("*")] if p.is_dir() else []
        newest = max([p.stat().st_mtime, *inside])
        if now - newest < min_age_s:
            run_logger().info("%s: modified %.0f s ago (< min_age_s %g); next run", p.name, now - newest, min_age_s)
            continue
        ready.append(p)
    return ready


@dataclass
class Verdict:
    file: str
    accepted: bool
    reason: str
    stats: dict = field(default_factory=dict)


def _shape_problem(path: Path, spec: RawSpec, root: Path | None = None) -> str | None:
    from stages.sources import TABULAR_EXT

    if spec.format == "text_dir":
        from stages.sources import SPLIT_DIRS

        if root is not None and (root / spec.folder).is_dir() and any(
                (root / spec.folder / d).is_dir() for d in SPLIT_DIRS):
            return (f"{spec.folder} is split into train/valid/test folders: a top-level `{path.name}` would "
                    f"break that layout; put it under {spec.folder}/train/ (or valid/, test/) yourself")
        if path.is_dir() or path.suffix.lower() == ".txt":
            return None
        return (f"{spec.folder} is a text_dir corpus: send `<label>.txt` (a document per line) or a "
                "`<label>/` folder (a document per file)")
    if path.is_dir():
        return f"{spec.folder} holds {spec.format} files: send files, not folders"
    ok = TABULAR_EXT.get(path.suffix.lower()) == spec.format or (
        spec.format == "fasttext" and path.suffix.lower() in (".txt", ".ft", ".fasttext"))
    return None if ok else f"{spec.folder} holds {spec.format} files; {path.name} is not one"


def check_against_contract(path: Path, root: Path, spec: RawSpec, known_labels: set[str] | None,
                           max_bad_fraction: float, allow_new_labels: bool) -> Verdict:
    """Run the real reader and ingest core on this file alone; accept or say why not."""
    from pandera.errors import SchemaErrors

    from stages import schemas
    from stages.artifacts import InputError
    from stages.ingest import ingest
    from stages.params import load_params
    from stages.sources import read_records

    problem = _shape_problem(path, spec, root)
    if problem:
        return Verdict(path.name, False, problem)
    params = load_params("ingest", root / "params.yaml")
    with tempfile.TemporaryDirectory(prefix="textclf-incoming-") as tmp:
        copy = Path(tmp) / path.name
        (shutil.copytree if path.is_dir() else shutil.copy2)(path, copy)
        try:
            records = read_records(params.model_copy(update={"source": str(tmp), "format": spec.format}))
            result = ingest(records, params)
            schemas.Documents.validate(result.documents, lazy=True)
            schemas.Rejected.validate(result.rejected, lazy=True)
        except InputError as err:
            return Verdict(path.name, False, f"cannot be read as {spec.format}: {err}".replace(tmp, "<file>"))
        except SchemaErrors as err:
            cases = err.failure_cases.groupby(["column", "check"], dropna=False).size()
            summary = "; ".join(f"column {c}: {chk} failed for {n} value(s)" for (c, chk), n in cases.items())
            return Verdict(path.name, False, f"violates the ingest contract: {summary}")
    s = result.stats
    reasons = {k: v for k, v in s["by_reason"].items() if v}
    stats = {"read": s["read"], "kept": s["kept"], "duplicates": s["duplicates"],
             "quarantined": s["quarantined"], "by_reason": reasons, "labels": s["by_label"]}
    if s["read"] == 0 or s["kept"] == 0:
        why = "empty" if s["read"] == 0 else f"no usable documents in {s['read']} record(s) ({reasons})"
        return Verdict(path.name, False, why, stats)
    bad = s["quarantined"] / s["read"]
    if bad > max_bad_fraction:
        return Verdict(path.name, False, f"{s['quarantined']} of {s['read']} records ({bad:.0%}) would be "
                       f"quarantined, more than max_bad_fraction {max_bad_fraction:.0%}: {reasons}", stats)
    new = sorted(set(s["by_label"]) - known_labels) if known_labels else []
    if new and not allow_new_labels:
        return Verdict(path.name, False, f"label(s) {new} not in the corpus (known: {sorted(known_labels)}); "
                       "set allow_new_labels to add classes", stats)
    return Verdict(path.name, True, f"{s['kept']} document(s) of {s['read']} record(s)", stats)


def known_labels(root: Path) -> set[str] | None:
    """Labels of the current corpus, from ingest's report (None before the first run)."""
    stats = report.read_metrics(root, "reports/data/ingest.json")
    labels = (stats or {}).get("by_label")
    return set(labels) if isinstance(labels, dict) and labels else None


# ---------------------------------------------------------------------------------------------
# moving files: never deleting them

def unique_path(path: Path) -> Path:
    if not path.exists() and not path.is_symlink():
        return path
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    for i in range(1000):
        candidate = path.with_name(f"{path.stem}-{stamp}{f'-{i}' if i else ''}{path.suffix}")
        if not candidate.exists():
            return candidate
    raise GateError(f"{path}: no free name")


def quarantine(path: Path, folder: Path, reason: str) -> Path:
    """Move `path` into the quarantine folder, with `<name>.reason.txt` beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    dest = unique_path(folder / path.name)
    shutil.move(str(path), dest)
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    (dest.parent / f"{dest.name}.reason.txt").write_text(
        f"file: {path.name}\nquarantined: {stamp} by the textclf incoming flow\nreason: {reason}\n",
        encoding="utf-8")
    run_logger().warning("%s quarantined as %s: %s", path.name, dest, reason)
    return dest


def _strip_bom(data: bytes) -> bytes:
    return data[3:] if data.startswith(b"\xef\xbb\xbf") else data


def _reencode(data: bytes, like: bytes) -> bytes:
    """New lines in the encoding of the file they are appended to (UTF-8 unless it is GB18030)."""
    from stages.text import decode

    text = decode(data)
    if text is None:
        return data
    try:
        like.decode("utf-8-sig")
        return text.encode("utf-8")
    except UnicodeDecodeError:
        return text.encode("gb18030") if decode(like, "gb18030") is not None else text.encode("utf-8")


def place(path: Path, raw: Path, spec: RawSpec, backups: dict[str, bytes] | None = None) -> list[str]:
    """Add an accepted file to the raw folder in its layout; returns the raw paths created.
    The original bytes of a raw file it appends to go into `backups` (for `restore`).

    Files are written to a temp name and renamed into place, never modified in place, so a DVC
    cache linked to the workspace (hardlink/symlink cache types) is never touched.
    """
    created: list[str] = []
    if spec.format == "text_dir" and path.is_file():
        target = raw / path.name
        new = _strip_bom(path.read_bytes())
        if target.exists():
            old = target.read_bytes()
            if backups is not None:
                backups.setdefault(str(target), old)
            new = _reencode(new, old)
            data = old + (b"\n" if old and not old.endswith(b"\n") else b"") + new
        else:
            data, created = new, [str(target)]
        write_bytes(target, data if data.endswith(b"\n") or not data else data + b"\n")
        return created
    if path.is_dir():
        dest_dir = raw / path.name
        for src in sorted(p for p in path.rglob("*") if p.is_file()):
            dest = unique_path(dest_dir / src.relative_to(path))
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest)
            created.append(str(dest))
        return created
    dest = unique_path(raw / path.name)
    shutil.copy2(path, dest)
    return [str(dest)]


def remove_landed(path: Path) -> None:
    """After promotion the file's content is committed in the raw data: the move is complete."""
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()


# ---------------------------------------------------------------------------------------------
# the gate

@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str
    committed: float | None
    new: float | None
    documents: int | None = None  # how many committed test documents both were scored on (None: metrics files)


def gate(committed: dict | None, current: dict | None, metric: str, tolerance: float) -> Decision:
    old, new = report.metric_value(committed, metric), report.metric_value(current, metric)
    if new is None and old is None:
        return Decision(True, f"no {metric} before or after (the pipeline has no evaluate stage yet): "
                              "promoted on the data contracts alone", old, new)
    if new is None:
        return Decision(False, f"{metric} missing after the run (committed: {old:.4f})", old, new)
    if old is None:
        return Decision(True, f"{metric} {new:.4f}; no committed value to compare with", old, new)
    if new >= old - tolerance:
        return Decision(True, f"{metric} {old:.4f} → {new:.4f} ({new - old:+.4f}), within tolerance "
                              f"{tolerance:g}", old, new)
    return Decision(False, f"{metric} {old:.4f} → {new:.4f} ({new - old:+.4f}) is worse than the "
                           f"committed model by more than tolerance {tolerance:g}", old, new)


SAME_DOCUMENT_METRICS = {"test.macro_f1", "test.accuracy"}


MIN_SAME_DOCUMENTS = 30


def gate_same_documents(committed, current, metric: str, tolerance: float,
                        min_documents: int = MIN_SAME_DOCUMENTS) -> Decision | str:
    """The gate on the committed test documents: both models' predictions for exactly those
    documents (truth from the new run). When it cannot apply, the reason why (a string): a metric
    it does not compute, no predictions on either side, predictions the run did not renew (its
    target did not rerun the stage that writes them), or fewer than `min_documents` in common."""
    if metric not in SAME_DOCUMENT_METRICS:
        return f"it computes only {sorted(SAME_DOCUMENT_METRICS)}"
    if committed is None or current is None:
        return f"no {'committed' if committed is None else 'new'} test predictions"
    key = ["doc_id", "label", "predicted"]
    if committed[key].sort_values("doc_id", ignore_index=True).equals(current[key].sort_values("doc_id", ignore_index=True)):
        return "the run did not produce new test predictions"
    both = current.merge(committed[["doc_id", "predicted"]], on="doc_id", suffixes=("", "_committed"))
    if len(both) < min_documents:
        return f"only {len(both)} committed test documents are in the new test split (< {min_documents})"
    old, new = (_score(both["label"], both[col], metric) for col in ("predicted_committed", "predicted"))
    where = f"on the {len(both)} committed test documents"
    if new >= old - tolerance:
        return Decision(True, f"{metric} {where}: {old:.4f} → {new:.4f} ({new - old:+.4f}), within "
                              f"tolerance {tolerance:g}", old, new, len(both))
    return Decision(False, f"{metric} {where}: {old:.4f} → {new:.4f} ({new - old:+.4f}) is worse than "
                           f"the committed model by more than tolerance {tolerance:g}", old, new, len(both))


def _score(truth, predicted, metric: str) -> float:
    """Accuracy, or macro-F1 over the classes that are true of these documents: a class only the
    new model knows (new data may add one) can only count as that model's errors — it is not
    averaged in as an F1 of 0 that the committed model, never predicting it, escapes."""
    from sklearn.metrics import accuracy_score, f1_score

    y, p = truth.astype(str).to_numpy(), predicted.astype(str).to_numpy()
    if metric == "test.accuracy":
        return float(accuracy_score(y, p))
    return float(f1_score(y, p, average="macro", labels=sorted(set(y)), zero_division=0))


def decide(committed_preds, current_preds, committed: dict | None, current: dict | None, metric: str,
           tolerance: float) -> Decision:
    """The same-documents gate when it applies; else the metrics files' values, saying why."""
    same = gate_same_documents(committed_preds, current_preds, metric, tolerance)
    if isinstance(same, Decision):
        return same
    d = gate(committed, current, metric, tolerance)
    return Decision(d.promote, f"{d.reason} (metrics files compared; not on the same documents: {same})",
                    d.committed, d.new)


# ---------------------------------------------------------------------------------------------
# workspace bookkeeping: what to commit, what to restore

@dataclass
class Workspace:
    """What the run may change, captured before it changes anything."""

    root: Path
    raw: str
    params_bytes: dict[str, bytes]
    meta_paths: list[str]  # dvc.lock, <raw>.dvc, .gitignore files, git-tracked outputs
    existed: set[str]
    raw_in_git: bool
    stages: list[str]  # the stages the run may change (its target and what that depends on)
    created: list[str] = field(default_factory=list)
    backups: dict[str, bytes] = field(default_factory=dict)  # raw files appended to: original bytes

    @classmethod
    def capture(cls, root: Path, raw: str, params_files: list[str], target: str | None) -> Workspace:
        if git(root, "rev-parse", "--verify", "-q", "HEAD", check=False).returncode != 0:
            raise GateError(f"{root} has no git commit to compare with or promote onto")
        if git(root, "diff", "--cached", "--quiet", check=False).returncode != 0:
            raise GateError("the git index has staged changes; commit or unstage them first "
                            "(the promotion commit must contain only the pipeline's files)")
        outs = dvcops.git_tracked_outputs(root)
        from dvc.repo import Repo

        with Repo(str(root)) as repo:
            out_dirs = {Path(o.fs_path).parent for s in repo.index.stages for o in s.outs}
        gitignores = {str((d / ".gitignore").relative_to(root)) for d in out_dirs | {(root / raw).parent}}
        meta = sorted({"dvc.lock", f"{raw}.dvc", *outs, *gitignores})
        return cls(root=root, raw=raw,
                   params_bytes={p: (root / p).read_bytes() for p in params_files if (root / p).exists()},
                   meta_paths=meta, existed={p for p in meta if (root / p).exists()},
                   raw_in_git=bool(git(root, "ls-files", "--", raw).stdout.strip()),
                   stages=dvcops.stage_order(root, target))

    def changed_paths(self) -> list[str]:
        """What the promotion commit stages: present or tracked, and not ignored by git."""
        paths = [p for p in self.meta_paths if (self.root / p).exists() or tracked_at_head(self.root, p)]
        paths += [p for p, data in self.params_bytes.items() if (self.root / p).read_bytes() != data]
        ignored = set(git(self.root, "check-ignore", "--", *paths, check=False).stdout.split()) if paths else set()
        return sorted(set(paths) - ignored)


@task(name="dvc-add", cache_policy=NO_CACHE, persist_result=False)
def track_raw(repo: str, raw: str, raw_in_git: bool) -> None:
    """`dvc add` the raw folder (first moving it from git to DVC if git tracked it)."""
    root = Path(repo)
    if raw_in_git:
        run_logger().info("%s was tracked by git; moving it to DVC (git rm -r --cached)", raw)
        git(root, "rm", "-r", "-q", "--cached", "--", raw)
    dvc_cli(root, "add", raw)


@task(name="promote", cache_policy=NO_CACHE, persist_result=False)
def commit(repo: str, paths: list[str], message: str) -> str:
    root = Path(repo)
    git(root, "add", "-A", "--", *paths)
    git(root, "commit", "-q", "-m", message)
    sha = git(root, "rev-parse", "--short", "HEAD").stdout.strip()
    run_logger().info("committed %s: %s", sha, message.splitlines()[0])
    return sha


@task(name="dvc-push", cache_policy=NO_CACHE, persist_result=False, retries=2, retry_delay_seconds=[5, 20])
def push(repo: str) -> str | None:
    """`dvc push` to the default remote, if one is configured; returns its name."""
    root = Path(repo)
    remote = subprocess.run([sys.executable, "-m", "dvc", "config", "core.remote"], cwd=root,
                            env=dvcops.subprocess_env(), capture_output=True, text=True, timeout=60).stdout.strip()
    if not remote:
        run_logger().info("no default DVC remote: nothing pushed")
        return None
    dvc_cli(root, "push")
    return remote


@task(name="restore", cache_policy=NO_CACHE, persist_result=False)
def restore(ws: Workspace) -> None:
    """Back to the committed state: metadata from HEAD, params as they were, DVC outputs checked
    out to match; files this run created in the raw folder removed (their originals are kept)."""
    root = ws.root
    for name, data in ws.params_bytes.items():
        write_bytes(root / name, data)
    git(root, "reset", "-q")  # the index was clean when the run started (Workspace.capture)
    at_head = [p for p in ws.meta_paths + ([ws.raw] if ws.raw_in_git else []) if tracked_at_head(root, p)]
    if at_head:
        git(root, "checkout", "HEAD", "--", *at_head)
    for p in ws.meta_paths:
        if p not in ws.existed and p not in at_head:
            (root / p).unlink(missing_ok=True)
    for p in ws.created:
        Path(p).unlink(missing_ok=True)
    for p, data in ws.backups.items():  # raw files this run appended to (also when DVC does not track them)
        write_bytes(Path(p), data)
    # Only what this run could have changed, and only what the committed dvc.lock knows: a stage
    # outside the target that never ran has no hashes to check out.
    targets = [s for s in ws.stages if dvcops.lock_entry(root, s) is not None]
    if (root / f"{ws.raw}.dvc").exists():
        targets.append(f"{ws.raw}.dvc")
    if targets:
        dvc_cli(root, "checkout", "--force", *targets)
    run_logger().info("workspace restored to %s", report.head_commit(root))


# ---------------------------------------------------------------------------------------------
# the flow

@flow(name="textclf-incoming")
def incoming(repo: str = ".", landing: str = LANDING, quarantine_dir: str = QUARANTINE,
             metric: str = METRIC, metrics_file: str = report.METRICS_FILE, tolerance: float = 0.01,
             predictions_file: str = report.PREDICTIONS_FILE,
             target: str | None = None, params: list[str] | None = None, min_age_s: float = 5.0,
             max_bad_fraction: float = 0.2, allow_new_labels: bool = False, push_remote: bool = True,
             retries: int = 2, retry_delay_s: float = 10.0, lock_timeout_s: float = 600.0) -> dict:
    """Check new files, add the good ones, retrain, promote if not worse (see module docstring).

    Args:
        landing: folder new files are dropped into (repo-relative).
        quarantine_dir: where rejected files go, each with a `.reason.txt`.
        metric: dotted key in the metrics file the gate compares.
        tolerance: the new score may be at most this much below the committed one.
        predictions_file: the test predictions (doc_id, label, predicted) the gate scores both
            models from, on the committed test documents.
        target: pipeline target (default: all stages).
        params: params overrides for the retraining, committed with it if promoted.
        min_age_s: leave files modified more recently than this (still being copied).
        max_bad_fraction: reject a file when more of its records would be quarantined.
        allow_new_labels: accept files that introduce labels the corpus does not have.
        push_remote: `dvc push` after promotion when a default remote is configured.
    """
    logger = run_logger()
    root = resolve_repo(repo)
    landing_dir, quarantine_path = root / landing, root / quarantine_dir
    outcome: dict = {"accepted": [], "rejected": [], "promoted": False, "commit": None,
                     "pushed_to": None, "decision": None}
    with dvcops.repo_lock(root, lock_timeout_s, what="incoming flow"):
        files = landing_files(landing_dir, min_age_s)
        if not files:
            logger.info("no new files in %s", landing_dir)
            return outcome
        spec = raw_spec(root)
        labels = known_labels(root)
        verdicts = {}
        for path in files:
            v = check_file.with_options(task_run_name=f"check-{path.name}")(
                str(path), str(root), spec, labels, max_bad_fraction, allow_new_labels)
            verdicts[path] = v
            if not v.accepted:
                quarantine(path, quarantine_path, v.reason)
        outcome["rejected"] = [asdict(v) for v in verdicts.values() if not v.accepted]
        accepted = [p for p, v in verdicts.items() if v.accepted]
        outcome["accepted"] = [asdict(verdicts[p]) for p in accepted]
        if not accepted:
            _publish(outcome)
            return outcome

        params_files = sorted({"params.yaml", *dvc_params_files(params)})
        ws = Workspace.capture(root, spec.folder, params_files, target)
        committed = report.committed_metrics(root, metrics_file)
        committed_preds = report.committed_predictions(root, predictions_file)
        try:
            for path in accepted:
                ws.created += place(path, root / spec.folder, spec, ws.backups)
            track_raw(str(root), spec.folder, ws.raw_in_git)
            pipeline(target=target, params=params, keep_params=True, repo=str(root), retries=retries,
                     retry_delay_s=retry_delay_s, lock_timeout_s=lock_timeout_s, metrics_file=metrics_file)
        except dvcops.ContractViolation as err:  # the new data broke a stage's contract
            restore(ws)
            for path in accepted:
                quarantine(path, quarantine_path, f"the pipeline failed on the new data: {err}")
            outcome["decision"] = {"promote": False, "reason": f"pipeline failed: {err}"}
            _publish(outcome)
            raise
        except BaseException:  # not the data's fault (or not known to be): try again next run
            restore(ws)
            logger.warning("left %s in %s for the next run", [p.name for p in accepted], landing_dir)
            raise
        decision = decide(committed_preds, report.read_predictions(root, predictions_file), committed,
                          report.read_metrics(root, metrics_file), metric, tolerance)
        outcome["decision"] = asdict(decision)
        if decision.promote:
            names = ", ".join(p.name for p in accepted)
            message = (f"textclf: promote new data ({names})\n\n{decision.reason}\n"
                       + "".join(f"- {v['file']}: {v['reason']}\n" for v in outcome["accepted"])
                       + (f"params overrides: {', '.join(params)}\n" if params else ""))
            outcome["commit"] = commit(str(root), ws.changed_paths(), message)
            outcome["promoted"] = True
            for path in accepted:
                remove_landed(path)
            if push_remote:
                outcome["pushed_to"] = push(str(root))
        else:
            logger.warning("not promoted: %s", decision.reason)
            restore(ws)
            for path in accepted:
                quarantine(path, quarantine_path, f"promotion gate: {decision.reason}")
        _publish(outcome)
    return outcome


@task(name="check-file", cache_policy=NO_CACHE, persist_result=False)
def check_file(path: str, repo: str, spec: RawSpec, labels: set[str] | None, max_bad_fraction: float,
               allow_new_labels: bool) -> Verdict:
    v = check_against_contract(Path(path), Path(repo), spec, labels, max_bad_fraction, allow_new_labels)
    run_logger().info("%s: %s (%s)", v.file, "accepted" if v.accepted else "rejected", v.reason)
    return v


def dvc_params_files(overrides: list[str] | None) -> list[str]:
    if not overrides:
        return []
    from dvc.utils.cli_parse import to_path_overrides

    return list(to_path_overrides(overrides))


def _publish(outcome: dict) -> None:
    from prefect.artifacts import create_markdown_artifact

    lines = ["# textclf new data", ""]
    if outcome["accepted"]:
        lines += ["## Accepted", ""] + [f"- `{v['file']}`: {v['reason']}" for v in outcome["accepted"]]
    if outcome["rejected"]:
        lines += ["", "## Rejected (quarantined)", ""] + [f"- `{v['file']}`: {v['reason']}" for v in outcome["rejected"]]
    lines += ["", "## Promotion", ""]
    d = outcome.get("decision")
    if outcome["promoted"]:
        lines.append(f"Promoted in commit `{outcome['commit']}`: {d['reason']}.")
        lines.append(f"Pushed to DVC remote `{outcome['pushed_to']}`." if outcome["pushed_to"]
                     else "No DVC remote configured: nothing pushed.")
    elif d:
        lines.append(f"**Not promoted** — {d['reason']}. Nothing was committed; the workspace was "
                     "restored to the last commit and the files were quarantined.")
    else:
        lines.append("Nothing to promote: no file passed the checks.")
    try:
        create_markdown_artifact("\n".join(lines) + "\n", key="textclf-incoming",
                                 description="new data: checks and promotion gate")
    except Exception as err:  # noqa: BLE001 - the outcome is already logged
        run_logger().warning("could not create the incoming artifact: %s", err)


# ---------------------------------------------------------------------------------------------
# command line

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m flows.incoming", description=__doc__.split("\n\n")[0])
    p.add_argument("--repo", default=".", help="project root (default: .)")
    p.add_argument("--landing", default=LANDING, help=f"folder new files are dropped into ({LANDING})")
    p.add_argument("--quarantine", default=QUARANTINE, help=f"where rejected files go ({QUARANTINE})")
    p.add_argument("--metric", default=METRIC, help=f"metric the gate compares ({METRIC})")
    p.add_argument("--metrics-file", default=report.METRICS_FILE)
    p.add_argument("--predictions-file", default=report.PREDICTIONS_FILE,
                   help="test predictions the gate scores both models from, on the committed test documents")
    p.add_argument("--tolerance", type=float, default=0.01,
                   help="how much worse than the committed metric is still promoted (0.01)")
    p.add_argument("--target", help="pipeline target stage (default: all)")
    p.add_argument("-S", "--set-param", dest="params", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="params override for the retraining, committed if promoted")
    p.add_argument("--min-age", type=float, default=5.0, help="skip files modified in the last N seconds")
    p.add_argument("--max-bad-fraction", type=float, default=0.2,
                   help="reject a file if more of its records would be quarantined (0.2)")
    p.add_argument("--allow-new-labels", action="store_true", help="accept files that add classes")
    p.add_argument("--no-push", action="store_true", help="do not dvc push after promotion")
    p.add_argument("--lock-timeout", type=float, default=600.0,
                   help="seconds to wait for another run on this repository (600)")
    args = p.parse_args(argv)
    try:
        out = incoming(repo=args.repo, landing=args.landing, quarantine_dir=args.quarantine,
                       metric=args.metric, metrics_file=args.metrics_file, tolerance=args.tolerance,
                       predictions_file=args.predictions_file, target=args.target, params=args.params or None,
                       min_age_s=args.min_age,
                       max_bad_fraction=args.max_bad_fraction, allow_new_labels=args.allow_new_labels,
                       push_remote=not args.no_push, lock_timeout_s=args.lock_timeout)
    except (dvcops.PermanentError, dvcops.StageError) as err:
        print(f"incoming failed: {err}", file=sys.stderr)
        return 1
    for v in out["accepted"]:
        print(f"accepted {v['file']}: {v['reason']}")
    for v in out["rejected"]:
        print(f"rejected {v['file']}: {v['reason']}")
    if out["decision"]:
        print(("promoted" if out["promoted"] else "not promoted") + f": {out['decision']['reason']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
