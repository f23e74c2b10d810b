"""vocab: the train split → data/processed/vocab.json.

Built from the train split only, so test documents never shape the features. Order is
deterministic (count desc, token asc); `<pad>` = 0 and `<unk>` = 1; with `ngrams: 2` adjacent
token pairs ("a b") are counted too. The content hash goes into the model bundle.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from textclf.artifacts import read_json
from textclf.errors import InputError
from textclf.parallel import map_threads, thread_count
from textclf.params import VocabParams
from textclf.paths import VOCAB

log = logging.getLogger("textclf.vocab")


PAD, UNK = "<pad>", "<unk>"
SPECIALS = (PAD, UNK)


def count_tokens(tokens: pa.ListArray, ngrams: int) -> pa.Table:
    """(token, count) over all documents, as an Arrow table (an exact, mergeable reduction).

    Each token string is hashed once (dictionary encoding); bigrams are counted as pairs of
    dictionary codes, and only the distinct pairs are joined into "a b" strings — the same
    counts as counting `bigrams(tokens)` strings, without building a string per bigram."""
    if isinstance(tokens, pa.ChunkedArray):
        tokens = tokens.combine_chunks()
    values = pc.list_flatten(tokens)  # respects slicing; a null list contributes nothing
    encoded = pc.dictionary_encode(values)
    words = encoded.dictionary
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    counts = np.bincount(codes, minlength=len(words))
    table = pa.table({"token": words, "count": pa.array(counts, pa.int64())})
    if ngrams != 2 or len(codes) < 2:
        return table
    lengths = pc.fill_null(pc.list_value_length(tokens), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    keep = np.ones(len(codes) - 1, dtype=bool)  # a pair (i, i+1) unless i is a document's last token
    last = np.cumsum(lengths)[lengths > 0] - 1
    keep[last[last < len(codes) - 1]] = False
    pairs = pc.value_counts(pa.array(codes[:-1][keep] * len(words) + codes[1:][keep]))
    pair = pairs.field("values").to_numpy()
    joined = pc.binary_join_element_wise(
        words.take(pa.array(pair // len(words))), words.take(pa.array(pair % len(words))), " "
    )
    return pa.concat_tables([table, pa.table({"token": joined, "count": pairs.field("counts")})])


def count_batches(batches: Iterable[pa.ListArray], ngrams: int) -> pa.Table | None:
    """`count_tokens` over batches (Parquet row groups, partitions), merged as it goes: memory is
    bounded by the vocabulary, not the corpus. None when there were no batches."""
    counts = None
    for tokens in batches:
        part = count_tokens(tokens, ngrams)
        counts = merge_counts(counts, part)
    return counts


def merge_counts(*parts: pa.Table | None) -> pa.Table | None:
    """Sum (token, count) tables: the vocabulary's reduction (associative, so any tree works)."""
    parts = [p for p in parts if p is not None]
    if not parts:
        return None
    counts = pa.concat_tables(parts)
    return counts.group_by("token").aggregate([("count", "sum")]).rename_columns(["token", "count"])


def count_row_group(path: str, i: int, ngrams: int) -> pa.Table:
    """`count_tokens` on one row group, read where it runs (a Dask worker)."""
    tokens = pq.ParquetFile(path).read_row_group(i, columns=["tokens"]).column("tokens").combine_chunks()
    return count_tokens(tokens, ngrams)


def count_row_groups(path: str, row_groups: int, ngrams: int, threads: int | None = None) -> pa.Table | None:
    """`count_row_group` for every row group, `threads` at a time (read and counted on their own
    threads), merged after each wave: memory stays bounded by the vocabulary."""
    n = threads or thread_count()
    counts = None
    for start in range(0, row_groups, n):
        wave = range(start, min(start + n, row_groups))
        counts = merge_counts(counts, *map_threads(lambda i: count_row_group(path, i, ngrams), wave, n))
    return counts


def count_dask(client, path: str, row_groups: int, ngrams: int, fan_in: int = 8) -> pa.Table | None:
    """Counts on a Dask cluster: one task per row group, merged in a tree of `merge_counts` tasks
    on the workers; only the final table comes back."""
    level = [client.submit(count_row_group, path, i, ngrams, pure=False) for i in range(row_groups)]
    if not level:
        return None
    while len(level) > 1:
        level = [client.submit(merge_counts, *level[j : j + fan_in], pure=False) for j in range(0, len(level), fan_in)]
    return level[0].result()


def build_vocab(counts: pa.Table, params: VocabParams) -> dict:
    table = counts.filter(pc.greater_equal(counts["count"], params.min_freq))
    table = table.filter(pc.invert(pc.is_in(table["token"], value_set=pa.array(SPECIALS))))
    table = table.sort_by([("count", "descending"), ("token", "ascending")]).slice(0, params.max_size)
    tokens = [*SPECIALS, *table["token"].to_pylist()]
    freq = [0, 0, *table["count"].to_pylist()]
    return {
        "tokens": tokens,
        "counts": freq,
        "ngrams": params.ngrams,
        "min_freq": params.min_freq,
        "max_size": params.max_size,
        "hash": vocab_hash(tokens),
    }


def vocab_hash(tokens: list[str]) -> str:
    return hashlib.sha256(json.dumps(tokens, ensure_ascii=False).encode("utf-8")).hexdigest()


def check_vocab(vocab: dict, path: Path | str = VOCAB) -> dict:
    """The vocab contract: unique tokens, ids = positions, specials first, hash matches."""
    tokens = vocab.get("tokens")
    problems = []
    if not isinstance(tokens, list) or not tokens:
        problems.append("tokens: missing or empty")
    else:
        if tokens[:2] != list(SPECIALS):
            problems.append(f"tokens: must start with {list(SPECIALS)}, got {tokens[:2]}")
        if len(set(tokens)) != len(tokens):
            problems.append(f"tokens: {len(tokens) - len(set(tokens))} duplicate token(s)")
        if len(vocab.get("counts", [])) != len(tokens):
            problems.append("counts: length differs from tokens")
        if vocab.get("hash") != vocab_hash(tokens):
            problems.append("hash: does not match the tokens")
    if problems:
        raise InputError(f"{path}: invalid vocabulary: " + "; ".join(problems))
    return vocab


def load_vocab(path: Path | str = VOCAB) -> dict:
    return check_vocab(read_json(path), path)
