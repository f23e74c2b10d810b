"""vocab: the train split → data/processed/vocab.json.

Built from the train split only, so test documents never shape the features. Order is
deterministic (count desc, token asc); `<pad>` = 0 and `<unk>` = 1; with `ngrams: 2` adjacent
token pairs ("a b") are counted too. The content hash goes into the model bundle."""

from __future__ import annotations

import pyarrow.parquet as pq

from textclf.artifacts import InputError, dask_client, run_main, write_json
from textclf.data.vocab import (
    SPECIALS,
    build_vocab,
    check_vocab,
    count_batches,
    count_dask,
    log,
)
from textclf.params import load_params
from textclf.paths import TRAIN, VOCAB


def main() -> None:
    def body():
        params = load_params("vocab")
        if not TRAIN.exists():
            raise InputError(f"{TRAIN}: not found (run dvc repro split)")
        if params.engine == "dask":
            with dask_client() as client:
                counts = count_dask(
                    client,
                    str(TRAIN.resolve()),
                    pq.ParquetFile(TRAIN).num_row_groups,
                    params.ngrams,
                )
        else:
            pf = pq.ParquetFile(TRAIN)
            if params.chunk_rows:
                batches = (
                    b.column("tokens") for b in pf.iter_batches(batch_size=params.chunk_rows, columns=["tokens"])
                )
            else:
                batches = (
                    pf.read_row_group(i, columns=["tokens"]).column("tokens").combine_chunks()
                    for i in range(pf.num_row_groups)
                )
            counts = count_batches(batches, params.ngrams)
            if counts is None and pf.num_row_groups:  # an empty split: specials only, as unchunked
                tokens = pf.read_row_group(0, columns=["tokens"]).column("tokens").combine_chunks()
                counts = count_batches([tokens], params.ngrams)
        if counts is None:
            raise InputError(f"{TRAIN}: the train split is empty")
        vocab = check_vocab(build_vocab(counts, params))
        write_json(vocab, VOCAB)
        log.info(
            "vocab: %d entries (%d specials), hash %s",
            len(vocab["tokens"]),
            len(SPECIALS),
            vocab["hash"][:12],
        )

    run_main("vocab", body)


if __name__ == "__main__":
    main()
