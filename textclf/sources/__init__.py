"""Raw sources → record frames, each record with where it came from.

A record is whatever the format calls one item: a line of a one-document-per-line file (blank
lines included), a whole file in a one-document-per-file layout, a CSV/TSV/JSONL/Parquet row.
Readers never drop anything: a record that cannot be a document (undecodable bytes, a binary
file, a marker line, a line that does not parse) comes back with a `reason`, and ingest
quarantines it.

Read top to bottom: `records` (the record frame, `ReadOptions` and the primitives), one reader
per format in `text_formats` and `tabular`, all `(path, ReadOptions) -> Iterator[frame]`, and
here the `READERS` table, the format's detection, the file listing and `iter_source`. Imports go
one way: this module → the readers → `records`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from textclf.errors import InputError
from textclf.sources.records import RECORD_COLUMNS, ReadOptions, empty_records
from textclf.sources.tabular import TABULAR_EXT, read_csv, read_jsonl, read_parquet, read_tsv
from textclf.sources.text_formats import FASTTEXT_EXT, SPLIT_DIRS, hidden, read_fasttext, read_text_dir

__all__ = [
    "FASTTEXT_EXT",
    "FORMATS",
    "READERS",
    "RECORD_COLUMNS",
    "SPLIT_DIRS",
    "TABULAR_EXT",
    "ReadOptions",
    "detect_format",
    "iter_record_batches",
    "iter_records",
    "iter_source",
    "list_files",
    "read_records",
    "read_source",
    "resolve_format",
]

READERS = {
    "text_dir": read_text_dir,  # the corpus folder itself
    "fasttext": read_fasttext,
    "csv": read_csv,
    "tsv": read_tsv,
    "jsonl": read_jsonl,
    "parquet": read_parquet,
}
FORMATS = tuple(READERS)


def detect_format(path: Path) -> str:
    """`ingest.format: auto`: the format of a file by its extension (and a fastText file by its
    `__label__`), of a folder by the extension all its files share (else `text_dir`)."""
    if not path.exists():
        raise InputError(f"ingest.source: {path} does not exist")
    if path.is_dir():
        exts = {p.suffix.lower() for p in path.rglob("*") if p.is_file() and not hidden(p, path)}
        tabular = {TABULAR_EXT[e] for e in exts if e in TABULAR_EXT}
        if len(tabular) == 1 and not (exts - set(TABULAR_EXT)):
            return tabular.pop()
        return "text_dir"
    ext = path.suffix.lower()
    if ext in TABULAR_EXT:
        return TABULAR_EXT[ext]
    if ext in FASTTEXT_EXT:
        with open(path, "rb") as f:
            head = f.read(4096)
        if b"__label__" in head:
            return "fasttext"
    raise InputError(f"ingest.source: cannot tell the format of {path}; set ingest.format ({', '.join(FORMATS)})")


def resolve_format(params) -> str:
    """`ingest.format`, or the detected format of `ingest.source` when it is `auto`."""
    return params.format if params.format != "auto" else detect_format(Path(params.source))


def list_files(root: Path, fmt: str) -> list[Path]:
    """The files of a folder source that `fmt` reads (every visible file for fastText), sorted."""
    files = sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and not hidden(p, root) and (fmt == "fasttext" or TABULAR_EXT.get(p.suffix.lower()) == fmt)
    )
    if not files:
        raise InputError(f"ingest.source: no {fmt} files under {root}")
    return files


def iter_source(path: Path, fmt: str, opts: ReadOptions) -> Iterator[pd.DataFrame]:
    """Every record of the source at `path` in format `fmt` (not `auto`), a frame at a time."""
    if not path.exists():
        raise InputError(f"ingest.source: {path} does not exist")
    read = READERS[fmt]
    for file in [path] if fmt == "text_dir" or not path.is_dir() else list_files(path, fmt):
        yield from read(file, opts)


def read_source(path: Path, fmt: str, opts: ReadOptions) -> pd.DataFrame:
    """The whole source as one record frame."""
    frames = list(iter_source(path, fmt, opts))
    return pd.concat(frames, ignore_index=True) if frames else empty_records()


def _source_of(params) -> tuple[Path, str, ReadOptions]:
    """An `IngestParams` as what a read needs, resolved once: (source, format, options)."""
    opts = ReadOptions.of(params)  # an unknown encoding fails before anything is read
    return Path(params.source), resolve_format(params), opts


def iter_records(params) -> Iterator[pd.DataFrame]:
    """`ingest.source` read as the `ingest.*` params say, a frame at a time."""
    yield from iter_source(*_source_of(params))


def read_records(params) -> pd.DataFrame:
    """`ingest.source` read whole into one record frame (see the module docstring)."""
    return read_source(*_source_of(params))


def iter_record_batches(params, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """The source as record frames of at most `chunk_rows` records, in `read_records` order.

    Parquet sources stream row batches (memory bounded by `chunk_rows`); the other formats are
    read a file at a time and cut into batches (memory bounded by the largest file).
    """
    if chunk_rows <= 0:
        raise ValueError("chunk_rows must be > 0")
    path, fmt, opts = _source_of(params)
    for frame in iter_source(path, fmt, dataclasses.replace(opts, chunk_rows=chunk_rows)):
        if len(frame) <= chunk_rows:
            if len(frame):
                yield frame
            continue
        for start in range(0, len(frame), chunk_rows):
            yield frame.iloc[start : start + chunk_rows].reset_index(drop=True)
