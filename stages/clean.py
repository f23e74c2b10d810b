"""clean: documents → data/interim/clean.parquet (+ rejected_clean.parquet, reports/data/clean.json).

Strips HTML, replaces URLs/e-mails with placeholder tokens, lowercases, removes punctuation and
digits, tokenises and removes stopwords — all in `textclf.text.clean_batch`, the same function
prediction uses. Documents with no token left are quarantined as `empty_after_cleaning`."""

from __future__ import annotations

import contextlib

import pandas as pd

from textclf import schemas
from textclf.artifacts import (
    ChunkWriter,
    dask_client,
    parquet_batches,
    read_parquet,
    row_group_count,
    run_main,
    write_json,
    write_parquet,
)
from textclf.data.clean import (
    clean,
    clean_chunked,
    log,
)
from textclf.errors import InputError
from textclf.params import CleanParams, load_params
from textclf.paths import CLEAN, DOCUMENTS
from textclf.paths import CLEAN_STATS as STATS
from textclf.paths import REJECTED_CLEAN as REJECTED
from textclf.text import load_stopwords


def main() -> None:
    def body():
        params = load_params("clean")
        try:
            stopwords = load_stopwords(params)
        except FileNotFoundError as err:
            raise InputError(str(err)) from None
        if params.chunk_rows or params.engine == "dask":
            return _main_chunked(params, stopwords)
        result = clean(read_parquet(DOCUMENTS), params, stopwords)
        out = schemas.validate(result.clean, schemas.Clean, "clean", str(CLEAN))
        rejected = schemas.validate(result.rejected, schemas.Rejected, "clean", str(REJECTED))
        write_parquet(out, CLEAN)
        write_parquet(rejected, REJECTED)
        write_json(result.stats, STATS)
        log.info(
            "cleaned %d documents: kept %d, quarantined %d (empty after cleaning), %d tokens",
            result.stats["read"],
            result.stats["kept"],
            result.stats["quarantined"],
            result.stats["tokens"],
        )

    run_main("clean", body)


def _main_chunked(params: CleanParams, stopwords: frozenset[str]) -> None:
    """main() with `clean.chunk_rows` > 0 or `clean.engine: dask`: locally, batches of chunk_rows
    rows; on Dask, one task per Parquet row group of the input (read by the worker)."""
    with contextlib.ExitStack() as stack:
        if params.engine == "dask":
            client = stack.enter_context(dask_client())
            path = str(DOCUMENTS.resolve())
            parts = [(path, i) for i in range(row_group_count(DOCUMENTS))]
        else:
            client = None
            parts = parquet_batches(DOCUMENTS, params.chunk_rows)
        rows = params.chunk_rows or 100_000
        clean_out = stack.enter_context(ChunkWriter(CLEAN, row_group_size=rows))
        rej_out = stack.enter_context(ChunkWriter(REJECTED, row_group_size=rows))

        def write(out: pd.DataFrame, rejected: pd.DataFrame) -> None:
            clean_out.write(schemas.validate(out, schemas.Clean, "clean", str(CLEAN)))
            rej_out.write(schemas.validate(rejected, schemas.Rejected, "clean", str(REJECTED)))

        stats = clean_chunked(parts, params, stopwords, write, client)
        if not clean_out.started:  # no documents: the empty outputs the in-memory path writes
            result = clean(read_parquet(DOCUMENTS), params, stopwords)
            write(result.clean, result.rejected)
    write_json(stats, STATS)
    log.info(
        "cleaned %d documents: kept %d, quarantined %d (empty after cleaning), %d tokens (%s)",
        stats["read"],
        stats["kept"],
        stats["quarantined"],
        stats["tokens"],
        params.engine,
    )


if __name__ == "__main__":
    main()
