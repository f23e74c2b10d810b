"""Tabular raw sources: CSV/TSV (pyarrow.csv), JSONL and Parquet, one record per row.

Each reader is `(path, ReadOptions) -> Iterator[record frame]`. Columns are chosen by
`ingest.text_column` / `label_column` / `split_column`; a row that cannot be a record (a field
that does not parse, a missing column value) comes back with a `reason`."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from textclf.errors import InputError
from textclf.sources.records import (
    ReadOptions,
    empty_records,
    is_binary,
    read_bytes,
    read_line_file,
    record_frame,
    require_columns,
    whole_file_record,
)
from textclf.text import decode

TABULAR_EXT = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
}


def read_csv(path: Path, opts: ReadOptions) -> Iterator[pd.DataFrame]:
    yield _read_delimited(path, opts, sep=",")


def read_tsv(path: Path, opts: ReadOptions) -> Iterator[pd.DataFrame]:
    yield _read_delimited(path, opts, sep="\t")


def read_parquet(path: Path, opts: ReadOptions) -> Iterator[pd.DataFrame]:
    """The whole file, or with `opts.chunk_rows` row batches of at most that many (memory bounded
    by the batch, not the file)."""
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise InputError(f"{path}: not a readable Parquet file: {err}") from None
    if opts.chunk_rows is None:
        try:
            table = pf.read()
        except (pa.ArrowInvalid, OSError) as err:
            raise InputError(f"{path}: not a readable Parquet file: {err}") from None
        yield _select_columns(table.to_pandas(), path, opts, first_line=1)
        return
    require_columns(path, pf.schema_arrow.names, opts)
    line = 1
    for batch in pf.iter_batches(batch_size=opts.chunk_rows, columns=list(dict.fromkeys(opts.columns.values()))):
        df = batch.to_pandas()
        yield _select_columns(df, path, opts, first_line=line)
        line += len(df)


def _select_columns(df: pd.DataFrame, path: Path, opts: ReadOptions, first_line: int) -> pd.DataFrame:
    require_columns(path, df.columns, opts)
    wanted = opts.columns
    n = len(df)

    def col(name):
        if name is None:
            return [None] * n
        s = df[name]
        out = s.astype(str).to_numpy(dtype=object).copy()  # numbers become their text, as in a CSV
        out[s.isna().to_numpy()] = None
        return out

    return record_frame(
        col(wanted["text"]),
        col(wanted["label"]),
        col(wanted.get("split")),
        [str(path)] * n,
        pd.RangeIndex(first_line, first_line + n),
        [None] * n,
    )


def _read_delimited(path: Path, opts: ReadOptions, sep: str) -> pd.DataFrame:
    """CSV / TSV through Arrow's multi-threaded parser, every column as text (numbers stay their
    text, empty fields stay empty strings). Bytes are handed to the parser as UTF-8: as they are
    when they are UTF-8, transcoded once when they are GB18030 or the declared encoding."""
    data = read_bytes(path)
    if is_binary(data, opts.encoding):
        return whole_file_record(path, f"<binary file, {len(data)} bytes>", "binary")
    utf8 = _as_utf8(data, opts.encoding)
    if utf8 is None:
        raise InputError(f"{path}: not decodable as UTF-8 or GB18030 (set ingest.encoding)")
    if not utf8.strip():
        return empty_records()
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
    require_columns(path, table.column_names, opts)
    wanted = opts.columns
    n = table.num_rows

    def col(name):
        if name is None:
            return [None] * n
        return table.column(name).combine_chunks().to_numpy(zero_copy_only=False)

    text = table.column(wanted["text"]).combine_chunks()
    return record_frame(
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


def read_jsonl(path: Path, opts: ReadOptions) -> Iterator[pd.DataFrame]:
    lines = read_line_file(path, None, None, opts.encoding)
    cols = opts.columns
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
    if keys:  # a column no record has is a setting to fix, not a data problem
        require_columns(path, sorted(keys), opts, where=" in any record")
    yield record_frame(texts, labels, splits, lines["source"], lines["line"], reasons)
