"""Reading and writing artifacts: atomic Parquet/JSON writes, validation reports, stage entry.

A stage never leaves a half-written file: everything is written to a temp file in the target
directory and renamed into place. `run_main` turns the errors users can cause (bad params, bad
input, a broken data contract) into a one-paragraph message and a non-zero exit, not a traceback.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import math
import os
import shutil
import sys
import tempfile
from collections import deque
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from textclf.errors import TEMPORARY, ContractError, InputError, TextclfError, exit_code_for

log = logging.getLogger("textclf")


def _read_umask() -> int:
    mask = os.umask(0)  # the only way to read it; done once, at import, before any threads
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def fsync_path(path: Path | str) -> None:
    """Flush a file's (or a directory's entries') data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every file and directory under `root`, directories after their contents."""
    for dirpath, _, files in os.walk(root, topdown=False):
        for name in files:
            fsync_path(Path(dirpath) / name)
        fsync_path(dirpath)


def remove_stale_temps(path: Path) -> None:
    """Temp files a killed writer left beside `path` (`.<name>.*.tmp`). Each output has one
    writer (its stage; DVC runs one stage of a repository at a time), so any that exist when a
    new write of `path` starts are leftovers."""
    for stale in path.parent.glob(f".{glob_escape(path.name)}.*.tmp"):
        if stale.is_file() and not stale.is_symlink():
            stale.unlink(missing_ok=True)


def glob_escape(name: str) -> str:

    return glob.escape(name)


@contextmanager
def atomic_path(path: Path | str):
    """Yield a temp path next to `path`; rename it over `path` only if the block succeeds. The
    data and the rename are fsynced: after a crash the file is the old one or the new one whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    # mkstemp makes the file 0600: give it the mode the replaced file had, else the usual default
    os.chmod(tmp, path.stat().st_mode & 0o7777 if path.exists() else 0o666 & ~_UMASK)
    try:
        yield Path(tmp)
        fsync_path(tmp)
        os.replace(tmp, path)
        fsync_path(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def temp_dir_for(dest: Path) -> Path:
    """A new temp directory beside `dest` for `replace_dir`, after removing the ones a killed
    writer left (`.<name>.*`: one writer per output, so they are leftovers)."""

    dest.parent.mkdir(parents=True, exist_ok=True)
    for stale in dest.parent.glob(f".{glob_escape(dest.name)}.*"):
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    tmp.chmod(0o777 & ~_UMASK)  # mkdtemp's 0700 would stay on the output after the swap
    return tmp


def replace_dir(tmp: Path, dest: Path) -> None:
    """Swap a fully written directory `tmp` into place at `dest` (the old one is removed after).
    Its files are fsynced before the swap, and the swap itself after."""

    fsync_tree(tmp)
    old = None
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dest, old)
    os.replace(tmp, dest)
    fsync_path(dest.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_bytes(path: Path | str, data: bytes) -> None:
    """Replace a file's content atomically (temp file beside it + rename)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


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
        # no column statistics: nothing reads them (no predicate push-down here), and min/max of
        # the text and token columns is a third of the write time
        pq.write_table(table, tmp, row_group_size=row_group_size, compression="zstd", write_statistics=False)


def read_parquet(path: Path | str, columns: list[str] | None = None) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: not found (run the stage that writes it: dvc repro)")
    try:
        table = pq.read_table(path, columns=columns)
    except (pa.ArrowInvalid, OSError) as err:
        raise InputError(f"{path}: not a readable Parquet file: {err}") from None
    return to_pandas(table)


def parquet_file(path: Path | str) -> pq.ParquetFile:
    """A Parquet file opened for reading by row group or batch; InputError when it is not one."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: not found (run the stage that writes it: dvc repro)")
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise InputError(f"{path}: not a readable Parquet file: {err}") from None


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


def _finite(obj):
    """NaN/inf → None: JSON has no NaN, and strict parsers (and DVC's metrics diff) reject it."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        if all(type(v) in _PLAIN for v in obj):  # the common long list (tokens, counts): as is
            return obj
        return [_finite(v) for v in obj]
    return obj


_PLAIN = frozenset({str, int, bool, type(None)})


def write_json(obj, path: Path | str) -> None:
    text = json.dumps(_finite(obj), indent=2, ensure_ascii=False, sort_keys=False, allow_nan=False)
    write_bytes(path, (text + "\n").encode("utf-8"))


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
    """Run a stage's main body and exit with the code of what stopped it (textclf.errors).

    A failure the user can cause (bad params, a broken contract, unreadable input) is one clear
    message without a traceback; anything else is logged with its traceback as a bug (70), or as a
    temporary failure of the OS (75, worth retrying)."""
    setup_logging()
    try:
        body()
    except ContractError as err:
        log.error("%s", err)
        sys.exit(err.exit_code)
    except TextclfError as err:
        log.error("%s: %s", stage, err)
        sys.exit(err.exit_code)
    except Exception as err:  # noqa: BLE001 - the exit code tells a bug from a temporary failure
        code = exit_code_for(err)
        kind = "temporary failure" if code == TEMPORARY else "internal error (a bug: please report it)"
        log.exception("%s: %s: %s: %s", stage, kind, type(err).__name__, err)
        sys.exit(code)


# ---------------------------------------------------------------------------------------------
# chunked execution: bounded-memory writes, batches, and the Dask engine


def arrow_values(column: pd.Series) -> pa.Array:
    """The Arrow array behind an Arrow-backed pandas column (e.g. `tokens`), in one chunk.

    Through the Arrow protocol (`__arrow_array__`), not pandas' private `_pa_array`."""
    data = column.array.__arrow_array__()
    return data.combine_chunks() if isinstance(data, pa.ChunkedArray) else data


def arrow_table(df: pd.DataFrame | pa.Table) -> pa.Table:
    """A frame as the Arrow table `write_parquet` writes: no pandas metadata, no `null` columns."""
    table = df if isinstance(df, pa.Table) else pa.Table.from_pandas(df, preserve_index=False)
    table = table.replace_schema_metadata(None)
    for i, field in enumerate(table.schema):
        if pa.types.is_null(field.type):
            table = table.set_column(i, field.name, table.column(i).cast(pa.string()))
    return table


class ChunkWriter:
    """Write a Parquet file chunk by chunk, atomically: rows go to a temp file next to `path`,
    renamed into place by `commit()`; `abort()` (or an exception in a `with` block) leaves no file.

    Every chunk is cast to the first chunk's schema (a column that is all-null or all-valid in one
    chunk has another Arrow string flavour than in the next), so the file reads like one table.
    """

    def __init__(self, path: Path | str, row_group_size: int = 100_000):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(self.path)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        os.close(fd)
        self.tmp = Path(tmp)
        self.row_group_size = row_group_size
        self.rows = 0
        self._writer: pq.ParquetWriter | None = None

    def write(self, df: pd.DataFrame | pa.Table) -> None:
        table = arrow_table(df)
        if self._writer is None:
            # large_string everywhere: the flavour a column gets when its first chunk has no nulls
            # must not decide the file's schema
            schema = pa.schema(
                [pa.field(f.name, pa.large_string()) if pa.types.is_string(f.type) else f for f in table.schema]
            )
            self._writer = pq.ParquetWriter(self.tmp, schema, compression="zstd", write_statistics=False)
        table = table.cast(self._writer.schema)
        if len(table) or self.rows == 0:
            self._writer.write_table(table, row_group_size=self.row_group_size)
        self.rows += len(table)

    @property
    def started(self) -> bool:
        return self._writer is not None

    def commit(self) -> None:
        if self._writer is None:
            raise RuntimeError(f"{self.path}: nothing was written (write at least one, maybe empty, chunk)")
        self._writer.close()
        fsync_path(self.tmp)
        os.replace(self.tmp, self.path)
        fsync_path(self.path.parent)

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> ChunkWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def parquet_batches(path: Path | str, chunk_rows: int, columns: list[str] | None = None):
    """A Parquet file as pandas frames of at most `chunk_rows` rows (in file order)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: not found (run the stage that writes it: dvc repro)")
    pf = pq.ParquetFile(path)
    for batch in pf.iter_batches(batch_size=chunk_rows, columns=columns):
        yield to_pandas(pa.Table.from_batches([batch]))


def row_group_count(path: Path | str) -> int:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: not found (run the stage that writes it: dvc repro)")
    return pq.ParquetFile(path).num_row_groups


def read_row_group(path: Path | str, i: int, columns: list[str] | None = None) -> pd.DataFrame:
    return to_pandas(pq.ParquetFile(path).read_row_group(i, columns=columns))


@contextmanager
def dask_client():
    """A dask.distributed client: the scheduler at $DASK_SCHEDULER_ADDRESS if set, else a
    LocalCluster started for this stage (one single-threaded worker process per core: the batch
    functions hold the GIL in places, and processes keep them from contending)."""
    from dask.distributed import Client, LocalCluster

    address = os.environ.get("DASK_SCHEDULER_ADDRESS")
    if address:
        log.info("dask: connecting to %s", address)
        with Client(address) as client:
            yield client
        return
    with (
        LocalCluster(
            n_workers=os.cpu_count() or 1,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
        ) as cluster,
        Client(cluster) as client,
    ):
        log.info("dask: LocalCluster with %d workers", len(cluster.workers))
        yield client


def map_batches(fn: Callable, items, client=None, window: int | None = None, **kwargs):
    """`fn(item, **kwargs)` for each item, results in item order. Locally a plain loop; with a
    dask client each call is a task on the cluster, at most `window` in flight (default: two per
    worker), so the results waiting here stay bounded too."""
    if client is None:
        for item in items:
            yield fn(item, **kwargs)
        return

    if window is None:
        window = 2 * max(1, len(client.scheduler_info(n_workers=-1).get("workers", {})))
    pending: deque = deque()
    for item in items:
        pending.append(client.submit(fn, item, pure=False, **kwargs))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()
