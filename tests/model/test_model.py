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
