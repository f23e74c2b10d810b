"""DVC as the flows see it: the stage graph, one stage through `dvc repro`, params overrides,
and the repository lock.

(Named dvcops, not dvc: Prefect puts a flow file's folder first on sys.path when it loads a
deployment by file path, so a flows/dvc.py would shadow the `dvc` package itself.)

- The graph is read from dvc.yaml at run time through DVC's own index (`Repo.index.graph`), so a
  stage added to dvc.yaml becomes a task without touching Python, and the order is exactly the
  one `dvc repro` would use.
- A stage runs as `python -m dvc repro --single-item <stage>` in a subprocess: DVC decides
  whether it changed, updates dvc.lock and the cache, and the stage's own output streams into the
  flow log. A subprocess (not DVC's Python API) because the output can then be captured per stage,
  a timeout can kill the stage's whole process group, and a crash cannot take the flow with it.
- Failures are classified by the stage's exit code (textclf.errors) so the flow knows what to
  retry: bad params, a broken data contract, unreadable input and internal bugs are permanent;
  anything else (a killed process, DVC's own lock held by a user's terminal, a full disk) is
  worth another try.
- Overrides use DVC's own `--set-param` machinery (Hydra override grammar applied to
  params.yaml), and are undone afterwards unless asked to keep them.
- One file lock per repository (.dvc/tmp/textclf-pipeline.lock) is held around every DVC call
  of a run: a second run waits a bounded time, then fails with a message naming the holder.
"""

from __future__ import annotations

import base64
import contextvars
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from textclf import paths
from textclf.artifacts import write_bytes
from textclf.errors import (
    BAD_INPUT,
    BAD_PARAMS,
    CONTRACT,
    INTERNAL,
    USAGE,
    ContractError,
    InputError,
    ParamsError,
    RunError,
    StageError,
    TextclfError,
)
from textclf.params import parse_section, read_params_file

log = logging.getLogger("textclf.flows")

# Where textclf.schemas.validate writes failure cases (stages/schemas.py VALIDATION_DIR). Not
# imported: that would load pandas and pandera into every flow process just for a path.
VALIDATION_DIR = paths.VALIDATION_DIR
PARAMS_FILE = "params.yaml"

# What `dvc repro` prints for each stage (dvc/stage/__init__.py, run.py, cache.py).
_RAN = re.compile(r"^Running stage '(?P<stage>[^']+)'")
_SKIPPED = re.compile(r"^Stage '(?P<stage>[^']+)' didn't change, skipping")
_RESTORED = re.compile(r"^Stage '(?P<stage>[^']+)' is cached - skipping run")
# DVC's report of a failed stage command (dvc/stage/exceptions.py StageCmdFailedError): the code is
# the stage's own exit code (textclf.errors). DVC itself fails a stage whose params are missing
# from the file before running it; run_main logs ParamsError as "<stage>: params.yaml: <key>: <why>".
_EXITED = re.compile(r"failed to run: .*, exited with (-?\d+)")
_PARAMS_ERROR = re.compile(r"params\.yaml: [\w.-]+|Parameters? .* (?:is|are) missing from")


# ---------------------------------------------------------------------------------------------
# errors: textclf.errors; a flow retries only what `is_retryable` says


# ---------------------------------------------------------------------------------------------
# the stage graph


def stage_order(root: Path, target: str | None = None) -> list[str]:
    """The pipeline stages in dependency order, read from the dvc.yaml files under `root`.

    With a target: that stage and everything it depends on (what `dvc repro <target>` would run).
    Ties keep dvc.yaml's declaration order, so the order is stable run to run.
    """
    import networkx as nx
    from dvc.repo import Repo
    from dvc.stage import PipelineStage

    with Repo(str(root)) as repo:
        graph = repo.index.graph  # an edge points from a stage to a stage it depends on

        def name(stage) -> str:  # what `dvc repro` takes when run from the repository root
            rel = os.path.relpath(stage.path, repo.root_dir)
            return stage.name if rel == "dvc.yaml" else f"{rel}:{stage.name}"

        declared = {id(stage): i for i, stage in enumerate(repo.index.stages)}
        by_name = {name(s): s for s in graph.nodes if isinstance(s, PipelineStage)}
        if target is not None:
            if target not in by_name:
                known = ", ".join(sorted(by_name, key=lambda n: declared.get(id(by_name[n]), 0)))
                raise ParamsError(f"target: no stage {target!r} in dvc.yaml (stages: {known or 'none'})")
            graph = graph.subgraph({by_name[target], *nx.descendants(graph, by_name[target])})
        order = nx.lexicographical_topological_sort(graph.reverse(copy=False), key=lambda s: declared.get(id(s), 0))
        return [name(s) for s in order if isinstance(s, PipelineStage)]


def git_tracked_outputs(root: Path) -> list[str]:
    """Outputs DVC leaves to git (`cache: false`: metrics, plots, small reports), repo-relative.
    `persist` outputs (a training checkpoint) are working state, not results: left out."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        return sorted(
            {
                os.path.relpath(out.fs_path, repo.root_dir)
                for stage in repo.index.stages
                for out in stage.outs
                if not out.use_cache and not out.persist
            }
        )


def lock_entry(root: Path, stage: str) -> dict | None:
    """The stage's entry in dvc.lock (None before its first run)."""

    path = root / "dvc.lock"
    if not path.exists():
        return None
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return (data.get("stages") or {}).get(stage)


# ---------------------------------------------------------------------------------------------
# running one stage


@dataclass(frozen=True)
class StageRun:
    stage: str
    status: str  # ran | skipped | restored (from DVC's run cache)
    seconds: float

    def as_dict(self) -> dict:
        return asdict(self)


def subprocess_env() -> dict[str, str]:
    """This interpreter's bin first on PATH (a stage's `python` is the flow's `python`, venv
    activated or not); no DVC analytics."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["DVC_NO_ANALYTICS"] = "1"
    return env


def context_thread(target: Callable[..., object], *args: object, name: str) -> threading.Thread:
    """A daemon thread that runs `target` in a copy of the caller's context (Prefect's settings
    and run): without it, Prefect code in the thread would not see the API URL of this run and
    would start a temporary server of its own (seconds, on every run)."""
    return threading.Thread(target=contextvars.copy_context().run, args=(target, *args), name=name, daemon=True)


def run_command(
    cmd: list[str],
    cwd: Path,
    timeout_s: float | None = None,
    on_line: Callable[[str], None] | None = None,
) -> tuple[int, list[str]]:
    """Run `cmd`, stream its merged stdout/stderr line by line, return (exit code, last lines).

    The process gets its own session, so a timeout or an interrupted flow kills the whole group
    (a stage's children included) instead of leaving it running against the workspace.
    """
    tail: deque[str] = deque(maxlen=400)
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        encoding="utf-8",
        errors="replace",
        bufsize=1,
        start_new_session=True,
    )

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\r\n")
            tail.append(line)
            if on_line is not None:
                on_line(line)

    reader = context_thread(pump, name="textclf-output")
    reader.start()
    try:
        rc = proc.wait(timeout=timeout_s)
    except BaseException:  # timeout, KeyboardInterrupt, a cancelled flow run
        kill_group(proc)
        raise
    finally:
        reader.join(timeout=10)
    return rc, list(tail)


def kill_group(proc: subprocess.Popen, grace_s: float = 5.0) -> None:
    """SIGTERM the process group, SIGKILL what is left after `grace_s`."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace_s)
            return
        except subprocess.TimeoutExpired:
            continue


def changed_stages(root: Path, target: str | None = None, timeout_s: float = 300) -> set[str] | None:
    """The stages `dvc status` says are not current (one DVC process for the whole pipeline), or
    None when it cannot tell (then every stage goes through `dvc repro --single-item`)."""
    # with a target, only --with-deps reports the stages it depends on
    cmd = [
        sys.executable,
        "-m",
        "dvc",
        "status",
        "--json",
        *(["--with-deps", target] if target else []),
    ]
    try:
        rc, lines = run_command(cmd, root, timeout_s)
    except subprocess.TimeoutExpired:
        return None
    text = "\n".join(lines).strip()
    if rc != 0 or "{" not in text:
        return None
    try:
        status = json.loads(text[text.index("{") :])
    except ValueError:
        return None
    return {name.rsplit(":", 1)[-1] for name in status} if isinstance(status, dict) else None


EXPERIMENT_MODES = ("overrides", "always", "never")


def experiment_name(run_name: str, run_id: str) -> str:
    """A DVC experiment name (a valid git ref component) from the Prefect run's name and id:
    "pipeline all -S train.lr=0.01" + "3fa2…" -> "pipeline-all-S-train.lr-0.01-3fa2b1c0"."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", run_name).strip("-.")
    slug = re.sub(r"-{2,}", "-", re.sub(r"\.{2,}", ".", slug))[:60].rstrip("-.") or "flow-run"
    short = re.sub(r"[^0-9a-f]", "", run_id.lower())[:8] or "0" * 8
    return f"{slug}-{short}"


def save_experiment(
    root: Path, name: str, message: str, stages: list[str] | None = None, timeout_s: float = 300
) -> str:
    """`dvc exp save -n NAME -m MESSAGE --force [STAGES]`: the workspace as it is now (params with
    the run's overrides, dvc.lock, metrics) becomes a DVC experiment; the workspace is not
    touched. `stages`: the run's stages, so that a run with a target does not need the outputs of
    stages it never ran. Returns the experiment name; raises RunError if DVC refuses."""
    cmd = [sys.executable, "-m", "dvc", "exp", "save", "--force", "-n", name, "-m", message, *(stages or [])]
    rc, lines = run_command(cmd, root, timeout_s)
    if rc != 0:
        raise RunError(f"dvc exp save failed ({rc}): " + " ".join(lines[-5:]))
    return name


def repro_stage(
    root: Path,
    stage: str,
    force: bool = False,
    timeout_s: float | None = None,
    on_line: Callable[[str], None] | None = None,
) -> StageRun:
    """`dvc repro --single-item <stage>`: run it if DVC says it changed (or `force`)."""
    cmd = [sys.executable, "-m", "dvc", "repro", "--single-item", stage]
    if force:
        cmd.append("--force")
    before = lock_entry(root, stage)
    started = time.time()
    try:
        rc, lines = run_command(cmd, root, timeout_s, on_line)
    except subprocess.TimeoutExpired:
        raise StageError(stage, f"timed out after {timeout_s:g} s (stage_timeout_s); killed") from None
    seconds = time.time() - started
    if rc != 0:
        raise classify_failure(root, stage, rc, lines)
    return StageRun(stage, parse_status(stage, lines, before, lock_entry(root, stage)), seconds)


def parse_status(stage: str, lines: list[str], before: dict | None, after: dict | None) -> str:
    for line in lines:
        for pattern, status in ((_RAN, "ran"), (_RESTORED, "restored"), (_SKIPPED, "skipped")):
            m = pattern.match(line.strip())
            if m and m["stage"] == stage:
                return status
    # DVC's wording changed: fall back on whether the stage's dvc.lock entry did
    return "skipped" if before == after else "ran"


def classify_failure(root: Path, stage: str, rc: int, lines: list[str]) -> Exception:
    """A failed `dvc repro` as the exception its stage's exit code stands for (textclf.errors).

    DVC reports a failed command as "failed to run: <cmd>, exited with <code>"; the stage chose
    the code. Params DVC itself finds missing (before running anything) are bad params too; any
    other failure (a signal, DVC's own lock, a full disk) is a retryable StageError."""
    codes = [int(m.group(1)) for line in lines if (m := _EXITED.search(line))]
    code = codes[-1] if codes else None
    errors = [_strip_log_prefix(ln) for ln in lines if " ERROR " in ln or ln.startswith("ERROR")]
    detail = "\n".join(errors[-10:]) or "\n".join(lines[-40:])
    if code == CONTRACT:
        report = root / VALIDATION_DIR / f"{stage}.json"
        try:
            data = json.loads(report.read_text(encoding="utf-8"))
            summary = "\n".join(data.get("summary") or []) or "(no summary in the report)"
            return ContractError(data.get("stage") or stage, summary, report.relative_to(root))
        except (OSError, ValueError):
            return ContractError(stage, detail, None)
    if code == BAD_PARAMS or (code is None and any(_PARAMS_ERROR.search(ln) for ln in lines)):
        params_lines = [_strip_log_prefix(ln) for ln in lines if _PARAMS_ERROR.search(ln)] or errors
        return ParamsError(f"{stage}: invalid params:\n" + "\n".join(params_lines))
    if code == BAD_INPUT:
        return InputError(f"{stage}: unreadable input:\n{detail}")
    if code in (INTERNAL, USAGE):
        kind = "internal error (a bug" if code == INTERNAL else "usage error (the stage's command line"
        return TextclfError(f"{stage}: {kind}, exit {code}: not retried):\n" + "\n".join(lines[-40:]))
    by = f" (the stage with {code})" if code is not None else ""
    return StageError(stage, f"`dvc repro` exited with {rc}{by}:\n" + "\n".join(lines[-40:]))


def _strip_log_prefix(line: str) -> str:
    # "2026-01-01 10:00:00,000 ERROR textclf: vocab: params.yaml: ..." → "vocab: params.yaml: ..."
    m = re.search(r"(?:ERROR|WARNING|INFO) [\w.]+: (.*)$", line)
    return (m.group(1) if m else line).strip()


# ---------------------------------------------------------------------------------------------
# params overrides


def check_overrides(overrides: list[str]) -> None:
    for item in overrides:
        if "=" not in item and not item.rpartition(":")[2].startswith("~"):
            raise ParamsError(
                f"params override {item!r}: expected section.key=value (the `dvc exp run --set-param` syntax)"
            )


# The only file a params override may change. Flow parameters are untrusted input (anyone who
# reaches the Prefect API can start a run): DVC's own grammar, FILE:key=value, would let an
# override rewrite any file — dvc.yaml's stage commands included — so everything else is refused
# before any file is touched.
OVERRIDABLE = (PARAMS_FILE,)


def check_override_files(root: Path, by_file: dict) -> None:
    for name in by_file:
        if Path(name).as_posix() not in OVERRIDABLE or not (root / name).resolve().is_relative_to(root.resolve()):
            raise ParamsError(
                f"params override: {name} is not a params file this project lets a run change "
                f"(only {', '.join(OVERRIDABLE)}; write section.key=value without a file name)"
            )


def check_override_targets(root: Path, overrides: list[str] | None) -> None:
    """The overrides' syntax, and that they change params.yaml only (no file is touched)."""
    if not overrides:
        return
    from dvc.utils.cli_parse import to_path_overrides

    check_overrides(overrides)
    check_override_files(root, to_path_overrides(overrides))


def inside_repo(root: Path, value: str, what: str) -> Path:
    """`value` (repo-relative or absolute) resolved, if it lies inside the repository `root`;
    otherwise a ParamsError naming the parameter (no file is touched)."""
    if not isinstance(value, str) or not value or "\x00" in value:
        raise ParamsError(f"{what}: expected a path inside the repository, got {value!r}")
    path = (root / value).resolve()
    if not path.is_relative_to(root.resolve()) or path == root.resolve():
        raise ParamsError(f"{what}: {value!r} is outside the repository {root} (a path inside it is required)")
    return path


@contextmanager
def params_overrides(root: Path, overrides: list[str] | None, keep: bool = False) -> Iterator[dict]:
    """Apply `section.key=value` overrides to params files the way `dvc exp run --set-param`
    does (DVC's Hydra override grammar; comments and order kept), and put the files back
    afterwards unless `keep`. Yields {file: [overrides]}.

    While the run lasts, dvc.lock records the overridden values; once the files are restored,
    `dvc status` shows the affected stages as changed — the workspace holds an experiment's
    outputs, exactly as after `dvc exp run` followed by `git checkout params.yaml`.
    """
    restore_killed_overrides(root)
    if not overrides:
        yield {}
        return
    from dvc.exceptions import InvalidArgumentError
    from dvc.utils.cli_parse import to_path_overrides
    from dvc.utils.hydra import apply_overrides, to_hydra_overrides

    check_override_targets(root, overrides)
    by_file = to_path_overrides(overrides)
    originals: dict[Path, bytes] = {}
    backup = root / PARAMS_BACKUP
    if not keep:  # what a SIGKILLed run leaves behind for the next one to put back
        record = {"pid": os.getpid(), "host": socket.gethostname(), "files": {}}
        for name in by_file:
            record["files"][name] = base64.b64encode((root / name).read_bytes()).decode("ascii")
        backup.parent.mkdir(parents=True, exist_ok=True)
        write_bytes(backup, json.dumps(record).encode("utf-8"))
    try:
        for name, items in by_file.items():
            path = root / name
            if not path.exists():
                raise ParamsError(f"params override: {name} does not exist")
            try:
                if any(o.is_sweep_override() for o in to_hydra_overrides(items)):
                    raise ParamsError(f"params override {items}: sweeps (a=1,2) are not supported")
            except ParamsError:
                raise
            except Exception as err:  # hydra's OverrideParseException
                raise ParamsError(f"params override {items}: {err}") from None
            originals[path] = path.read_bytes()
            try:
                apply_overrides(path, items)
            except InvalidArgumentError as err:
                cause = err.__cause__ or err
                raise ParamsError(f"params override {items}: {cause}") from None
        if not keep:  # what the overrides made: a later hand edit is never "restored" away
            record["applied"] = {name: sha256_bytes((root / name).read_bytes()) for name in by_file}
            write_bytes(backup, json.dumps(record).encode("utf-8"))
        yield by_file
    finally:
        if not keep:
            for path, data in originals.items():
                write_bytes(path, data)
            backup.unlink(missing_ok=True)


def sha256_bytes(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


# the params files as they were before a run's overrides (removed when the run restores them)
PARAMS_BACKUP = Path(".dvc/tmp/textclf-params-backup.json")


def restore_killed_overrides(root: Path) -> list[str]:
    """Put back the params files of a run that was killed while its overrides were applied (its
    backup names a process that is gone): a later promotion must not commit them. Called under
    the repository lock, before any override; returns the files restored."""
    backup = root / PARAMS_BACKUP
    try:
        record = json.loads(backup.read_text(encoding="utf-8"))
        files = record["files"]
        pid, host = int(record["pid"]), record.get("host")
    except FileNotFoundError:
        return []
    except (OSError, ValueError, KeyError, TypeError) as err:
        logging.getLogger("textclf.flows").warning("ignoring the unreadable params backup %s: %s", backup, err)
        backup.unlink(missing_ok=True)
        return []
    if host == socket.gethostname() and pid != os.getpid() and _alive(pid):
        return []  # its run is still going (it holds the lock we would need to be here)
    applied = record.get("applied") or {}
    restored, edited = [], []
    for name, data in files.items():
        if Path(name).as_posix() not in OVERRIDABLE:
            continue
        path = root / name
        if name in applied and path.exists() and sha256_bytes(path.read_bytes()) != applied[name]:
            edited.append(name)  # changed by someone since the overrides: theirs, left as it is
            continue
        write_bytes(path, base64.b64decode(data))
        restored.append(name)
    if edited:
        aside = backup.with_name(f"{backup.stem}.{int(time.time())}.json")
        os.replace(backup, aside)
        logging.getLogger("textclf.flows").warning(
            "a run killed with params overrides applied left %s, edited since: left as it is; the bytes "
            "before that run are in %s",
            ", ".join(edited),
            aside,
        )
    backup.unlink(missing_ok=True)
    if not restored:
        return []
    logging.getLogger("textclf.flows").warning(
        "a run killed with params overrides applied left %s changed: restored from its backup", ", ".join(restored)
    )
    return restored


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def validate_params(root: Path) -> list[str]:
    """Every section of params.yaml through textclf.params (the one loader): raises ParamsError
    with the loader's message (`params.yaml: section.key: ...`); returns the sections checked."""

    try:
        data = read_params_file(root / PARAMS_FILE)
        parsed = {section: parse_section(section, values) for section, values in data.items()}
    except ParamsError as err:
        raise ParamsError(str(err)) from None
    missing = [
        f"params.yaml: {key}: {value} not found in {root} ({what}; dvc.yaml makes it a dependency)"
        for key, value, what in _dependency_paths(parsed)
        if value and not (root / value).exists()
    ]
    if missing:  # DVC would stop on "No such file" without naming the key
        raise ParamsError("\n".join(missing))
    return list(data)


def _dependency_paths(parsed: dict) -> list[tuple[str, str | None, str]]:
    """The params that name a path dvc.yaml depends on (`${...}` deps): key, value, what it is."""
    from textclf.params import CleanParams, IngestParams, TrainParams

    ingest = parsed.get("ingest") or IngestParams()
    clean = parsed.get("clean") or CleanParams()
    train = parsed.get("train") or TrainParams()
    return [
        ("ingest.source", ingest.source, "the raw data: a file or folder"),
        ("clean.stopwords_file", clean.stopwords_file, "extra stopwords, one per line"),
        ("train.encoder.path", train.encoder.path, "a local pretrained-encoder folder"),
    ]
