"""Tabular raw sources: CSV/TSV (pyarrow.csv), JSONL and Parquet, one record per row.

Columns are chosen by `ingest.text_column` / `label_column` / `split_column`; a row that cannot be a
record (a field that does not parse, a missing column value) comes back with a `reason`."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from textclf.errors import InputError
from textclf.params import IngestParams
from textclf.records import is_binary, read_bytes, read_line_file, record_frame
from textclf.text import decode

# ---------------------------------------------------------------------------------------------
# tabular formats


def source_columns(params: IngestParams) -> dict[str, str | None]:
    return {"text": params.text_column, "label": params.label_column, "split": params.split_column}


def select_columns(df: pd.DataFrame, path: Path, params: IngestParams, first_line: int) -> pd.DataFrame:
    wanted = {k: v for k, v in source_columns(params).items() if v is not None}
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

    return record_frame(
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
    data = read_bytes(path)
    if is_binary(data, params.encoding):
        return record_frame([f"<binary file, {len(data)} bytes>"], [None], [None], [str(path)], [None], ["binary"])
    utf8 = _as_utf8(data, params.encoding)
    if utf8 is None:
        raise InputError(f"{path}: not decodable as UTF-8 or GB18030 (set ingest.encoding)")
    if not utf8.strip():
        return record_frame([], [], [], [], [], [])
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
    wanted = {k: v for k, v in source_columns(params).items() if v is not None}
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


def read_jsonl(path: Path, params: IngestParams) -> pd.DataFrame:
    lines = read_line_file(path, None, None, params.encoding)
    cols = {k: v for k, v in source_columns(params).items() if v is not None}
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
    return record_frame(texts, labels, splits, lines["source"], lines["line"], reasons)


def read_parquet_source(path: Path, params: IngestParams) -> pd.DataFrame:
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise InputError(f"{path}: not a readable Parquet file: {err}") from None
    return select_columns(table.to_pandas(), path, params, first_line=1)
