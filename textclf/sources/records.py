"""The record frame every raw-source reader returns, the options a reader takes, and what the
readers share. Imports nothing else of `textclf.sources`.

Record frame columns: text (decoded, not yet normalised; for bad bytes a backslash-escaped form),
label, split (predefined, may be null), source (file), line (1-based, null for whole files),
reason (null, or why the reader already rejects it)."""

from __future__ import annotations

import codecs
import dataclasses
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from textclf.errors import InputError
from textclf.text import MARKER, decode, looks_binary

RECORD_COLUMNS = ["text", "label", "split", "source", "line", "reason"]


@dataclasses.dataclass(frozen=True)
class ReadOptions:
    """How a reader reads one path: the `ingest.*` keys a reader needs, and nothing else.

    `chunk_rows`: a reader that can stream (Parquet) yields frames of at most this many records;
    None reads a file whole."""

    encoding: str = "auto"
    text_column: str = "text"
    label_column: str = "label"
    split_column: str | None = None
    chunk_rows: int | None = None

    def __post_init__(self):
        if self.encoding != "auto":  # a typo would otherwise quarantine every record as undecodable
            try:
                codecs.lookup(self.encoding)
            except LookupError:
                raise InputError(
                    f"ingest.encoding: unknown encoding {self.encoding!r} "
                    "(auto, or a Python codec name such as utf-8, gb18030, big5, latin-1)"
                ) from None

    @classmethod
    def of(cls, params) -> ReadOptions:
        """The options of an `IngestParams` (the one place the params become reader options)."""
        return cls(params.encoding, params.text_column, params.label_column, params.split_column)

    @property
    def columns(self) -> dict[str, str]:
        """record field → source column, for the columns that are set."""
        named = {"text": self.text_column, "label": self.label_column, "split": self.split_column}
        return {k: v for k, v in named.items() if v is not None}


def require_columns(path: Path, found: Iterable[str], opts: ReadOptions, where: str = "") -> None:
    """InputError unless every column `opts` names is among `found` (`where`: e.g. " in any record")."""
    found = list(found)
    missing = [v for v in opts.columns.values() if v not in found]
    if missing:
        raise InputError(
            f"{path}: column(s) {missing} not found{where}; columns are {found} "
            "(set ingest.text_column / ingest.label_column / ingest.split_column)"
        )


def is_binary(data: bytes, encoding: str) -> bool:
    """NUL bytes mean binary, unless the user declared an encoding that has them (UTF-16/32) and
    the bytes decode in it."""
    return looks_binary(data) and (encoding == "auto" or decode(data, encoding) is None)


def read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise InputError(f"{path}: cannot read: {err}") from None


def record_frame(text, label, split, source, line, reason) -> pd.DataFrame:
    # text stays Arrow-backed (pandas' "str" dtype): no Python object per record
    text = pd.array(
        text if isinstance(text, pa.Array | pa.ChunkedArray) else pa.array(text, type=pa.string(), from_pandas=True),
        dtype="str",
    )
    df = pd.DataFrame(
        {
            "text": pd.Series(text),
            "label": pd.Series(label, dtype=object),
            "split": pd.Series(split, dtype=object),
            "source": pd.Series(source, dtype=object),
            "line": pd.array(line, dtype="Int64"),
            "reason": pd.Series(reason, dtype=object),
        }
    )
    return df[RECORD_COLUMNS]


def empty_records() -> pd.DataFrame:
    return record_frame([], [], [], [], [], [])


def whole_file_record(path: Path, text: str, reason: str, label=None, split=None) -> pd.DataFrame:
    """One record standing for a whole file the readers reject (binary, not part of a layout)."""
    return record_frame([text], [label], [split], [str(path)], [None], [reason])


def read_line_file(
    path: Path, label: str | None, split: str | None, encoding: str, source: str | None = None
) -> pd.DataFrame:
    """One document per line. Every line is a record; a marker line is rejected as `marker`."""
    source = source or str(path)
    data = read_bytes(path)
    if is_binary(data, encoding):
        return whole_file_record(source, f"<binary file, {len(data)} bytes>", "binary", label, split)
    if not data:
        return empty_records()
    text = decode(data, encoding)
    reason: np.ndarray | None = None
    if text is not None:
        # Split in Arrow: no Python string per line.
        arr = pc.list_flatten(pc.split_pattern(pa.array([text], type=pa.large_string()), "\n"))
        if text.endswith("\n"):  # a final newline ends the last line; it is not a record
            arr = arr.slice(0, len(arr) - 1)
        arr = arr.cast(pa.string())
    else:  # mixed or broken encoding: decode line by line, quarantine the lines that fail
        raw_lines = data.split(b"\n")
        if raw_lines and raw_lines[-1] == b"":
            raw_lines.pop()
        if raw_lines and raw_lines[0].startswith(b"\xef\xbb\xbf"):
            raw_lines[0] = raw_lines[0][3:]
        lines, reasons = [], []
        for raw in raw_lines:
            s = decode(raw, encoding)
            lines.append(s if s is not None else raw.decode("utf-8", errors="backslashreplace"))
            reasons.append(None if s is not None else "undecodable")
        arr = pa.array(lines, type=pa.string())
        reason = np.array(reasons, dtype=object)
    arr = pc.utf8_rtrim(arr, characters="\r")
    n = len(arr)
    if reason is None:
        reason = np.full(n, None, dtype=object)
    is_marker = pc.starts_with(pc.utf8_ltrim_whitespace(arr), MARKER).to_numpy(zero_copy_only=False)
    reason[is_marker & pd.isna(reason)] = "marker"
    return record_frame(arr, [label] * n, [split] * n, [source] * n, pd.RangeIndex(1, n + 1), reason)
