"""vocab: the train split → data/processed/vocab.json.

Built from the train split only, so test documents never shape the features. Order is
deterministic (count desc, token asc); `<pad>` = 0 and `<unk>` = 1; with `ngrams: 2` adjacent
token pairs ("a b") are counted too. The content hash goes into the model bundle."""

from __future__ import annotations

from textclf.artifacts import dask_client, parquet_file, run_main, write_json
from textclf.data.vocab import (
    SPECIALS,
    build_vocab,
    check_vocab,
    count_batches,
    count_dask,
    count_row_groups,
    log,
)
from textclf.errors import ContractError, InputError
from textclf.params import load_params
from textclf.paths import TRAIN, VOCAB


def main() -> None:
    def body():
        params = load_params("vocab")
        pf = parquet_file(TRAIN)
        if params.engine == "dask":
            with dask_client() as client:
                counts = count_dask(
                    client,
                    str(TRAIN.resolve()),
                    pf.num_row_groups,
                    params.ngrams,
                )
        else:
            if params.chunk_rows:
                batches = (
                    b.column("tokens") for b in pf.iter_batches(batch_size=params.chunk_rows, columns=["tokens"])
                )
                counts = count_batches(batches, params.ngrams)
            else:
                counts = count_row_groups(str(TRAIN), pf.num_row_groups, params.ngrams)
            if counts is None and pf.num_row_groups:  # an empty split: specials only, as unchunked
                tokens = pf.read_row_group(0, columns=["tokens"]).column("tokens").combine_chunks()
                counts = count_batches([tokens], params.ngrams)
        if counts is None:
            raise InputError(f"{TRAIN}: the train split is empty")
        try:
            vocab = check_vocab(build_vocab(counts, params))
        except InputError as err:
            raise ContractError("vocab", str(err), None) from None
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
