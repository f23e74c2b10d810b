"""Code tests for the torch modules and the encoding/batching they are fed with."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch

from textclf.families.bag import BagModel
from textclf.families.cnn import CNNModel
from textclf.model import (
    EncodingConfig,
    ModelConfig,
    encode,
    gather_bag,
    gather_padded,
    idf_weights,
)

VOCAB = pa.array(["<pad>", "<unk>", "a", "b", "c", "a b"])
TOKENS = pa.array([["a", "b", "zzz"], ["c"], ["b", "a", "b"]], pa.list_(pa.string()))


def test_encode_unigrams_maps_unknown_tokens_to_unk():
    ids, off = encode(TOKENS, VOCAB, EncodingConfig(vocab_size=6))
    assert ids.tolist() == [2, 3, 1, 4, 3, 2, 3]
    assert off.tolist() == [0, 3, 4, 7]


def test_encode_vocab_bigrams_appends_known_pairs_per_document():
    ids, off = encode(TOKENS, VOCAB, EncodingConfig(vocab_size=6, bigrams="vocab"))
    # doc0: a b zzz + (a b); doc1: c; doc2: b a b + (a b)  — "b zzz" and "b a" are unknown pairs
    assert ids.tolist() == [2, 3, 1, 5, 4, 3, 2, 3, 5]
    assert off.tolist() == [0, 4, 5, 9]


def test_encode_hashed_bigrams_land_in_buckets_after_the_vocab():
    ids, off = encode(TOKENS, VOCAB, EncodingConfig(vocab_size=6, bigrams="hashed", hash_buckets=10))
    assert off.tolist() == [0, 5, 6, 11]
    bigram_ids = np.concatenate([ids[3:5], ids[9:11]])
    assert ((bigram_ids >= 6) & (bigram_ids < 16)).all()
    assert ids[3] == ids[10]  # "a b" hashes the same in both documents (doc2: "b a", "a b")


def test_gather_bag_matches_per_document_slices():
    ids = torch.arange(100, 120)
    offsets = torch.tensor([0, 3, 3, 10, 12, 20])
    idx = torch.tensor([3, 0, 4, 2])
    flat, boff = gather_bag(ids, offsets, idx)
    expected = [ids[offsets[i] : offsets[i + 1]] for i in idx.tolist()]
    assert flat.tolist() == torch.cat(expected).tolist()
    assert boff.tolist() == [0, 2, 5, 13]


def test_gather_padded_pads_with_zero_and_truncates():
    ids = torch.arange(1, 11)
    offsets = torch.tensor([0, 2, 7, 10])
    out = gather_padded(ids, offsets, torch.tensor([0, 1, 2]), max_len=4)
    assert out.tolist() == [[1, 2, 0, 0], [3, 4, 5, 6], [8, 9, 10, 0]]


def test_forward_shapes_bag_and_cnn():
    cfg = ModelConfig(type="bag", num_embeddings=50, embed_dim=8, num_classes=3, hidden_dim=5, dropout=0.1)
    ids, off = torch.randint(0, 50, (20,)), torch.tensor([0, 5, 12])
    assert BagModel(cfg)(ids, off).shape == (3, 3)
    idf = ModelConfig(type="bag", num_embeddings=50, embed_dim=8, num_classes=3, weighting="idf")
    assert BagModel(idf)(ids, off).shape == (3, 3)
    cnn = ModelConfig(
        type="cnn",
        num_embeddings=50,
        embed_dim=8,
        num_classes=4,
        kernel_sizes=(2, 3),
        num_filters=6,
    )
    assert CNNModel(cnn)(torch.randint(1, 50, (7, 2))).shape == (
        7,
        4,
    )  # shorter than the widest kernel


def test_idf_weights_match_scikit_learn_smoothing():
    # 3 documents: id 2 in all of them, id 3 in one
    ids = torch.tensor([2, 3, 2, 2, 2])
    off = torch.tensor([0, 2, 4, 5])
    w = idf_weights(ids, off, 5)
    assert torch.isclose(w[2], torch.tensor(1.0))
    assert torch.isclose(w[3], torch.log(torch.tensor(4.0 / 2.0)) + 1)


def test_cnn_scores_do_not_depend_on_batch_padding():
    torch.manual_seed(0)
    cfg = ModelConfig(
        type="cnn",
        num_embeddings=30,
        embed_dim=8,
        num_classes=2,
        kernel_sizes=(2, 3),
        num_filters=4,
    )
    model = CNNModel(cfg).eval()
    short = torch.tensor([[5, 6, 7]])
    padded = torch.tensor([[5, 6, 7, 0, 0, 0, 0, 0], [1, 2, 3, 4, 5, 6, 7, 8]])
    with torch.no_grad():
        assert torch.allclose(model(short)[0], model(padded)[0], atol=1e-6)


# --- the two lookup paths (a dict for small batches; Arrow + an integer pair index for large)


def _reference_encode(docs, vocab: list[str], pairs: bool):
    """The encoding by its definition, one string at a time."""
    first = {}
    for i, t in enumerate(vocab):
        first.setdefault(t, i)
    ids, offsets = [], [0]
    for toks in docs:
        toks = toks or []
        ids += [first.get(t, 1) for t in toks]
        if pairs:
            ids += [first[f"{a} {b}"] for a, b in zip(toks[:-1], toks[1:], strict=True) if f"{a} {b}" in first]
        offsets.append(len(ids))
    return ids, offsets


def _corpus(seed: int, n: int):
    rng = np.random.default_rng(seed)
    words = ["a", "b", "c", "房", "间", "好", "<unk>", "<pad>", "ü" * 20, "x" * 40, "zz", "oov", "oov2"]
    docs = []
    for _ in range(n):
        k = int(rng.integers(0, 12))
        docs.append([words[i] for i in rng.integers(0, len(words), k)] if k else ([] if rng.random() < 0.5 else None))
    # in the vocabulary: some words, bigrams of known words, and bigrams whose words are not
    # entries themselves ("oov zz": oov is no unigram entry; "ü…ü x…x": long ones)
    vocab = [
        "<pad>",
        "<unk>",
        "a",
        "b",
        "c",
        "房",
        "间",
        "zz",
        "x" * 40,
        "a b",
        "b a",
        "房 间",
        "oov zz",
        "zz oov2",
        f"{'ü' * 20} {'x' * 40}",
        "a a",
        "not a token pair",
    ]
    return docs, vocab


def test_encode_large_and_small_paths_give_the_ids_of_the_definition(monkeypatch):
    from textclf.model import VocabIndex

    for seed in range(3):
        docs, vocab = _corpus(seed, 400)
        tokens = pa.array(docs, pa.list_(pa.string()))
        for pairs in (False, True):
            enc = EncodingConfig(vocab_size=len(vocab), bigrams="vocab" if pairs else "none")
            want_ids, want_off = _reference_encode(docs, vocab, pairs)
            small = VocabIndex(vocab)
            monkeypatch.setattr(small, "SMALL", 10**9)  # always the dict
            large = VocabIndex(vocab)
            monkeypatch.setattr(large, "SMALL", 0)  # dictionary-encoded, distinct words by the dict
            arrow = VocabIndex(vocab)
            monkeypatch.setattr(arrow, "SMALL", 0)
            monkeypatch.setattr(arrow, "DISTINCT", 0)  # distinct words by pc.index_in
            for index in (small, large, arrow):
                ids, off = encode(tokens, index, enc)
                assert ids.tolist() == want_ids and off.tolist() == want_off
            # a slice of the batch (Arrow offsets that do not start at 0)
            ids, off = encode(tokens.slice(37, 101), large, enc)
            ref = _reference_encode(docs[37:138], vocab, pairs)
            assert (ids.tolist(), off.tolist()) == ref


def test_term_counts_is_the_count_matrix_of_each_document():
    from collections import Counter

    from textclf.onnx_runtime import term_counts

    rng = np.random.default_rng(0)
    lengths = rng.integers(0, 30, 200)
    lengths[[0, 5, -1]] = 0  # empty documents, at the start and the end too
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    for top in (50, 2**30):  # 2**30: one document per int32 key space, the chunked path
        ids = rng.integers(0, top, int(offsets[-1])).astype(np.int64)
        ids[::7] = top - 1
        got_ids, got_off, got_counts = term_counts(ids, offsets)
        want_ids, want_off, want_counts = [], [0], []
        for d in range(len(lengths)):
            c = Counter(ids[offsets[d] : offsets[d + 1]].tolist())
            want_ids += sorted(c)
            want_counts += [c[k] for k in sorted(c)]
            want_off.append(len(want_ids))
        assert got_ids.tolist() == want_ids and got_off.tolist() == want_off
        assert got_counts.dtype == np.float32 and got_counts.tolist() == want_counts
    empty = term_counts(np.zeros(0, np.int64), np.zeros(4, np.int64))
    assert [len(x) for x in empty] == [0, 4, 0]
