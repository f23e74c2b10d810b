"""`textclf diff`: what changed *in the data* between two revisions, row by row.

`dvc diff` says which files changed hash. This module says which documents were added, removed or
relabelled, how the class balance and the splits moved, what the quarantine and the vocabulary
gained and lost, and how params and metrics changed (as DVC itself computes those).

Three layers, top to bottom:
- the pure core, `diff_snapshots(a, b)`: two `Snapshot`s (frames, no I/O) in, a JSON-able dict
  out. Rows are matched on `doc_id` with hash joins (`pandas.Index.get_indexer`) and counted with
  vectorised reductions: no Python loop over documents, so a million-document corpus diffs in
  seconds;
- reading, `load_snapshot` / `diff_revisions`: the pipeline outputs at a git revision come
  through `dvc.api.DVCFileSystem` (the workspace, the local cache, or the configured remote); params
  and metrics changes come from `dvc.repo.Repo.params.diff` / `.metrics.diff`, so whatever
  params sections and metrics files the pipeline has at either revision are diffed generically;
- rendering: `render_text` (terminal), `render_markdown` (PR comments, Prefect artifacts),
  `render_json` (machines). Text and Markdown render the same list of blocks.

Every failure a user can cause (unknown revision, outputs not produced or not fetched, a corrupt or
contract-breaking file) is a `DiffError` whose message names the revision and the file and says
what to run.
"""

from __future__ import annotations

import json
import logging
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from textclf import paths
from textclf.artifacts import InputError, to_pandas
from textclf.data.vocab import SPECIALS, VOCAB, check_vocab
from textclf.schemas import CLEAN_REASONS, INGEST_REASONS, SPLITS

log = logging.getLogger("textclf.datadiff")

WORKSPACE = "workspace"  # how DVC (and this report) names the working tree
DOCUMENTS = PurePosixPath(paths.DOCUMENTS.as_posix())
REJECTED = {"ingest": PurePosixPath(paths.REJECTED_INGEST.as_posix()),
            "clean": PurePosixPath(paths.REJECTED_CLEAN.as_posix())}
SPLIT_FILES = {s: PurePosixPath((paths.PROCESSED / f"{s}.parquet").as_posix()) for s in SPLITS}
VOCAB_FILE = PurePosixPath(VOCAB.as_posix())
SNIPPET = 60  # characters of a document shown in examples


class DiffError(RuntimeError):
    """The diff cannot be computed as asked; the message says why and what to run."""


@dataclass(frozen=True)
class Snapshot:
    """The pipeline's data outputs at one revision, as frames.

    documents:   doc_id, label (+ text for examples)  — data/interim/documents.parquet
    splits:      doc_id, split                          — data/processed/{train,valid,test}.parquet
    quarantine:  reason (+ stage)                       — data/interim/rejected_*.parquet
    vocab:       the vocab.json dict (tokens, counts, hash)
    test_tokens: the test split's token lists (Arrow list<string>); only needed for the newer side
    """

    rev: str
    documents: pd.DataFrame
    splits: pd.DataFrame
    quarantine: pd.DataFrame
    vocab: dict
    test_tokens: pa.Array | pa.ChunkedArray | None = None
    commit: str | None = None


# =============================================================================================
# core: frames in, a dict out (no I/O)

def diff_snapshots(a: Snapshot, b: Snapshot, examples: int = 5, top: int = 10) -> dict:
    """The data diff from `a` to `b` (see module docstring); every number is a plain int/float."""
    result = {
        "a": {"rev": a.rev, "commit": a.commit},
        "b": {"rev": b.rev, "commit": b.commit},
        "documents": diff_documents(a.documents, b.documents, examples),
        "labels": diff_labels(a.documents["label"], b.documents["label"]),
        "splits": diff_splits(a.splits, b.splits, examples),
        "quarantine": diff_quarantine(a.quarantine["reason"], b.quarantine["reason"]),
        "vocab": diff_vocab(a.vocab, b.vocab, b.test_tokens, top),
    }
    warnings = []
    moved = result["splits"]["moved"]
    if moved:
        warnings.append(f"{moved:,} document(s) present at both revisions changed split: a document's "
                        "split must never change (were split.seed or the ratios changed?) — models "
                        "evaluated at the two revisions are not comparable")
    result["warnings"] = warnings
    return result


def join(a_ids: pd.Series | np.ndarray, b_ids: pd.Series | np.ndarray, what: str) -> np.ndarray:
    """Hash join on doc_id: for each row of b, the row of a with the same id, or -1."""
    index = pd.Index(np.asarray(a_ids, dtype=object))
    for side, ids in (("a", index), ("b", pd.Index(np.asarray(b_ids, dtype=object)))):
        if not ids.is_unique:
            dup = ids[ids.duplicated()]
            raise DiffError(f"{what} ({side}): doc_id is not unique ({len(dup):,} repeated, "
                            f"e.g. {', '.join(map(str, dup[:3]))})")
    return index.get_indexer(np.asarray(b_ids, dtype=object))


def match(a: pd.DataFrame, b: pd.DataFrame, column: str, what: str):
    """Join a and b on doc_id and compare `column` for the documents in both.

    Returns (pos, in_a, still, changed, values_a, values_b): for each row of b its row in a (or -1)
    and whether it exists there; for each row of a whether it is still in b; for each row of b
    whether `column` differs from a's value."""
    pos = join(a["doc_id"], b["doc_id"], what)
    in_a = pos >= 0
    va, vb = a[column].to_numpy(dtype=object), b[column].to_numpy(dtype=object)
    changed = np.zeros(len(b), dtype=bool)
    changed[in_a] = va[pos[in_a]] != vb[in_a]
    still = np.zeros(len(a), dtype=bool)
    still[pos[in_a]] = True
    return pos, in_a, still, changed, va, vb


def diff_documents(a: pd.DataFrame, b: pd.DataFrame, examples: int = 5) -> dict:
    pos, in_a, still, relabeled, label_a, _ = match(a, b, "label", "documents")
    added, removed = ~in_a, ~still
    n_relabeled = int(relabeled.sum())
    rel = np.flatnonzero(relabeled)[:examples]
    return {
        "a": int(len(a)),
        "b": int(len(b)),
        "added": int(added.sum()),
        "removed": int(removed.sum()),
        "relabeled": n_relabeled,
        "unchanged": int(in_a.sum()) - n_relabeled,
        "examples": {
            "added": _examples(b, np.flatnonzero(added)[:examples]),
            "removed": _examples(a, np.flatnonzero(removed)[:examples]),
            "relabeled": [{**ex, "label_a": str(label_a[pos[i]])}
                          for i, ex in zip(rel, _examples(b, rel), strict=True)],
        },
    }


def _examples(df: pd.DataFrame, rows: np.ndarray) -> list[dict]:
    part = df.iloc[rows]
    out = []
    for rec in part.to_dict(orient="records"):  # a handful of rows, never the whole frame
        ex = {"doc_id": str(rec["doc_id"]), "label": str(rec["label"])}
        if "text" in rec and rec["text"] is not None:
            ex["text"] = _snippet(str(rec["text"]))
        out.append(ex)
    return out


def _snippet(text: str, n: int = SNIPPET) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def diff_labels(a: pd.Series, b: pd.Series) -> dict:
    """Count and share per label at a and b (shares as fractions, deltas in share points)."""
    ca, cb = a.value_counts(), b.value_counts()
    out = {}
    for label in sorted(set(ca.index) | set(cb.index), key=str):
        na, nb = int(ca.get(label, 0)), int(cb.get(label, 0))
        sa = na / len(a) if len(a) else 0.0
        sb = nb / len(b) if len(b) else 0.0
        out[str(label)] = {"a": na, "b": nb, "delta": nb - na, "share_a": round(sa, 4),
                           "share_b": round(sb, 4), "share_delta": round(sb - sa, 4)}
    return out


def diff_splits(a: pd.DataFrame, b: pd.DataFrame, examples: int = 5) -> dict:
    """Documents per split at a and b, what entered and left each split, and documents present at
    both revisions whose split changed (there should be none: the split is stable by design)."""
    pos, in_a, still, moved, split_a, split_b = match(a, b, "split", "splits")
    ca, cb = a["split"].value_counts(), b["split"].value_counts()
    added = pd.Series(split_b[~in_a]).value_counts()
    removed = pd.Series(split_a[~still]).value_counts()
    names = [*SPLITS, *sorted((set(ca.index) | set(cb.index)) - set(SPLITS), key=str)]
    counts = {}
    for s in names:
        na, nb = int(ca.get(s, 0)), int(cb.get(s, 0))
        counts[str(s)] = {"a": na, "b": nb, "delta": nb - na,
                          "added": int(added.get(s, 0)), "removed": int(removed.get(s, 0))}
    rows = np.flatnonzero(moved)[:examples]
    moved_examples = [{"doc_id": str(b["doc_id"].iloc[i]), "split_a": str(split_a[pos[i]]),
                       "split_b": str(split_b[i])} for i in rows]
    return {"counts": counts, "moved": int(moved.sum()), "moved_examples": moved_examples}


def diff_quarantine(a: pd.Series, b: pd.Series) -> dict:
    """Quarantined records per reason (ingest and clean share one reason vocabulary)."""
    ca, cb = a.value_counts(), b.value_counts()
    known = [r for r in (*INGEST_REASONS, *CLEAN_REASONS) if r in ca.index or r in cb.index]
    other = sorted((set(ca.index) | set(cb.index)) - set(known), key=str)
    by_reason = {}
    for r in known + other:
        na, nb = int(ca.get(r, 0)), int(cb.get(r, 0))
        by_reason[str(r)] = {"a": na, "b": nb, "delta": nb - na}
    return {"by_reason": by_reason,
            "total": {"a": int(len(a)), "b": int(len(b)), "delta": int(len(b) - len(a))}}


def diff_vocab(a: dict, b: dict, test_tokens_b: pa.Array | pa.ChunkedArray | None = None,
               top: int = 10) -> dict:
    """Size change, tokens added and dropped (most frequent first), and the out-of-vocabulary rate
    of b's test split under a's vocabulary (how much of the new test data the old model could not
    see), next to the rate under b's own vocabulary."""
    tokens_a = np.asarray(a["tokens"], dtype=object)
    tokens_b = np.asarray(b["tokens"], dtype=object)
    counts_a = np.asarray(a["counts"], dtype=np.int64)
    counts_b = np.asarray(b["counts"], dtype=np.int64)
    pos = pd.Index(tokens_a).get_indexer(tokens_b)
    special_b = np.isin(tokens_b, SPECIALS)
    added = (pos < 0) & ~special_b
    still = np.zeros(len(tokens_a), dtype=bool)
    still[pos[pos >= 0]] = True
    dropped = ~still & ~np.isin(tokens_a, SPECIALS)
    out = {
        "size_a": int(len(tokens_a)),
        "size_b": int(len(tokens_b)),
        "delta": int(len(tokens_b) - len(tokens_a)),
        "added": int(added.sum()),
        "dropped": int(dropped.sum()),
        "hash_a": a.get("hash"),
        "hash_b": b.get("hash"),
        "top_added": _top(tokens_b[added], counts_b[added], top),
        "top_dropped": _top(tokens_a[dropped], counts_a[dropped], top),
    }
    out.update(oov_rates(test_tokens_b, tokens_a, tokens_b))
    return out


def _top(tokens: np.ndarray, counts: np.ndarray, n: int) -> list[dict]:
    # count descending, token ascending: the vocabulary's own order, enforced here anyway
    order = np.lexsort((tokens.astype(str), -counts))[:n] if len(tokens) else np.array([], dtype=int)
    return [{"token": str(tokens[i]), "count": int(counts[i])} for i in order]


def oov_rates(test_tokens: pa.Array | pa.ChunkedArray | pd.Series | None, vocab_a: np.ndarray,
              vocab_b: np.ndarray) -> dict:
    if test_tokens is None:
        return {"test_tokens": None, "oov_rate_test_b_under_a": None, "oov_rate_test_b_under_b": None}
    if isinstance(test_tokens, pd.Series):
        test_tokens = pa.array(test_tokens)
    values = pc.list_flatten(test_tokens)
    n = len(values)

    def rate(vocab: np.ndarray) -> float | None:
        if not n:
            return None
        words = pa.array([t for t in vocab.tolist() if t not in SPECIALS], type=pa.string())
        known = pc.sum(pc.is_in(values, value_set=words).cast(pa.int64())).as_py() or 0
        return round(1.0 - known / n, 6)

    return {"test_tokens": int(n), "oov_rate_test_b_under_a": rate(vocab_a),
            "oov_rate_test_b_under_b": rate(vocab_b)}


# =============================================================================================
# reading: pipeline outputs at a revision through DVC

def diff_revisions(root: Path | str = ".", rev_a: str = "HEAD", rev_b: str | None = None,
                   examples: int = 5, top: int = 10) -> dict:
    """Diff the pipeline outputs at git revision `rev_a` against `rev_b` (None: the workspace)."""
    with open_repo(root) as repo:
        commit_a = resolve_rev(repo, rev_a)
        commit_b = resolve_rev(repo, rev_b) if rev_b is not None else None
        repo_root = Path(repo.root_dir)
        a = load_snapshot(repo_root, rev_a, commit_a, test_tokens=False)
        b = load_snapshot(repo_root, rev_b or WORKSPACE, commit_b, test_tokens=True)
        result = diff_snapshots(a, b, examples=examples, top=top)
        changes = dvc_changes(repo, rev_a, rev_b or WORKSPACE)
    result.update(changes)
    for w in result["warnings"]:
        log.warning("%s", w)
    return result


def open_repo(root: Path | str):
    """The DVC repository at `root`; a clear DiffError when it is not one."""
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    try:
        return Repo(str(root))
    except NotDvcRepoError:
        raise DiffError(f"{Path(root).resolve()}: not a DVC repository (run textclf diff inside the project, "
                        "or pass --repo)") from None


def read_output(root: Path | str, rev: str, path: str, columns: list[str]) -> pd.DataFrame:
    """One Parquet pipeline output as recorded at git revision `rev` (read through DVC: the
    workspace's cache, else the remote), its columns checked. DiffError, saying what to do, for
    whatever stops it."""
    from dvc.api import DVCFileSystem

    with open_repo(root) as repo:
        commit = resolve_rev(repo, rev)
        reader = _Reader(DVCFileSystem(repo.root_dir, rev=commit), rev, commit)
        return reader.parquet(PurePosixPath(path), columns)


def markdown_diff(root: Path | str = ".", base_rev: str = "HEAD", level: int = 3) -> str:
    """The workspace's data changes against `base_rev` as Markdown (for the pipeline flow's
    artifact, nested under its own heading). Raises DiffError like `diff_revisions`."""
    return render_markdown(diff_revisions(root, base_rev, None), level=level)


def resolve_rev(repo, rev: str) -> str:
    """The commit a git revision names; a clear DiffError for anything git cannot resolve."""
    from dvc.scm import NoSCM
    from scmrepo.exceptions import SCMError

    if isinstance(repo.scm, NoSCM):
        raise DiffError(f"{repo.root_dir}: not a git repository (DVC runs without git here); "
                        "textclf diff compares git revisions")
    if repo.scm.no_commits:
        raise DiffError(f"unknown revision {rev!r}: the repository has no commits yet "
                        "(commit the pipeline and its dvc.lock first)")
    try:
        return repo.scm.resolve_rev(rev)
    except SCMError:
        raise DiffError(f"unknown revision {rev!r}: not a commit, branch or tag of "
                        f"{repo.root_dir} (try `git log --oneline`)") from None


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
                raise DiffError(f"{path} at {where}: breaks its contract: {int(bad.sum()):,} row(s) "
                                f"with split other than {name!r}")
            parts.append(part)
        splits = pd.concat(parts, ignore_index=True)
        _check_ids(splits, PurePosixPath(paths.PROCESSED.as_posix()) / "{train,valid,test}.parquet",
                   where)
        quarantine = pd.concat([reader.parquet(path, ["reason"]).assign(stage=stage)
                                for stage, path in REJECTED.items()], ignore_index=True)
        vocab = reader.vocab(VOCAB_FILE)
    finally:
        fs.close()
    return Snapshot(rev=rev, commit=commit, documents=docs, splits=splits, quarantine=quarantine,
                    vocab=vocab, test_tokens=tokens)


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
            return (f"{path}: not in the workspace (nor in the DVC cache). Produce it with "
                    "`dvc repro`, or restore it with `dvc checkout` / `dvc pull`.")
        rev = self.rev
        if recorded:
            return (f"{path} at {self.where}: recorded in that revision's dvc.lock, but the data is "
                    f"in neither the local DVC cache nor the remote. Fetch it: `git checkout {rev} && "
                    f"dvc pull` (then `git checkout -`), or rebuild it: `git checkout {rev} && "
                    "dvc repro` (and `dvc push` so others can diff against it).")
        return (f"{path} at {self.where}: that revision has no such pipeline output (not in its "
                f"dvc.lock: the pipeline was not run, or not committed, there). Run it: "
                f"`git checkout {rev} && dvc repro`, commit dvc.lock, and diff again.")

    def table(self, path: PurePosixPath, columns: list[str]) -> pa.Table:
        with self.open(path) as f:
            try:
                pf = pq.ParquetFile(f)
                found = pf.schema_arrow.names
                missing = [c for c in columns if c not in found]
                if missing:
                    raise DiffError(f"{path} at {self.where}: breaks its contract: column(s) "
                                    f"{missing} missing (columns: {found})")
                return pf.read(columns=columns)
            except (pa.ArrowException, OSError) as err:
                raise DiffError(f"{path} at {self.where}: not a readable Parquet file ({err}); "
                                "rebuild it with `dvc repro` or restore it with `dvc checkout`") from None

    def parquet(self, path: PurePosixPath, columns: list[str]) -> pd.DataFrame:
        return to_pandas(self.table(path, columns))

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
        raise DiffError(f"{path} at {where}: breaks its contract: doc_id not unique "
                        f"({int(dup.sum()):,} repeated, e.g. {', '.join(ids[dup].astype(str).head(3))})")


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
        out[kind] = {path: {key: _jsonable(v) for key, v in sorted(changes.items())}
                     for path, changes in sorted(res.get("diff", {}).items())}
        notes = []
        for rev, errors in res.get("errors", {}).items():
            items = errors.items() if isinstance(errors, dict) else [("", errors)]
            for path, err in items:
                why = "missing" if isinstance(err, FileNotFoundError) else f"unreadable: {err}"
                notes.append(f"{path or 'all files'} at {rev} ({why})")
        out["unreadable"][kind] = sorted(notes)
    return out


def _jsonable(v):
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    if v is None or isinstance(v, bool | int | float | str):
        return v
    return str(v)


# =============================================================================================
# rendering: one list of blocks, drawn as a terminal table or as Markdown; or JSON

def render_json(diff: dict) -> str:
    return json.dumps(_jsonable(diff), indent=2, ensure_ascii=False) + "\n"


def render_text(diff: dict) -> str:
    out: list[str] = []
    for block in _blocks(diff):
        kind = block[0]
        if kind == "title":
            out += [block[1], "=" * _width(_plain(block[1]))]
        elif kind == "warning":
            out += ["", f"WARNING: {block[1]}"]
        elif kind == "heading":
            out += ["", block[1], "-" * _width(block[1])]
        elif kind == "table":
            out += _text_table(block[1], block[2])
        elif kind == "para":
            out.append(f"  {block[1]}")
        elif kind == "list":
            out += [f"    - {item}" for item in block[1]]
    return "\n".join(_plain(line) for line in out) + "\n"


def render_markdown(diff: dict, level: int = 2) -> str:
    """Markdown with the title at heading `level` and sections one level below."""
    out: list[str] = []
    for block in _blocks(diff):
        kind = block[0]
        if kind == "title":
            out += [f"{'#' * level} {block[1]}", ""]
        elif kind == "warning":
            out += [f"> **WARNING:** {block[1]}", ""]
        elif kind == "heading":
            out += [""] * (out[-1] != "") + [f"{'#' * (level + 1)} {block[1]}", ""]
        elif kind == "table":
            headers, rows = block[1], block[2]
            align = ["---"] + ["--:" if _numeric_col(rows, i) else "---" for i in range(1, len(headers))]
            out.append("| " + " | ".join(_md_cell(h) for h in headers) + " |")
            out.append("|" + "|".join(align) + "|")
            out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
            out.append("")
        elif kind == "para":
            out += [block[1], ""]
        elif kind == "list":
            out += [f"- {item}" for item in block[1]] + [""]
    while out and out[-1] == "":
        out.pop()
    return "\n".join(out) + "\n"


def _blocks(d: dict) -> list[tuple]:
    """The report as blocks: ("title"|"warning"|"heading"|"para", text), ("list", items),
    ("table", headers, rows). Anything that comes from the data sits in a `code` span (`_code`):
    literal in Markdown, its backticks dropped in the terminal."""
    A, B = d["a"]["rev"], d["b"]["rev"]
    blocks: list[tuple] = [("title", f"Data diff: {_rev_name(d['a'])} → {_rev_name(d['b'])}")]
    blocks += [("warning", w) for w in d.get("warnings", [])]

    docs = d["documents"]
    blocks += [("heading", "Documents"),
               ("table", ["", "documents"], [
                   [f"at {A}", _n(docs["a"])], [f"at {B}", _n(docs["b"])],
                   ["added", _n(docs["added"])], ["removed", _n(docs["removed"])],
                   ["relabelled", _n(docs["relabeled"])], ["unchanged", _n(docs["unchanged"])]])]
    ex = docs["examples"]
    items = [f"added {_code(e['doc_id'])} [{_code(e['label'])}] {_quote(e)}" for e in ex["added"]]
    items += [f"removed {_code(e['doc_id'])} [{_code(e['label'])}] {_quote(e)}" for e in ex["removed"]]
    items += [f"relabelled {_code(e['doc_id'])} [{_code(e['label_a'])} → {_code(e['label'])}] {_quote(e)}"
              for e in ex["relabeled"]]
    if items:
        blocks += [("para", "Examples:"), ("list", items)]

    blocks += [("heading", "Labels"),
               ("table", ["label", A, B, "Δ", f"share {A}", f"share {B}", "Δ share"], [
                   [_code(k), _n(v["a"]), _n(v["b"]), _signed(v["delta"]), _pct(v["share_a"]),
                    _pct(v["share_b"]), _pp(v["share_delta"])] for k, v in d["labels"].items()])]

    sp = d["splits"]
    blocks += [("heading", "Splits"),
               ("table", ["split", A, B, "Δ", "entered", "left"], [
                   [_code(k), _n(v["a"]), _n(v["b"]), _signed(v["delta"]), _n(v["added"]), _n(v["removed"])]
                   for k, v in sp["counts"].items()])]
    if sp["moved"]:
        blocks += [("para", f"{sp['moved']:,} document(s) present at both revisions changed split "
                            "(there should be none), e.g.:"),
                   ("list", [f"{_code(e['doc_id'])} {_code(e['split_a'])} → {_code(e['split_b'])}"
                             for e in sp["moved_examples"]])]
    else:
        blocks.append(("para", "No document present at both revisions changed split."))

    q = d["quarantine"]
    rows = [[_code(k), _n(v["a"]), _n(v["b"]), _signed(v["delta"])] for k, v in q["by_reason"].items()]
    rows.append(["total", _n(q["total"]["a"]), _n(q["total"]["b"]), _signed(q["total"]["delta"])])
    blocks += [("heading", "Quarantine"), ("table", ["reason", A, B, "Δ"], rows)]

    v = d["vocab"]
    blocks += [("heading", "Vocabulary"),
               ("table", ["", A, B, "Δ"], [["size", _n(v["size_a"]), _n(v["size_b"]), _signed(v["delta"])]])]
    lines = [f"tokens added: {v['added']:,}" + _tops(v["top_added"]),
             f"tokens dropped: {v['dropped']:,}" + _tops(v["top_dropped"])]
    if v.get("test_tokens"):
        lines.append(f"out-of-vocabulary rate of {B}'s test split ({v['test_tokens']:,} tokens): "
                     f"{_pct(v['oov_rate_test_b_under_a'], 2)} under {A}'s vocabulary, "
                     f"{_pct(v['oov_rate_test_b_under_b'], 2)} under its own")
    blocks.append(("list", lines))

    for kind, title, cols in (("params", "Params", ["file", "param", A, B]),
                              ("metrics", "Metrics", ["file", "metric", A, B, "Δ"])):
        changes = d.get(kind)
        blocks.append(("heading", title))
        if changes is None:
            blocks.append(("para", f"({kind} not compared)"))
            continue
        rows = [[_code(path), _code(key), _val(c.get("old")), _val(c.get("new"))] +
                ([_val(c.get("diff"), signed=True)] if kind == "metrics" else [])
                for path, keys in changes.items() for key, c in keys.items()]
        blocks.append(("table", cols, rows) if rows else ("para", f"No {kind} changed."))
        if d.get("unreadable", {}).get(kind):
            blocks.append(("para", "Not compared: " + "; ".join(d["unreadable"][kind]) + "."))
    return blocks


def _code(s) -> str:
    """A code span; a backtick inside the content would end it early, so it is swapped."""
    return "`" + str(s).replace("`", "ˋ") + "`"


def _rev_name(side: dict) -> str:
    return f"{_code(side['rev'])} ({side['commit'][:7]})" if side.get("commit") else _code(side["rev"])


def _quote(e: dict) -> str:
    return f"“{_code(e['text'])}”" if e.get("text") else ""


def _tops(items: list[dict]) -> str:
    return (" — most frequent: " + ", ".join(f"{_code(t['token'])} ({t['count']:,})" for t in items)) if items else ""


def _n(x: int) -> str:
    return f"{x:,}"


def _signed(x: int) -> str:
    return f"{x:+,}" if x else "0"


def _pct(x: float | None, digits: int = 1) -> str:
    return "n/a" if x is None else f"{100 * x:.{digits}f}%"


def _pp(x: float) -> str:
    return f"{100 * x:+.1f} pp" if round(100 * x, 1) else "0.0 pp"


def _val(x, signed: bool = False) -> str:
    """A params/metrics value as DVC reports it: numbers formatted, anything else as code."""
    if x is None:
        return "—"
    if isinstance(x, float):
        return f"{x:+.4g}" if signed else f"{x:.4g}"
    if isinstance(x, int) and not isinstance(x, bool):
        return f"{x:+,}" if signed else f"{x:,}"
    return _code(x if isinstance(x, str) else json.dumps(x, ensure_ascii=False))


def _md_cell(s: str) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def _plain(s: str) -> str:
    return s.replace("`", "")


def _width(s: str) -> int:
    """Terminal columns: East Asian wide/full-width characters take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in s)


def _numeric_col(rows: list[list[str]], i: int) -> bool:
    cells = [r[i] for r in rows if r[i] not in ("", "—", "n/a")]
    return bool(cells) and all(c.lstrip("+-").replace(",", "").replace(".", "").replace("%", "")
                               .replace(" pp", "").isdigit() for c in cells)


def _text_table(headers: list[str], rows: list[list[str]]) -> list[str]:
    cells = [[_plain(c) for c in headers]] + [[_plain(c) for c in r] for r in rows]
    widths = [max(_width(r[i]) for r in cells) for i in range(len(headers))]
    right = [False] + [_numeric_col(rows, i) for i in range(1, len(headers))]

    def line(r: list[str]) -> str:
        parts = [(" " * (w - _width(c)) + c) if rj else (c + " " * (w - _width(c)))
                 for c, w, rj in zip(r, widths, right, strict=True)]
        return "  " + "  ".join(parts).rstrip()

    return [line(cells[0]), "  " + "  ".join("-" * w for w in widths)] + [line(r) for r in cells[1:]]
