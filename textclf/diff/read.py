"""Reading a data diff's inputs: the pipeline outputs at a git revision, through DVC.

Outputs come through `dvc.api.DVCFileSystem` (the workspace, the local cache, or the configured
remote); params and metrics changes from `dvc.repo.Repo.params.diff` / `.metrics.diff`, so
whatever params sections and metrics files the pipeline has at either revision are diffed
generically. Every failure a user can cause (unknown revision, outputs not produced or not
fetched, a corrupt or contract-breaking file) is a `DiffError` naming the revision and the file."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from textclf import paths
from textclf.artifacts import to_pandas
from textclf.data.vocab import check_vocab
from textclf.diff.core import (
    DOCUMENTS,
    REJECTED,
    SPLIT_FILES,
    VOCAB_FILE,
    WORKSPACE,
    DiffError,
    Snapshot,
    diff_snapshots,
    jsonable,
)
from textclf.errors import InputError, TextclfError

log = logging.getLogger("textclf.diff")


# =============================================================================================
# reading: pipeline outputs at a revision through DVC


def diff_revisions(
    root: Path | str = ".",
    rev_a: str = "HEAD",
    rev_b: str | None = None,
    examples: int = 5,
    top: int = 10,
    metric: str | None = "macro_f1",
) -> dict:
    """Diff the pipeline outputs at git revision `rev_a` against `rev_b` (None: the workspace);
    with `metric`, the `explain` section too (textclf.diff.explain)."""
    with open_repo(root) as repo:
        commit_a = resolve_rev(repo, rev_a)
        commit_b = resolve_rev(repo, rev_b) if rev_b is not None else None
        repo_root = Path(repo.root_dir)
        # the explanation and the drift section read A's test tokens too (B's: the vocabulary's OOV rate)
        a = load_snapshot(repo_root, rev_a, commit_a, test_tokens=bool(metric))
        b = load_snapshot(repo_root, rev_b or WORKSPACE, commit_b, test_tokens=True)
        result = diff_snapshots(a, b, examples=examples, top=top)
        changes = dvc_changes(repo, rev_a, rev_b or WORKSPACE)
        if metric:
            sides = (rev_a, commit_a), (rev_b or WORKSPACE, commit_b)
            try:
                result["drift"], result["explain"] = explain_revisions(repo_root, *sides, a, b, metric, examples)
            except Exception as err:  # noqa: BLE001 - the data diff stands without these two sections
                log.warning("the metric's change was not explained: %s: %s", type(err).__name__, err)
                why = f"not computed ({type(err).__name__}: {err})"
                result["drift"], result["explain"] = {"error": why}, {"metric": f"test.{metric}", "error": why}
    result.update(changes)
    for w in result["warnings"]:
        log.warning("%s", w)
    return result


def explain_revisions(
    root: Path,
    a: tuple[str, str | None],
    b: tuple[str, str | None],
    a_snap: Snapshot,
    b_snap: Snapshot,
    metric: str,
    examples: int,
) -> dict:
    """The `drift` and `explain` sections, in that order: each revision's test predictions and
    train split through DVC, and
    A's bundle when B's test split has documents A never predicted. Outputs a revision lacks
    (no evaluate stage, not fetched) make the section an `error` naming them, not a failed diff."""
    import tempfile

    from dvc.api import DVCFileSystem

    from textclf.diff.explain import explain

    frames = {}
    try:
        for side, (rev, commit) in (("a", a), ("b", b)):
            fs = DVCFileSystem(str(root), rev=commit)
            try:
                reader = _Reader(fs, rev, commit)
                preds = PurePosixPath(paths.PREDICTIONS.as_posix())
                probs = [c for c in reader.names(preds) if c.startswith("prob_")]
                frames[side] = (
                    reader.parquet(preds, ["doc_id", "label", "predicted", *probs]),
                    reader.parquet(PurePosixPath(paths.TRAIN.as_posix()), ["doc_id", "label", "tokens"]),
                )
            finally:
                fs.close()
    except DiffError as err:
        return {"error": str(err)}, {"metric": f"test.{metric}", "error": str(err)}
    tmp = tempfile.TemporaryDirectory(prefix="textclf-diff-")
    model: dict = {}

    def model_a():
        """A's bundle as a Predictor (read at A's commit once); _Unreadable when it cannot be."""
        if "predictor" not in model:
            from textclf.bundle import load_bundle
            from textclf.predict import Predictor

            rev, commit = a
            try:
                if commit is None:
                    bundle = root / paths.BUNDLE
                else:
                    bundle = Path(tmp.name) / "bundle"
                    fs = DVCFileSystem(str(root), rev=commit)
                    try:
                        fs.get(paths.BUNDLE.as_posix(), str(bundle), recursive=True)
                    finally:
                        fs.close()
                model["predictor"] = Predictor(load_bundle(bundle))
            except Exception as err:  # noqa: BLE001 - reported in the section, the diff goes on
                raise _Unreadable(f"A's model at {rev} could not be read: {err}") from None
        return model["predictor"]

    def guarded(texts):
        predictor = model_a()
        return np.asarray(predictor.labels, dtype=object)[predictor.predict_proba(texts).argmax(axis=1)]

    try:
        drift_section = _drift_of_added(model_a, frames["a"], a_snap, b_snap, root)
    except _Unreadable as err:
        drift_section = {"error": str(err)}
    try:
        return drift_section, explain(
            frames["a"][0],
            frames["b"][0],
            b_snap.documents.set_index("doc_id")["text"],
            guarded,
            frames["a"][1],
            frames["b"][1],
            _test_tokens(b_snap),
            metric=metric,
            examples=examples,
            relabelled=_relabelled(a_snap.documents, b_snap.documents),
        )
    except _Unreadable as err:
        return drift_section, {"metric": f"test.{metric}", "error": str(err)}
    finally:
        tmp.cleanup()


class _Unreadable(Exception):
    pass


def _drift_of_added(model_a, frames_a, a_snap: Snapshot, b_snap: Snapshot, root: Path) -> dict:
    """The new-data flow's drift checks (textclf.drift) of the documents B added, against A's
    model, test split and train split: what the gate would have said of them as one batch."""
    from textclf import drift
    from textclf.params import DriftParams, load_params

    added = b_snap.documents[~b_snap.documents["doc_id"].isin(a_snap.documents["doc_id"])]
    if not len(added):
        return {"documents": 0, "checks": []}
    preds, train = frames_a
    probs = preds[[c for c in preds.columns if c.startswith("prob_")]].to_numpy(dtype=float)
    if not probs.shape[1]:
        return {"documents": int(len(added)), "error": f"A's {paths.PREDICTIONS} holds no probabilities"}
    predictor = model_a()
    ref = drift.reference(predictor, a_snap.test_tokens, probs.max(axis=1), train["label"])
    try:
        params = load_params("drift", root / "params.yaml")
    except TextclfError:  # a params.yaml this textclf does not read: the defaults
        params = DriftParams()
    checks = drift.check_batch(added["text"].tolist(), added["label"], predictor, ref, params)
    return {"documents": int(len(added)), "checks": [c.to_dict() for c in checks]}


def _test_tokens(snap: Snapshot) -> pd.Series:
    """A snapshot's test tokens by doc_id (its test rows are in the order they were read)."""
    ids = snap.splits.loc[snap.splits["split"] == "test", "doc_id"].to_numpy()
    if snap.test_tokens is None:
        return pd.Series([], dtype=object)
    return pd.Series(snap.test_tokens.to_pandas().to_numpy(), index=ids, dtype=object)


def _relabelled(a_docs: pd.DataFrame, b_docs: pd.DataFrame) -> pd.DataFrame:
    both = a_docs[["doc_id", "label"]].merge(b_docs[["doc_id", "label"]], on="doc_id", suffixes=("_a", "_b"))
    rel = both[both["label_a"] != both["label_b"]]
    return pd.DataFrame({"doc_id": rel["doc_id"], "was": rel["label_a"], "label": rel["label_b"]})


def open_repo(root: Path | str):
    """The DVC repository at `root`; a clear DiffError when it is not one."""
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    try:
        return Repo(str(root))
    except NotDvcRepoError:
        raise DiffError(
            f"{Path(root).resolve()}: not a DVC repository (run textclf diff inside the project, or pass --repo)"
        ) from None


def read_output(root: Path | str, rev: str, path: str, columns: list[str]) -> pd.DataFrame:
    """One Parquet pipeline output as recorded at git revision `rev` (read through DVC: the
    workspace's cache, else the remote), its columns checked. DiffError, saying what to do, for
    whatever stops it."""
    from dvc.api import DVCFileSystem

    with open_repo(root) as repo:
        commit = resolve_rev(repo, rev)
        reader = _Reader(DVCFileSystem(repo.root_dir, rev=commit), rev, commit)
        return reader.parquet(PurePosixPath(path), columns)


def resolve_rev(repo, rev: str) -> str:
    """The commit a git revision names; a clear DiffError for anything git cannot resolve."""
    from dvc.scm import NoSCM
    from scmrepo.exceptions import SCMError

    if isinstance(repo.scm, NoSCM):
        raise DiffError(
            f"{repo.root_dir}: not a git repository (DVC runs without git here); textclf diff compares git revisions"
        )
    if repo.scm.no_commits:
        raise DiffError(
            f"unknown revision {rev!r}: the repository has no commits yet (commit the pipeline and its dvc.lock first)"
        )
    try:
        return repo.scm.resolve_rev(rev)
    except SCMError:
        raise DiffError(
            f"unknown revision {rev!r}: not a commit, branch or tag of {repo.root_dir} (try `git log --oneline`)"
        ) from None


def load_snapshot(root: Path, rev: str, commit: str | None, test_tokens: bool = False) -> Snapshot:
    """Read one revision's outputs (commit None: the workspace) and check what the diff relies on."""
    from dvc.api import DVCFileSystem

    where = rev if commit is None else f"{rev} ({commit[:7]})"
    log.info("reading pipeline outputs at %s", where)
    fs = DVCFileSystem(str(root), rev=commit)
    try:
        reader = _Reader(fs, rev, commit)
        docs = reader.parquet(DOCUMENTS, ["doc_id", "label", "text"])
        _check_ids(docs, DOCUMENTS, where)
        _check_not_null(docs, ["label"], DOCUMENTS, where)
        parts, tokens = [], None
        for name, path in SPLIT_FILES.items():
            cols = ["doc_id", "split"] + (["tokens"] if test_tokens and name == "test" else [])
            table = reader.table(path, cols)
            if "tokens" in cols:
                tokens = table.column("tokens")
                table = table.drop_columns(["tokens"])
            part = to_pandas(table)
            bad = ~part["split"].isin([name])
            if bad.any():
                raise DiffError(
                    f"{path} at {where}: breaks its contract: {int(bad.sum()):,} row(s) with split other than {name!r}"
                )
            parts.append(part)
        splits = pd.concat(parts, ignore_index=True)
        _check_ids(splits, PurePosixPath(paths.PROCESSED.as_posix()) / "{train,valid,test}.parquet", where)
        quarantine = pd.concat(
            [reader.parquet(path, ["reason"]).assign(stage=stage) for stage, path in REJECTED.items()],
            ignore_index=True,
        )
        vocab = reader.vocab(VOCAB_FILE)
    finally:
        fs.close()
    return Snapshot(
        rev=rev,
        commit=commit,
        documents=docs,
        splits=splits,
        quarantine=quarantine,
        vocab=vocab,
        test_tokens=tokens,
    )


class _Reader:
    """Opens pipeline outputs at one revision and turns every failure into a DiffError."""

    def __init__(self, fs, rev: str, commit: str | None):
        self.fs, self.rev, self.commit = fs, rev, commit
        self.where = rev if commit is None else f"{rev} ({commit[:7]})"

    @contextmanager
    def open(self, path: PurePosixPath) -> Iterator[Any]:
        from dvc.exceptions import DvcException

        try:
            f = self.fs.open(str(path), "rb")
        except FileNotFoundError:
            raise DiffError(self._missing(path)) from None
        except DvcException as err:
            raise DiffError(f"{path} at {self.where}: cannot be read through DVC: {err}") from err
        with f:
            yield f

    def _missing(self, path: PurePosixPath) -> str:
        try:
            recorded = bool(self.fs.info(str(path)).get("dvc_info", {}).get("md5"))
        except (FileNotFoundError, OSError):
            recorded = False
        if self.commit is None:
            return (
                f"{path}: not in the workspace (nor in the DVC cache). Produce it with "
                "`dvc repro`, or restore it with `dvc checkout` / `dvc pull`."
            )
        rev = self.rev
        if recorded:
            return (
                f"{path} at {self.where}: recorded in that revision's dvc.lock, but the data is "
                f"in neither the local DVC cache nor the remote. Fetch it: `git checkout {rev} && "
                f"dvc pull` (then `git checkout -`), or rebuild it: `git checkout {rev} && "
                "dvc repro` (and `dvc push` so others can diff against it)."
            )
        return (
            f"{path} at {self.where}: that revision has no such pipeline output (not in its "
            f"dvc.lock: the pipeline was not run, or not committed, there). Run it: "
            f"`git checkout {rev} && dvc repro`, commit dvc.lock, and diff again."
        )

    def table(self, path: PurePosixPath, columns: list[str]) -> pa.Table:
        with self.open(path) as f:
            try:
                pf = pq.ParquetFile(f)
                found = pf.schema_arrow.names
                missing = [c for c in columns if c not in found]
                if missing:
                    raise DiffError(
                        f"{path} at {self.where}: breaks its contract: column(s) {missing} missing (columns: {found})"
                    )
                return pf.read(columns=columns)
            except (pa.ArrowException, OSError) as err:
                raise DiffError(
                    f"{path} at {self.where}: not a readable Parquet file ({err}); "
                    "rebuild it with `dvc repro` or restore it with `dvc checkout`"
                ) from None

    def parquet(self, path: PurePosixPath, columns: list[str]) -> pd.DataFrame:
        return to_pandas(self.table(path, columns))

    def names(self, path: PurePosixPath) -> list[str]:
        with self.open(path) as f:
            try:
                return pq.ParquetFile(f).schema_arrow.names
            except (pa.ArrowException, OSError) as err:
                raise DiffError(f"{path} at {self.where}: not a readable Parquet file ({err})") from None

    def vocab(self, path: PurePosixPath) -> dict:
        with self.open(path) as f:
            try:
                vocab = json.loads(f.read().decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as err:
                raise DiffError(f"{path} at {self.where}: not valid JSON ({err})") from None
        if not isinstance(vocab, dict):
            raise DiffError(f"{path} at {self.where}: invalid vocabulary: not a JSON object")
        try:
            return check_vocab(vocab, f"{path} at {self.where}")
        except InputError as err:
            raise DiffError(str(err)) from None


def _check_ids(df: pd.DataFrame, path, where: str) -> None:
    ids = df["doc_id"]
    if ids.isna().any():
        raise DiffError(f"{path} at {where}: breaks its contract: {int(ids.isna().sum()):,} null doc_id(s)")
    dup = ids.duplicated()
    if dup.any():
        raise DiffError(
            f"{path} at {where}: breaks its contract: doc_id not unique "
            f"({int(dup.sum()):,} repeated, e.g. {', '.join(ids[dup].astype(str).head(3))})"
        )


def _check_not_null(df: pd.DataFrame, columns: list[str], path, where: str) -> None:
    for c in columns:
        n = int(df[c].isna().sum())
        if n:
            raise DiffError(f"{path} at {where}: breaks its contract: {n:,} null {c!r} value(s)")


def dvc_changes(repo, rev_a: str, rev_b: str) -> dict:
    """`dvc params diff` and `dvc metrics diff` between the revisions, JSON-able: changed values
    only, `{file: {key: {"old", "new"[, "diff"]}}}`. Files DVC could not read at a revision (a
    metrics file older revisions do not have yet) are listed under `unreadable`."""
    out: dict[str, Any] = {"unreadable": {}}
    for kind, fn in (("params", repo.params.diff), ("metrics", repo.metrics.diff)):
        res = fn(a_rev=rev_a, b_rev=rev_b)
        out[kind] = {
            path: {key: jsonable(v) for key, v in sorted(changes.items())}
            for path, changes in sorted(res.get("diff", {}).items())
        }
        notes = []
        for rev, errors in res.get("errors", {}).items():
            items = errors.items() if isinstance(errors, dict) else [("", errors)]
            for path, err in items:
                why = "missing" if isinstance(err, FileNotFoundError) else f"unreadable: {err}"
                notes.append(f"{path or 'all files'} at {rev} ({why})")
        out["unreadable"][kind] = sorted(notes)
    return out
