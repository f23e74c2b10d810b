"""Raw sources → one frame of *records*, each with where it came from.

A record is whatever the format calls one item: a line of a one-document-per-line file (blank
lines included), a whole file in a one-document-per-file layout, a CSV/TSV/JSONL/Parquet row.
Readers never drop anything: a record that cannot be a document (undecodable bytes, a binary
file, a marker line, a line that does not parse) comes back with a `reason`, and ingest
quarantines it.

Record frame columns: text (decoded, not yet normalised; for bad bytes a backslash-escaped form),
label, split (predefined, may be null), source (file), line (1-based, null for whole files),
reason (null, or why the reader already rejects it).
"""

from __future__ import annotations

import codecs
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from textclf.errors import InputError
from textclf.params import IngestParams
from textclf.records import is_binary, read_bytes, read_line_file, record_frame
from textclf.tabular import read_delimited, read_jsonl, read_parquet_source, select_columns, source_columns
from textclf.text import decode

log = logging.getLogger("textclf.sources")

SPLIT_DIRS = {
    "train": "train",
    "valid": "valid",
    "val": "valid",
    "dev": "valid",
    "validation": "valid",
    "test": "test",
}
TABULAR_EXT = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
}


def _hidden(path: Path, root: Path) -> bool:
    """A dot-prefixed part anywhere below `root` (pos/.git/config, not only .notes): skipped."""
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def resolve_format(params: IngestParams) -> str:
    if params.format != "auto":
        return params.format
    src = params.source
    path = Path(src)
    if not path.exists():
        raise InputError(f"ingest.source: {path} does not exist")
    if path.is_dir():
        exts = {p.suffix.lower() for p in path.rglob("*") if p.is_file() and not _hidden(p, path)}
        tabular = {TABULAR_EXT[e] for e in exts if e in TABULAR_EXT}
        if len(tabular) == 1 and not (exts - set(TABULAR_EXT)):
            return tabular.pop()
        return "text_dir"
    ext = path.suffix.lower()
    if ext in TABULAR_EXT:
        return TABULAR_EXT[ext]
    if ext in (".txt", ".ft", ".fasttext"):
        with open(path, "rb") as f:
            head = f.read(4096)
        if b"__label__" in head:
            return "fasttext"
    raise InputError(
        f"ingest.source: cannot tell the format of {path}; set ingest.format "
        "(text_dir, fasttext, csv, tsv, jsonl, parquet)"
    )


def read_records(params: IngestParams) -> pd.DataFrame:
    """Read the whole source into one record frame (see module docstring)."""
    frames = list(iter_records(params))
    if not frames:
        return record_frame([], [], [], [], [], [])
    return pd.concat(frames, ignore_index=True)


def iter_record_batches(params: IngestParams, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """The source as record frames of at most `chunk_rows` records, in `read_records` order.

    Parquet sources stream row batches (memory bounded by `chunk_rows`); the other formats are
    read a file at a time and cut into batches (memory bounded by the largest file).
    """
    if chunk_rows <= 0:
        raise ValueError("chunk_rows must be > 0")
    if resolve_format(params) == "parquet":
        root = Path(params.source)
        files = (
            sorted(
                p
                for p in root.rglob("*")
                if p.is_file() and not _hidden(p, root) and TABULAR_EXT.get(p.suffix.lower()) == "parquet"
            )
            if root.is_dir()
            else [root]
        )
        if root.is_dir() and not files:
            raise InputError(f"ingest.source: no parquet files under {root}")
        for path in files:
            yield from _parquet_source_batches(path, params, chunk_rows)
        return
    for frame in iter_records(params):
        for start in range(0, len(frame), chunk_rows):
            yield frame.iloc[start : start + chunk_rows].reset_index(drop=True)


def _parquet_source_batches(path: Path, params: IngestParams, chunk_rows: int) -> Iterator[pd.DataFrame]:
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise InputError(f"{path}: not a readable Parquet file: {err}") from None
    wanted = [c for c in source_columns(params).values() if c is not None]
    names = pf.schema_arrow.names
    if any(c not in names for c in wanted):  # the same error as the whole-file reader
        yield select_columns(pd.DataFrame(columns=names), path, params, first_line=1)
        return
    line = 1
    for batch in pf.iter_batches(batch_size=chunk_rows, columns=list(dict.fromkeys(wanted))):
        df = batch.to_pandas()
        yield select_columns(df, path, params, first_line=line)
        line += len(df)


def iter_records(params: IngestParams) -> Iterator[pd.DataFrame]:
    if params.encoding != "auto":  # a typo would otherwise quarantine every record as undecodable
        try:
            codecs.lookup(params.encoding)
        except LookupError:
            raise InputError(
                f"ingest.encoding: unknown encoding {params.encoding!r} "
                "(auto, or a Python codec name such as utf-8, gb18030, big5, latin-1)"
            ) from None
    fmt = resolve_format(params)
    root = Path(params.source)
    if not root.exists():
        raise InputError(f"ingest.source: {root} does not exist")
    if fmt == "text_dir":
        if not root.is_dir():
            raise InputError(f"ingest.source: {root} is not a directory (ingest.format=text_dir)")
        yield from read_text_dir(root, params.encoding)
        return
    files = sorted(p for p in root.rglob("*") if p.is_file() and not _hidden(p, root)) if root.is_dir() else [root]
    if root.is_dir():
        files = [p for p in files if TABULAR_EXT.get(p.suffix.lower()) == fmt or fmt == "fasttext"]
        if not files:
            raise InputError(f"ingest.source: no {fmt} files under {root}")
    for path in files:
        if fmt == "fasttext":
            yield read_fasttext(path, params.encoding)
        elif fmt in ("csv", "tsv"):
            yield read_delimited(path, params, sep="," if fmt == "csv" else "\t")
        elif fmt == "jsonl":
            yield read_jsonl(path, params)
        elif fmt == "parquet":
            yield read_parquet_source(path, params)


# ---------------------------------------------------------------------------------------------
# text layouts


def read_text_dir(root: Path, encoding: str) -> Iterator[pd.DataFrame]:
    """`<root>/[train|valid|test/]<label>.txt` (a document per line) and
    `<root>/[train|valid|test/]<label>/*.txt` (a document per file)."""
    children = [p for p in sorted(root.iterdir()) if not p.name.startswith(".")]
    split_dirs = [p for p in children if p.is_dir() and p.name.lower() in SPLIT_DIRS]
    if split_dirs:
        stray = [p.name for p in children if p not in split_dirs]
        if stray:
            raise InputError(
                f"{root}: has split folders ({', '.join(p.name for p in split_dirs)}) and "
                f"also {', '.join(stray)}; put every document under train/, valid/ or test/"
            )
        for d in split_dirs:
            yield from _read_label_layout(d, SPLIT_DIRS[d.name.lower()], encoding)
    else:
        yield from _read_label_layout(root, None, encoding)


def _read_label_layout(root: Path, split: str | None, encoding: str) -> Iterator[pd.DataFrame]:
    found = False
    for p in sorted(root.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_file() and p.suffix.lower() == ".txt":
            found = True
            yield read_line_file(p, p.stem, split, encoding)
        elif p.is_dir():
            found = True
            yield read_file_per_doc(p, p.name, split, encoding)
        else:  # not part of the layout: one quarantined record, so the file is accounted for
            log.warning("%s: not a <label>.txt file or <label>/ folder: quarantined as unsupported_file", p)
            yield record_frame(
                [f"<file {p.name}, {p.stat().st_size} bytes>"],
                [None],
                [split],
                [str(p)],
                [None],
                ["unsupported_file"],
            )
    if not found:
        raise InputError(f"{root}: no <label>.txt files or <label>/ folders found")


def read_file_per_doc(folder: Path, label: str, split: str | None, encoding: str) -> pd.DataFrame:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not _hidden(p, folder))
    texts, reasons = [], []
    for p in files:
        data = read_bytes(p)
        if is_binary(data, encoding):
            texts.append(f"<binary file, {len(data)} bytes>")
            reasons.append("binary")
            continue
        s = decode(data, encoding)
        texts.append(s if s is not None else data.decode("utf-8", errors="backslashreplace"))
        reasons.append(None if s is not None else "undecodable")
    n = len(files)
    return record_frame(texts, [label] * n, [split] * n, [str(p) for p in files], [None] * n, reasons)


def read_fasttext(path: Path, encoding: str) -> pd.DataFrame:
    """`__label__pos some text` lines. A line without exactly one leading label is `malformed`."""
    lines = read_line_file(path, None, None, encoding)
    ok = lines["reason"].isna().to_numpy()
    if not ok.any():
        return lines
    text = lines["text"].to_numpy(dtype=object, na_value=None).copy()
    arr = pa.array(text[ok], type=pa.string())
    m = pc.extract_regex(arr, pattern=r"^\s*(?P<labels>(?:__label__\S*\s*)*)(?P<rest>.*)$")
    labels = pc.utf8_trim_whitespace(pc.struct_field(m, "labels"))
    words = pc.utf8_split_whitespace(labels)  # "" splits into [""]: never an empty list
    nlab = np.where(
        pc.equal(labels, "").to_numpy(zero_copy_only=False),
        0,
        pc.list_value_length(words).to_numpy(zero_copy_only=False),
    )
    first = pc.replace_substring_regex(pc.list_element(words, 0), "^__label__", "")
    blank = pc.equal(pc.utf8_trim_whitespace(arr), "").to_numpy(zero_copy_only=False)
    bad = (nlab != 1) & ~blank  # blank lines are `empty`, decided by ingest
    rest = pc.struct_field(m, "rest").to_numpy(zero_copy_only=False)
    text[ok] = np.where(bad, text[ok], rest)  # a malformed line keeps its original record
    label = np.full(len(lines), None, dtype=object)
    label[ok] = np.where(nlab == 1, first.to_numpy(zero_copy_only=False), None)
    reason = lines["reason"].to_numpy(dtype=object, na_value=None).copy()
    reason[ok] = np.where(bad, "malformed", None)
    return record_frame(text, label, lines["split"], lines["source"], lines["line"], reason)
