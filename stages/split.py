"""split: clean documents → data/processed/{train,valid,test}.parquet (+ reports/data/split.json).

No leakage: documents whose cleaned token sequences are identical form one group (`group_id`, a
hash of the token sequence) and a group always lands in one split. Stable as data grows: a
group's split comes from a hash of (group_id, seed) alone, so adding documents never moves an
existing one. Predefined splits from the source are honoured for the whole group."""

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
from textclf.data.split import (
    leak_error,
    leaked_groups,
    log,
    split,
    split_chunked,
)
from textclf.parallel import map_threads
from textclf.params import SplitParams, load_params
from textclf.paths import CLEAN
from textclf.paths import PROCESSED as OUT_DIR
from textclf.paths import SPLIT_STATS as STATS


def main() -> None:
    def body():
        params = load_params("split")
        if params.chunk_rows or params.engine == "dask":
            return _main_chunked(params)
        parts, stats = split(read_parquet(CLEAN), params)
        # validate all three before writing any: a failing stage leaves the old outputs whole
        parts = {
            name: schemas.validate(part, schemas.SplitDocs, "split", str(OUT_DIR / f"{name}.parquet"))
            for name, part in parts.items()
        }
        leaked = leaked_groups(parts)
        if leaked:
            raise leak_error(leaked)
        map_threads(lambda item: write_parquet(item[1], OUT_DIR / f"{item[0]}.parquet"), parts.items())
        _finish(stats)

    run_main("split", body)


def _finish(stats: dict) -> None:
    write_json(stats, STATS)
    for name, part in stats["splits"].items():
        if part["max_share_deviation"] > 0.03:  # hash assignment: balanced in expectation only
            log.warning(
                "split %s: a class share is %.1f points off its overall share",
                name,
                100 * part["max_share_deviation"],
            )
    log.info(
        "split %d documents (%d groups): %s; leaked groups: %d",
        stats["documents"],
        stats["groups"],
        ", ".join(f"{k} {v['documents']}" for k, v in stats["splits"].items()),
        stats["leaked_groups"],
    )


def _main_chunked(params: SplitParams) -> None:
    """main() with `split.chunk_rows` > 0 or `split.engine: dask`: two passes over clean.parquet
    (batches of chunk_rows rows locally, row groups on Dask); the three outputs are renamed into
    place together, only when all are complete and valid."""
    with contextlib.ExitStack() as stack:
        if params.engine == "dask":
            client = stack.enter_context(dask_client())
            path = str(CLEAN.resolve())
            n = row_group_count(CLEAN)

            def parts():
                return [(path, i) for i in range(n)]
        else:
            client = None

            def parts():
                return parquet_batches(CLEAN, params.chunk_rows)

        rows = params.chunk_rows or 100_000
        outs = {
            s: stack.enter_context(ChunkWriter(OUT_DIR / f"{s}.parquet", row_group_size=rows)) for s in schemas.SPLITS
        }

        def write(out: dict[str, pd.DataFrame]) -> None:
            for name, part in out.items():
                outs[name].write(schemas.validate(part, schemas.SplitDocs, "split", str(OUT_DIR / f"{name}.parquet")))

        stats = split_chunked(parts, params, write, client)
        if not outs["train"].started:  # no rows at all: the empty outputs the in-memory path writes
            write(split(read_parquet(CLEAN), params)[0])
    _finish(stats)


if __name__ == "__main__":
    main()
