"""ingest: raw sources → data/interim/documents.parquet (+ rejected_ingest.parquet, ingest.json).

Every record read is accounted for: it becomes a document, collapses into an identical document
with the same label (a duplicate), or is quarantined with a reason — and
`read = kept + duplicates + quarantined` holds in reports/data/ingest.json."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

import pandas as pd

from textclf import schemas
from textclf.artifacts import (
    ChunkWriter,
    dask_client,
    run_main,
    write_json,
    write_parquet,
)
from textclf.data.ingest import (
    ingest,
    ingest_chunked,
    log,
)
from textclf.labels import read_corrections
from textclf.params import IngestParams, load_params
from textclf.paths import CORRECTIONS, DOCUMENTS
from textclf.paths import INGEST_STATS as STATS
from textclf.paths import REJECTED_INGEST as REJECTED
from textclf.sources import iter_record_batches, read_records


def main() -> None:
    def body():
        params = load_params("ingest")
        if params.chunk_rows or params.engine == "dask":
            return _main_chunked(params)
        records = read_records(params)
        log.info("read %d records from %s", len(records), params.source)
        result = ingest(records, params, read_corrections(CORRECTIONS))
        docs = schemas.validate(result.documents, schemas.Documents, "ingest", str(DOCUMENTS))
        rejected = schemas.validate(result.rejected, schemas.Rejected, "ingest", str(REJECTED))
        write_parquet(docs, DOCUMENTS)
        write_parquet(rejected, REJECTED)
        write_json(result.stats, STATS)
        s = result.stats
        _log_relabelled(s)
        log.info(
            "read %d = kept %d + duplicates %d + quarantined %d",
            s["read"],
            s["kept"],
            s["duplicates"],
            s["quarantined"],
        )

    run_main("ingest", body)


def _main_chunked(params: IngestParams) -> None:
    """main() with `ingest.chunk_rows` > 0 or `ingest.engine: dask`: batch by batch, each
    written chunk validated, outputs renamed into place only when all of them are complete."""
    chunk_rows = params.chunk_rows or 100_000
    with contextlib.ExitStack() as stack:
        client = stack.enter_context(dask_client()) if params.engine == "dask" else None
        docs_out = stack.enter_context(ChunkWriter(DOCUMENTS, row_group_size=chunk_rows))
        rej_out = stack.enter_context(ChunkWriter(REJECTED, row_group_size=chunk_rows))
        spill_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=".ingest-", dir=DOCUMENTS.parent)))

        def write(docs: pd.DataFrame, rejected: pd.DataFrame) -> None:
            docs_out.write(schemas.validate(docs, schemas.Documents, "ingest", str(DOCUMENTS)))
            rej_out.write(schemas.validate(rejected, schemas.Rejected, "ingest", str(REJECTED)))

        stats = ingest_chunked(
            iter_record_batches(params, chunk_rows),
            params,
            spill_dir / "prepared.parquet",
            write,
            client,
            read_corrections(CORRECTIONS),
        )
    write_json(stats, STATS)
    _log_relabelled(stats)
    log.info(
        "read %d = kept %d + duplicates %d + quarantined %d (%s, %d rows a batch)",
        stats["read"],
        stats["kept"],
        stats["duplicates"],
        stats["quarantined"],
        params.engine,
        chunk_rows,
    )


def _log_relabelled(stats: dict) -> None:
    if stats["reviewed"]:
        log.info(
            "%s: %d document(s) reviewed, %d relabelled",
            CORRECTIONS,
            stats["reviewed"],
            stats["relabelled"],
        )


if __name__ == "__main__":
    main()
