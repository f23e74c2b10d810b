"""The new-data flow's checks: each file against the ingest contract, then the batch against the
existing corpus, then the placing of accepted files into the raw folder (journalled).

- A file is read by the real reader and `ingest()` core, alone; its documents and rejected
  records must satisfy the pandera contracts, at most `max_bad_fraction` of its records may be
  quarantined, and it may add no label the corpus lacks (unless `allow_new_labels`). Any error of
  any type while checking is a verdict ("could not be checked: ..."), never a crashed run.
- The batch is checked against the corpus: a document that is already in the corpus under another
  label (a label flip) is not applied — its file goes to quarantine for review, naming the
  documents; a predefined split that would move an existing duplicate group to another split
  (train ↔ test) is refused the same way.
- Accepted files are placed in the raw folder's own layout: lines appended to `<label>.txt` in
  that file's encoding (`ingest.encoding` when it is set), other files and `<label>/` folders
  copied under new names — never over an existing file.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from flows.incoming import transaction
from flows.incoming.landing import unique_path
from flows.incoming.transaction import Journal
from flows.shell import RepositoryError
from textclf import schemas
from textclf.artifacts import read_json, read_parquet, write_bytes
from textclf.data.ingest import ingest
from textclf.data.split import group_hash
from textclf.errors import InputError
from textclf.params import load_params
from textclf.paths import INGEST_STATS
from textclf.sources import FASTTEXT_EXT, SPLIT_DIRS, TABULAR_EXT, ReadOptions, detect_format, read_source
from textclf.text import clean_batch, decode, hex_array, load_stopwords

log = logging.getLogger("textclf.flows")

SPLIT_FILES = ("train", "valid", "test")


@dataclass(frozen=True)
class RawSpec:
    folder: str  # repo-relative, e.g. data/raw
    format: str  # text_dir | csv | tsv | jsonl | parquet | fasttext


@dataclass
class Verdict:
    file: str
    accepted: bool
    reason: str
    stats: dict = field(default_factory=dict)


def raw_spec(root: Path) -> RawSpec:
    """Where accepted files go: ingest.source, which must be a folder inside the repository."""

    params = load_params("ingest", root / "params.yaml")
    path = (root / params.source).resolve()
    if not path.is_dir() or not path.is_relative_to(root.resolve()):
        raise RepositoryError(
            f"ingest.source is {params.source!r}: new data needs it to be a folder inside "
            "the repository (e.g. data/raw), which the incoming flow adds files to"
        )
    fmt = params.format if params.format != "auto" else detect_format(path)
    return RawSpec(str(path.relative_to(root.resolve())), fmt)


def shape_problem(path: Path, spec: RawSpec, root: Path | None = None) -> str | None:
    """Whether a landing item fits the raw folder's layout (None) or why not."""

    if path.name.lower() in SPLIT_DIRS or path.stem.lower() in SPLIT_DIRS:
        return (
            f"`{path.name}` is named like a split (train/valid/test): placed in {spec.folder} it would change "
            f"the corpus layout; put such files under {spec.folder}/<split>/ yourself and commit them"
        )
    if spec.format == "text_dir":
        if (
            root is not None
            and (root / spec.folder).is_dir()
            and any((root / spec.folder / d).is_dir() for d in SPLIT_DIRS)
        ):
            return (
                f"{spec.folder} is split into train/valid/test folders: a top-level `{path.name}` would "
                f"break that layout; put it under {spec.folder}/train/ (or valid/, test/) yourself"
            )
        if path.is_dir() or path.suffix.lower() == ".txt":
            return None
        return (
            f"{spec.folder} is a text_dir corpus: send `<label>.txt` (a document per line) or a "
            "`<label>/` folder (a document per file)"
        )
    if path.is_dir():
        return f"{spec.folder} holds {spec.format} files: send files, not folders"
    ok = TABULAR_EXT.get(path.suffix.lower()) == spec.format or (
        spec.format == "fasttext" and path.suffix.lower() in FASTTEXT_EXT
    )
    return None if ok else f"{spec.folder} holds {spec.format} files; {path.name} is not one"


def check_file(
    path: Path,
    root: Path,
    spec: RawSpec,
    known_labels: set[str] | None,
    max_bad_fraction: float,
    allow_new_labels: bool,
):
    """(Verdict, documents or None) for one private copy; never raises."""
    try:
        return _check(path, root, spec, known_labels, max_bad_fraction, allow_new_labels)
    except Exception as err:  # noqa: BLE001 - any failure on an unreviewed file is a verdict, not a crash
        return Verdict(path.name, False, f"could not be checked: {type(err).__name__}: {_short(err)}"), None


def _short(err: BaseException) -> str:
    text = str(err).splitlines()[0] if str(err) else ""
    return text[:300]


def _check(path, root, spec, known_labels, max_bad_fraction, allow_new_labels):
    from pandera.errors import SchemaErrors

    problem = shape_problem(path, spec, root)
    if problem:
        return Verdict(path.name, False, problem), None
    params = load_params("ingest", root / "params.yaml")
    # the folder holding the copy (it holds nothing else) is the source, in the raw folder's format
    try:
        records = read_source(path.parent, spec.format, ReadOptions.of(params))
        result = ingest(records, params)
        schemas.Documents.validate(result.documents, lazy=True)
        schemas.Rejected.validate(result.rejected, lazy=True)
    except InputError as err:
        return Verdict(
            path.name,
            False,
            f"cannot be read as {spec.format}: {err}".replace(str(path.parent), "<file>"),
        ), None
    except SchemaErrors as err:
        cases = err.failure_cases.groupby(["column", "check"], dropna=False).size()
        summary = "; ".join(f"column {c}: {chk} failed for {n} value(s)" for (c, chk), n in cases.items())
        return Verdict(path.name, False, f"violates the ingest contract: {summary}"), None
    s = result.stats
    reasons = {k: v for k, v in s["by_reason"].items() if v}
    stats = {
        "read": s["read"],
        "kept": s["kept"],
        "duplicates": s["duplicates"],
        "quarantined": s["quarantined"],
        "by_reason": reasons,
        "labels": s["by_label"],
    }
    if s["read"] == 0 or s["kept"] == 0:
        why = "empty" if s["read"] == 0 else f"no usable documents in {s['read']} record(s) ({reasons})"
        return Verdict(path.name, False, why, stats), None
    bad = s["quarantined"] / s["read"]
    if bad > max_bad_fraction:
        return Verdict(
            path.name,
            False,
            f"{s['quarantined']} of {s['read']} records ({bad:.0%}) would be "
            f"quarantined, more than max_bad_fraction {max_bad_fraction:.0%}: {reasons}",
            stats,
        ), None
    new = sorted(set(s["by_label"]) - known_labels) if known_labels else []
    if new and not allow_new_labels:
        return Verdict(
            path.name,
            False,
            f"label(s) {new} not in the corpus (known: {sorted(known_labels)}); set allow_new_labels to add classes",
            stats,
        ), None
    return Verdict(path.name, True, f"{s['kept']} document(s) of {s['read']} record(s)", stats), result.documents


# ---------------------------------------------------------------------------------------------
# the batch against the corpus


def corpus_index(root: Path):
    """(doc_id -> label, group_id -> split) of the current corpus, from the pipeline's outputs
    (None where they do not exist yet: no corpus, nothing to contradict)."""
    import pandas as pd

    docs = root / "data/interim/documents.parquet"
    labels = read_parquet(docs, columns=["doc_id", "label"]).set_index("doc_id")["label"] if docs.exists() else None
    parts = [root / f"data/processed/{s}.parquet" for s in SPLIT_FILES]
    groups = None
    if all(p.exists() for p in parts):
        frames = [read_parquet(p, columns=["group_id", "split"]) for p in parts]
        groups = pd.concat(frames).drop_duplicates("group_id").set_index("group_id")["split"]
    return labels, groups


def batch_problems(root: Path, accepted: list[tuple[str, object]]) -> dict[str, str]:
    """File name -> why it must not be applied: label flips of corpus documents (or of another
    new file's), predefined splits that would move an existing duplicate group."""
    import pandas as pd

    labels, groups = corpus_index(root)
    clean_params = load_params("clean", root / "params.yaml")
    stopwords = None
    seen: dict[str, tuple[str, str]] = {}  # doc_id -> (label, file) in this batch
    out: dict[str, str] = {}
    for name, docs in accepted:
        flips = []
        if labels is not None:
            both = docs[["doc_id", "label"]].merge(labels.rename("corpus_label"), left_on="doc_id", right_index=True)
            for r in both[both["label"] != both["corpus_label"]].head(5).itertuples():
                flips.append(f"{r.doc_id} is `{r.corpus_label}` in the corpus, `{r.label}` here")
        for doc_id, label in zip(docs["doc_id"], docs["label"], strict=True):
            other = seen.get(doc_id)
            if other and other[0] != label and len(flips) < 5:
                flips.append(f"{doc_id} is `{other[0]}` in {other[1]}, `{label}` here")
        if flips:
            out[name] = (
                "would relabel existing documents (label flips are not applied: review them and fix "
                "the corpus, or drop them from the file): " + "; ".join(flips)
            )
            continue
        predefined = docs[docs["split"].notna()]
        if groups is not None and len(predefined):
            stopwords = stopwords if stopwords is not None else load_stopwords(clean_params)
            tokens = clean_batch(predefined["text"], clean_params, stopwords)
            gid = pd.Series(hex_array(group_hash(tokens)).to_pylist(), index=predefined.index)
            current = gid.map(groups)
            moved = predefined[current.notna() & (current != predefined["split"])]
            if len(moved):
                r = moved.iloc[0]
                out[name] = (
                    f"would move {len(moved)} existing duplicate group(s) to another split (e.g. "
                    f"{r['doc_id']}: {groups[gid[moved.index[0]]]} → {r['split']}): existing documents "
                    "keep their split, so the test split stays unseen"
                )
                continue
        for doc_id, label in zip(docs["doc_id"], docs["label"], strict=True):
            seen.setdefault(doc_id, (label, name))
    return out


# ---------------------------------------------------------------------------------------------
# placing accepted files (every change journalled before it is made)


def _strip_bom(data: bytes) -> bytes:
    return data[3:] if data.startswith(b"\xef\xbb\xbf") else data


def reencode(data: bytes, like: bytes, encoding: str = "auto") -> bytes:
    """New lines in the encoding of the file they are appended to: `ingest.encoding` when it is
    set (both read and written in it), else UTF-8 unless the file is GB18030."""

    text = decode(data, encoding)
    if text is None:
        return data
    if encoding != "auto":
        return text.encode(encoding)
    try:
        like.decode("utf-8-sig")
        return text.encode("utf-8")
    except UnicodeDecodeError:
        return text.encode("gb18030") if decode(like, "gb18030") is not None else text.encode("utf-8")


def place(copy: Path, root: Path, spec: RawSpec, journal: Journal | None = None, encoding: str = "auto") -> list[str]:
    """Add an accepted private copy to the raw folder in its layout; returns the raw paths
    created. Files are written to a temp name and renamed into place, never modified in place,
    so a DVC cache linked to the workspace (hardlink/symlink cache types) is never touched."""

    raw = root / spec.folder
    created: list[str] = []
    if spec.format == "text_dir" and copy.is_file():
        target = raw / copy.name
        new = _strip_bom(copy.read_bytes())
        if target.exists():
            old = target.read_bytes()
            new = reencode(new, old, encoding)
            data = old + (b"\n" if old and not old.endswith(b"\n") else b"") + new
            data = data if data.endswith(b"\n") or not data else data + b"\n"
            if journal is not None:
                transaction.record_append(root, journal, target, old, data)
        else:
            data = new if new.endswith(b"\n") or not new else new + b"\n"
            created = [str(target)]
            if journal is not None:
                transaction.record_create(root, journal, target, data)
        write_bytes(target, data)
        return created
    sources = sorted(p for p in copy.rglob("*") if p.is_file()) if copy.is_dir() else [copy]
    for src in sources:
        dest = unique_path(raw / copy.name / src.relative_to(copy)) if copy.is_dir() else unique_path(raw / copy.name)
        data = src.read_bytes()
        if journal is not None:
            transaction.record_create(root, journal, dest, data)
        dest.parent.mkdir(parents=True, exist_ok=True)
        write_bytes(dest, data)
        created.append(str(dest))
    return created


def known_labels(root: Path) -> set[str] | None:
    """Labels of the current corpus, from ingest's report (None before the first run)."""
    if not (root / INGEST_STATS).exists():
        return None  # before the first run
    try:
        stats = read_json(root / INGEST_STATS)
    except (InputError, OSError) as err:
        log.warning("%s; the new-label check is off for this run", err)
        return None
    labels = stats.get("by_label") if isinstance(stats, dict) else None
    return set(labels) if isinstance(labels, dict) and labels else None
