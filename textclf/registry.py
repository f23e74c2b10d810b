"""The model registry: artifacts declared in dvc.yaml, versions and stages as GTO git tags.

    textclf promote                              # HEAD's model: next version, stage prod
    textclf promote --version v1.0.0 --stage staging
    gto show                                     # the registry (GTO's own view)
    dvc artifacts get . classifier --stage prod -o served/
    textclf serve --model classifier#prod        # or classifier@v0.3.0

`dvc.yaml`'s `artifacts:` names what can be registered (`classifier`: the bundle, and
`classifier-onnx`: its ONNX export). A promotion registers a version of each at one commit
(`classifier@v0.3.0`, GTO's semver tags) and assigns the stage (`classifier#prod#N`). The model
files stay in DVC's cache and remote; a reference is resolved to its commit with DVC's
`artifacts_show` and read through DVC at that commit, never from the workspace.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from textclf.errors import InputError

ARTIFACTS = ("classifier", "classifier-onnx")
BUNDLE, ONNX = ARTIFACTS
STAGE_RE = r"[a-z][a-z0-9-]*"
VERSION_RE = r"v\d+\.\d+\.\d+"
REF_RE = re.compile(rf"^(?P<name>[a-z][a-z0-9-]*)(?:@(?P<version>{VERSION_RE})|#(?P<stage>{STAGE_RE}))$")
CACHE_DIR = Path(".textclf") / "registry"  # in the project, git-ignored: fetched copies by commit


@dataclass(frozen=True)
class ModelRef:
    name: str
    version: str | None = None
    stage: str | None = None

    def __str__(self) -> str:
        return self.name + (f"@{self.version}" if self.version else f"#{self.stage}")


def parse_ref(text: str) -> ModelRef | None:
    """`classifier#prod` or `classifier@v0.3.0` as a ModelRef; anything else (a path) -> None."""
    m = REF_RE.match(text.strip())
    if not m:
        return None
    return ModelRef(m["name"], m["version"], m["stage"])


def _git(root: Path, *args: str) -> str:
    try:
        proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise InputError(f"git {' '.join(args)}: {err}") from err
    if proc.returncode != 0:
        raise InputError(f"git {' '.join(args)}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def declared(root: Path, rev: str | None = None) -> dict[str, str]:
    """The artifacts dvc.yaml declares (name -> path), in the workspace or at a commit."""
    text = _git(root, "show", f"{rev}:dvc.yaml") if rev else (root / "dvc.yaml").read_text(encoding="utf-8")
    try:
        spec = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise InputError(f"dvc.yaml{f' at {rev[:12]}' if rev else ''} does not parse: {err}") from err
    arts = (spec.get("artifacts") if isinstance(spec, dict) else None) or {}
    return {name: str(spec["path"]) for name, spec in arts.items() if isinstance(spec, dict) and "path" in spec}


def resolve(root: Path, ref: ModelRef) -> tuple[str, str]:
    """(commit, path) of a registered version, as `dvc artifacts get` resolves it."""
    from dvc.api import artifacts_show
    from dvc.exceptions import DvcException

    try:
        found = artifacts_show(ref.name, version=ref.version, stage=ref.stage, repo=str(root))
    except DvcException as err:
        raise InputError(
            f"{ref}: not in the model registry of {root} ({err}); `gto show` lists what is registered, "
            "`textclf promote` registers the committed model"
        ) from err
    return found["rev"], found["path"]


def _safe_relpath(path: str) -> Path:
    """A declared artifact path as a plain relative path inside the project (dvc.yaml comes from a
    commit anyone with push access wrote: no absolute paths, no '..', no empty parts)."""
    p = Path(path)
    if not path or p.is_absolute() or ".." in p.parts or "\\" in path:
        raise InputError(f"artifact path {path!r}: must be a relative path inside the project")
    return p


def fetch(root: Path, rev: str, path: str) -> Path:
    """The artifact at `path` as committed at `rev`, read through DVC (cache, else the default
    remote) into .textclf/registry/<commit>/<path>; a complete copy is reused."""
    root = root.resolve()
    if not re.fullmatch(r"[0-9a-f]{40}", rev):
        raise InputError(f"{rev!r}: not a full commit id")
    cache = root / CACHE_DIR
    for link in (root / CACHE_DIR.parts[0], cache):
        if link.is_symlink():
            raise InputError(f"{link} is a symbolic link: refusing to write models through it")
    dest = cache / rev / _safe_relpath(path)
    if not dest.resolve().is_relative_to(cache.resolve()):
        raise InputError(f"artifact path {path!r}: resolves outside {cache}")
    done = dest.parent / f".{dest.name}.complete"
    if done.exists() and dest.exists():
        return dest
    from dvc.exceptions import DvcException
    from dvc.fs import DVCFileSystem

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        fs = DVCFileSystem(repo=str(root), rev=rev)
        fs.get(path, str(tmp / dest.name), recursive=True)
        if dest.exists():
            shutil.rmtree(dest) if dest.is_dir() else dest.unlink()
        os.replace(tmp / dest.name, dest)
    except Exception as err:  # noqa: BLE001 - DVC's data layer raises its own types (DataIndexDirError, ...)
        why = f"{type(err).__name__}: {err}" if not isinstance(err, DvcException) else str(err)
        raise InputError(
            f"{path} at {rev[:12]}: its files are in neither this repository's DVC cache nor a reachable "
            f"remote ({why.splitlines()[0][:200]}). `dvc pull` from a remote that has them, or check out "
            f"{rev[:12]}, `dvc repro`, commit and promote that build"
        ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    done.touch()
    return dest


def model_paths(root: Path, text: str, onnx: bool = False) -> tuple[Path, Path | None, str]:
    """For `--model REF`: (bundle dir, ONNX dir or None, what it resolved to). The bundle and its
    ONNX export are read from the commit the reference names, so they belong together."""
    ref = parse_ref(text)
    if ref is None:
        raise InputError(f"--model {text!r}: expected NAME#STAGE or NAME@vX.Y.Z (e.g. classifier#prod)")
    rev, _ = resolve(root, ref)
    arts = declared(root, rev)
    if BUNDLE not in arts:
        raise InputError(f"{ref}: dvc.yaml at {rev[:12]} declares no {BUNDLE!r} artifact")
    bundle = fetch(root, rev, arts[BUNDLE])
    graph = None
    if onnx:
        if ONNX not in arts:
            raise InputError(f"{ref}: dvc.yaml at {rev[:12]} declares no {ONNX!r} artifact")
        _check_export(root, rev, arts)
        graph = fetch(root, rev, arts[ONNX])
    return bundle, graph, f"{ref} = {rev[:12]}"


def _lock(root: Path, rev: str) -> dict:
    try:
        lock = yaml.safe_load(_git(root, "show", f"{rev}:dvc.lock")) or {}
    except (InputError, yaml.YAMLError):
        return {}
    return lock if isinstance(lock, dict) else {}


def _check_export(root: Path, rev: str, arts: dict[str, str]) -> None:
    """The ONNX export at `rev` was made from the bundle at `rev` (dvc.lock: the stage that writes
    the ONNX path depends on the bundle with the same hash the bundle's output has)."""
    bundle, graph = arts[BUNDLE], arts[ONNX]
    stages = _lock_stages(root, rev)
    made = {o.get("path"): o.get("md5") for st in stages for o in st.get("outs") or []}
    for st in stages:
        if any(o.get("path") == graph for o in st.get("outs") or []):
            used = {d.get("path"): d.get("md5") for d in st.get("deps") or []}
            if used.get(bundle) and used.get(bundle) == made.get(bundle):
                return
            break
    raise InputError(
        f"{graph} at {rev[:12]} was not exported from the {bundle} of that commit "
        "(run `dvc repro export` and commit dvc.lock before promoting it)"
    )


@dataclass(frozen=True)
class Promotion:
    artifact: str
    version: str
    stage: str
    version_tag: str
    stage_tag: str
    new_version: bool


def _locked(root: Path, rev: str) -> dict[str, str]:
    """path -> content hash of every stage output in dvc.lock at `rev` ({} if none)."""
    return {
        str(o.get("path")): str(o.get("md5") or o.get("hash") or "")
        for st in _lock_stages(root, rev)
        for o in st.get("outs") or []
        if isinstance(o, dict)
    }


def _lock_stages(root: Path, rev: str) -> list[dict]:
    """The stage entries of dvc.lock at `rev` ([] if none)."""
    return [st for st in (_lock(root, rev).get("stages") or {}).values() if isinstance(st, dict)]


def changed_artifacts(root: Path, rev: str = "HEAD") -> tuple[str, ...]:
    """The declared artifacts whose output at `rev` differs from its first parent's (or is new):
    what a promotion commit made that deserves a new version."""
    commit = _git(root, "rev-parse", "--verify", f"{rev}^{{commit}}").strip()
    now = _locked(root, commit)
    try:
        before = _locked(root, _git(root, "rev-parse", "--verify", f"{commit}^").strip())
    except InputError:  # the first commit
        before = {}
    return tuple(name for name, path in declared(root, commit).items() if path in now and now[path] != before.get(path))


def promote(
    root: Path,
    stage: str = "prod",
    version: str | None = None,
    bump: str | None = None,
    rev: str = "HEAD",
    artifacts: tuple[str, ...] = ARTIFACTS,
    message: str | None = None,
) -> list[Promotion]:
    """Register the models committed at `rev` (one version per artifact, reused if that commit
    already has one) and assign `stage` to it, as GTO tags in this repository (not pushed)."""
    import gto.api
    from gto.exceptions import GTOException

    if not re.fullmatch(STAGE_RE, stage):
        raise InputError(f"stage {stage!r}: lower-case letters, digits and '-', starting with a letter")
    if version is not None and not re.fullmatch(VERSION_RE, version):
        raise InputError(f"version {version!r}: expected vMAJOR.MINOR.PATCH, e.g. v1.0.0")
    commit = _git(root, "rev-parse", "--verify", f"{rev}^{{commit}}").strip()
    arts = declared(root, commit)
    outs = set(_locked(root, commit))
    out = []
    for name in artifacts:  # every check before the first tag: a refusal tags nothing
        if name not in arts:
            raise InputError(f"{name}: dvc.yaml at {commit[:12]} declares no such artifact (artifacts: section)")
        _safe_relpath(arts[name])
        if arts[name] not in outs:
            raise InputError(
                f"{name}: {arts[name]} is not an output in dvc.lock at {commit[:12]}; "
                "run `dvc repro` and commit dvc.lock first"
            )
        if name == ONNX and BUNDLE in arts:
            _check_export(root, commit, arts)
        found = _version_at(root, name, commit)
        if version is not None and found is not None and found[0] != version:
            raise InputError(f"{name}: commit {commit[:12]} is already registered as {found[0]}, not {version}")
    for name in artifacts:
        try:
            existing = _version_at(root, name, commit)
            if existing is None:
                reg = gto.api.register(
                    str(root),
                    name,
                    commit,
                    version=version,
                    bump_major=bump == "major",
                    bump_minor=bump == "minor",
                    bump_patch=bump == "patch",
                    message=message,
                )
                ver, vtag, new = reg.version, reg.tag, True
            else:
                ver, vtag, new = existing
            if _stage_commit(root, name, stage) == commit:
                stage_tag = _stage_tag_at(root, name, stage, commit)  # promoting twice: nothing to do
            else:
                # force: the version may have been in this stage before (a roll-back); a new
                # `name#stage#N` tag makes it the stage's current version for GTO and DVC alike
                stage_tag = gto.api.assign(str(root), name, stage, version=ver, message=message, force=True).tag
        except GTOException as err:
            raise InputError(f"{name}: {err}") from err
        out.append(Promotion(name, ver, stage, vtag, stage_tag, new))
    return out


def unreadable(root: Path, rev: str = "HEAD", artifacts: tuple[str, ...] = ARTIFACTS) -> list[str]:
    """The artifacts whose committed outputs at `rev` are not in the local DVC cache (then only a
    remote can serve `--model name#stage`); `promote` warns about them."""
    commit = _git(root, "rev-parse", "--verify", f"{rev}^{{commit}}").strip()
    arts, outs = declared(root, commit), _locked(root, commit)
    cache = root / ".dvc" / "cache" / "files" / "md5"
    missing = []
    for name in artifacts:
        md5 = outs.get(arts.get(name, ""), "")
        if md5 and not (cache / md5[:2] / md5[2:]).exists():
            missing.append(name)
    return missing


def _stage_commit(root: Path, name: str, stage: str) -> str | None:
    """The commit `name#stage` resolves to now (as `dvc artifacts get --stage` resolves it)."""
    try:
        return resolve(root, ModelRef(name, stage=stage))[0]
    except InputError:
        return None


def _version_at(root: Path, name: str, commit: str) -> tuple[str, str, bool] | None:
    """(version, tag, False) if `name` already has a registered version at `commit`."""
    for line in _git(root, "tag", "--points-at", commit).splitlines():
        m = re.fullmatch(rf"{re.escape(name)}@({VERSION_RE})", line.strip())
        if m:
            return m[1], line.strip(), False
    return None


def _stage_tag_at(root: Path, name: str, stage: str, commit: str) -> str:
    """The newest `name#stage#N` tag at `commit`."""
    tags = [t.strip() for t in _git(root, "tag", "--points-at", commit).splitlines()]
    found = [(int(m[1]), t) for t in tags if (m := re.fullmatch(rf"{re.escape(name)}#{re.escape(stage)}#(\d+)", t))]
    return max(found)[1] if found else f"{name}#{stage}"
