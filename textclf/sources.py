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
import csv
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from textclf.artifacts import InputError
from textclf.params import IngestParams
from textclf.text import MARKER, decode, looks_binary

log = logging.getLogger("textclf.sources")

SPLIT_DIRS = {
    "train": "train",
    "valid": "valid",
    "val": "valid",
    "dev": "valid",
    "validation": "valid",
    "test": "test",
}
RECORD_COLUMNS = ["text", "label", "split", "source", "line", "reason"]
TABULAR_EXT = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
}


def resolve_format(params: IngestParams) -> str:
    if params.format != "auto":
        return params.format
    src = params.source
    path = Path(src)
    if not path.exists():
        raise InputError(f"ingest.source: {path} does not exist")
    if path.is_dir():
        exts = {p.suffix.lower() for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")}
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
        return _frame([], [], [], [], [], [])
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
                if p.is_file() and not p.name.startswith(".") and TABULAR_EXT.get(p.suffix.lower()) == "parquet"
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
    wanted = [c for c in _columns(params).values() if c is not None]
    names = pf.schema_arrow.names
    if any(c not in names for c in wanted):  # the same error as the whole-file reader
        yield _select(pd.DataFrame(columns=names), path, params, first_line=1)
        return
    line = 1
    for batch in pf.iter_batches(batch_size=chunk_rows, columns=list(dict.fromkeys(wanted))):
        df = batch.to_pandas()
        yield _select(df, path, params, first_line=line)
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
    files = (
        sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")) if root.is_dir() else [root]
    )
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
            yield _frame(
                [f"<file {p.name}, {p.stat().st_size} bytes>"],
                [None],
                [split],
                [str(p)],
                [None],
                ["unsupported_file"],
            )
    if not found:
        raise InputError(f"{root}: no <label>.txt files or <label>/ folders found")


def read_line_file(
    path: Path, label: str | None, split: str | None, encoding: str, source: str | None = None
) -> pd.DataFrame:
    """One document per line. Every line is a record; a marker line is rejected as `marker`."""
    source = source or str(path)
    data = _read_bytes(path)
    if _is_binary(data, encoding):
        return _frame([f"<binary file, {len(data)} bytes>"], [label], [split], [source], [None], ["binary"])
    if not data:
        return _frame([], [], [], [], [], [])
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
    return _frame(arr, [label] * n, [split] * n, [source] * n, pd.RangeIndex(1, n + 1), reason)


def read_file_per_doc(folder: Path, label: str, split: str | None, encoding: str) -> pd.DataFrame:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    texts, reasons = [], []
    for p in files:
        data = _read_bytes(p)
        if _is_binary(data, encoding):
            texts.append(f"<binary file, {len(data)} bytes>")
            reasons.append("binary")
            continue
        s = decode(data, encoding)
        texts.append(s if s is not None else data.decode("utf-8", errors="backslashreplace"))
        reasons.append(None if s is not None else "undecodable")
    n = len(files)
    return _frame(texts, [label] * n, [split] * n, [str(p) for p in files], [None] * n, reasons)


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
    return _frame(text, label, lines["split"], lines["source"], lines["line"], reason)


# ---------------------------------------------------------------------------------------------
# tabular formats


def _columns(params: IngestParams) -> dict[str, str | None]:
    return {"text": params.text_column, "label": params.label_column, "split": params.split_column}


def _select(df: pd.DataFrame, path: Path, params: IngestParams, first_line: int) -> pd.DataFrame:
    wanted = {k: v for k, v in _columns(params).items() if v is not None}
    missing = [v for v in wanted.values() if v not in df.columns]
    if missing:
        raise InputError(
            f"{path}: column(s) {missing} not found; columns are {list(df.columns)} "
            "(set ingest.text_column / ingest.label_column / ingest.split_column)"
        )
    n = len(df)

    def col(name):
        if name is None:
            return [None] * n
        s = df[name]
        out = s.astype(str).to_numpy(dtype=object).copy()  # numbers become their text, as in a CSV
        out[s.isna().to_numpy()] = None
        return out

    return _frame(
        col(wanted["text"]),
        col(wanted["label"]),
        col(wanted.get("split")),
        [str(path)] * n,
        pd.RangeIndex(first_line, first_line + n),
        [None] * n,
    )


def read_delimited(path: Path, params: IngestParams, sep: str) -> pd.DataFrame:
    """CSV / TSV through Arrow's multi-threaded parser, every column as text (numbers stay their
    text, empty fields stay empty strings). Bytes are handed to the parser as UTF-8: as they are
    when they are UTF-8, transcoded once when they are GB18030 or the declared encoding."""
    data = _read_bytes(path)
    if _is_binary(data, params.encoding):
        return _frame([f"<binary file, {len(data)} bytes>"], [None], [None], [str(path)], [None], ["binary"])
    utf8 = _as_utf8(data, params.encoding)
    if utf8 is None:
        raise InputError(f"{path}: not decodable as UTF-8 or GB18030 (set ingest.encoding)")
    if not utf8.strip():
        return _frame([], [], [], [], [], [])
    names = _header(utf8, sep)
    what = "TSV" if sep == "\t" else "CSV"
    if len(set(names)) != len(names):
        raise InputError(f"{path}: not valid {what}: duplicate column names {names}")
    try:
        table = pacsv.read_csv(
            pa.BufferReader(utf8),
            read_options=pacsv.ReadOptions(use_threads=True, block_size=1 << 24),
            parse_options=pacsv.ParseOptions(
                delimiter=sep,
                quote_char=False if sep == "\t" else '"',
                newlines_in_values=sep != "\t",
            ),
            convert_options=pacsv.ConvertOptions(
                column_types={n: pa.string() for n in names},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
        raise InputError(f"{path}: not valid {what}: {str(err).splitlines()[0]}") from None
    if any(t != pa.string() for t in table.schema.types):  # a header the csv module read otherwise
        table = table.cast(pa.schema([(n, pa.string()) for n in table.column_names]))
    wanted = {k: v for k, v in _columns(params).items() if v is not None}
    missing = [v for v in wanted.values() if v not in table.column_names]
    if missing:
        raise InputError(
            f"{path}: column(s) {missing} not found; columns are {table.column_names} "
            "(set ingest.text_column / ingest.label_column / ingest.split_column)"
        )
    n = table.num_rows

    def col(name):
        if name is None:
            return [None] * n
        return table.column(name).combine_chunks().to_numpy(zero_copy_only=False)

    text = table.column(wanted["text"]).combine_chunks()
    return _frame(
        text,
        col(wanted["label"]),
        col(wanted.get("split")),
        [str(path)] * n,
        pd.RangeIndex(2, 2 + n),
        [None] * n,
    )  # line 1 is the header


def _as_utf8(data: bytes, encoding: str) -> bytes | None:
    """The bytes as UTF-8 without a BOM (None if they do not decode)."""
    if encoding == "auto":
        body = data[3:] if data.startswith(b"\xef\xbb\xbf") else data
        try:
            body.decode("utf-8")
            return body
        except UnicodeDecodeError:
            pass
    text = decode(data, encoding)
    return None if text is None else text.encode("utf-8")


def _header(utf8: bytes, sep: str) -> list[str]:
    """The column names: the first record, as the csv module reads it (a quoted name may hold
    the separator)."""

    head = utf8[: 1 << 16].decode("utf-8", errors="ignore")
    reader = csv.reader(
        io.StringIO(head),
        delimiter=sep,
        quoting=csv.QUOTE_NONE if sep == "\t" else csv.QUOTE_MINIMAL,
    )
    return next(reader, [])


def read_jsonl(path: Path, params: IngestParams) -> pd.DataFrame:
    lines = read_line_file(path, None, None, params.encoding)
    cols = {k: v for k, v in _columns(params).items() if v is not None}
    texts, labels, splits, reasons = [], [], [], []
    keys: set[str] = set()
    for raw, reason in zip(lines["text"], lines["reason"], strict=True):
        if reason is not None or not str(raw).strip():
            texts.append(raw)
            labels.append(None)
            splits.append(None)
            reasons.append(reason)  # blank lines stay records; ingest calls them `empty`
            continue
        try:
            obj = json.loads(raw)
            if not isinstance(obj, dict):
                raise ValueError("not an object")
        except (ValueError, RecursionError):  # RecursionError: arrays nested past Python's stack
            texts.append(raw)
            labels.append(None)
            splits.append(None)
            reasons.append("malformed")
            continue
        keys.update(obj)
        text = obj.get(cols["text"])
        texts.append(text if isinstance(text, str) or text is None else json.dumps(text, ensure_ascii=False))
        lab = obj.get(cols["label"])
        labels.append(None if lab is None else str(lab))
        sp = obj.get(cols["split"]) if "split" in cols else None
        splits.append(None if sp is None else str(sp))
        reasons.append(None if text is not None else "malformed")
    missing = [v for v in cols.values() if v not in keys]
    if keys and missing:  # a column no record has is a setting to fix, not a data problem
        raise InputError(
            f"{path}: column(s) {missing} not found in any record; columns are {sorted(keys)} "
            "(set ingest.text_column / ingest.label_column / ingest.split_column)"
        )
    return _frame(texts, labels, splits, lines["source"], lines["line"], reasons)


def read_parquet_source(path: Path, params: IngestParams) -> pd.DataFrame:
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise InputError(f"{path}: not a readable Parquet file: {err}") from None
    return _select(table.to_pandas(), path, params, first_line=1)


# ---------------------------------------------------------------------------------------------


def _is_binary(data: bytes, encoding: str) -> bool:
    """NUL bytes mean binary, unless the user declared an encoding that has them (UTF-16/32) and
    the bytes decode in it."""
    return looks_binary(data) and (encoding == "auto" or decode(data, encoding) is None)


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise InputError(f"{path}: cannot read: {err}") from None


def _frame(text, label, split, source, line, reason) -> pd.DataFrame:
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
