"""Reading and writing artifacts: atomic Parquet/JSON writes, validation reports, stage entry.

A stage never leaves a half-written file: everything is written to a temp file in the target
directory and renamed into place. `run_main` turns the errors users can cause (bad params, bad
input, a broken data contract) into a one-paragraph message and a non-zero exit, not a traceback.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

log = logging.getLogger("textclf")


class InputError(ValueError):
    """The user's input cannot be read as asked (missing file or column, bad format)."""


class ContractError(RuntimeError):
    """An artifact broke its pandera contract; details are in reports/validation/<stage>.json."""

    def __init__(self, stage: str, summary: str, report: Path):
        super().__init__(f"{stage}: output violates its data contract:\n{summary}\n(details: {report})")
        self.stage = stage
        self.summary = summary
        self.report = report


@contextmanager
def atomic_path(path: Path | str):
    """Yield a temp path next to `path`; rename it over `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_parquet(df: pd.DataFrame | pa.Table, path: Path | str, row_group_size: int = 100_000) -> None:
    table = df if isinstance(df, pa.Table) else pa.Table.from_pandas(df, preserve_index=False)
    # No pandas metadata: any Parquet reader (pandas, polars, DuckDB, Spark) reads the file as plain
    # Arrow types; `read_parquet` below restores our pandas dtypes.
    table = table.replace_schema_metadata(None)
    # An all-null object column would be written as Arrow `null`; it is a string column.
    for i, field in enumerate(table.schema):
        if pa.types.is_null(field.type):
            table = table.set_column(i, field.name, table.column(i).cast(pa.string()))
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, row_group_size=row_group_size, compression="zstd")


def read_parquet(path: Path | str, columns: list[str] | None = None) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: not found (run the stage that writes it: dvc repro)")
    try:
        table = pq.read_table(path, columns=columns)
    except (pa.ArrowInvalid, OSError) as err:
        raise InputError(f"{path}: not a readable Parquet file: {err}") from None
    return to_pandas(table)


def to_pandas(table: pa.Table) -> pd.DataFrame:
    """Arrow → pandas: list columns stay Arrow lists (no Python objects per row), integers stay
    nullable integers."""

    def mapper(t: pa.DataType):
        if pa.types.is_list(t) or pa.types.is_large_list(t):
            return pd.ArrowDtype(t)
        if t == pa.int64():
            return pd.Int64Dtype()
        return None

    return table.to_pandas(types_mapper=mapper)


def write_json(obj, path: Path | str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n", encoding="utf-8")


def read_json(path: Path | str):
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: not found (run the stage that writes it: dvc repro)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: not valid JSON: {err}") from None


def sha256_file(path: Path | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def setup_logging() -> None:
    level = os.environ.get("TEXTCLF_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def run_main(stage: str, body: Callable[[], None]) -> None:
    """Run a stage's main body; user-caused failures exit 1 with a clear message, no traceback."""
    from stages.params import ParamsError

    setup_logging()
    try:
        body()
    except ContractError as err:
        log.error("%s", err)
        sys.exit(1)
    except (ParamsError, InputError) as err:
        log.error("%s: %s", stage, err)
        sys.exit(1)
