from __future__ import annotations

import pyarrow as pa
import pytest

from tests.model.util import split_frames
from textclf.artifacts import arrow_values
from textclf.data.vocab import build_vocab, count_tokens
from textclf.params import TrainParams
from textclf.training.run import prepare


@pytest.fixture(scope="session")
def fixture_split():
    """(train, valid, test) frames of the fixture corpus, through the real data-half cores."""
    return split_frames()


@pytest.fixture(scope="session")
def fixture_vocab(fixture_split):
    from textclf.params import VocabParams

    train = fixture_split[0]
    return build_vocab(count_tokens(arrow_values(train["tokens"]), 2), VocabParams(ngrams=2))


@pytest.fixture()
def small_params():
    return TrainParams(
        model="bag",
        bigrams="hashed",
        hash_buckets=1000,
        optimizer="adam",
        lr=0.02,
        batch_size=32,
        epochs=4,
        patience=10,
        device="cpu",
        bag={"embed_dim": 16, "dropout": 0.0},
        cnn={"embed_dim": 16, "dropout": 0.0},
        weight_decay=0.0,
        label_smoothing=0.0,
    )


@pytest.fixture()
def prepared(fixture_split, fixture_vocab, small_params):
    train, valid, _ = fixture_split
    return prepare(train, valid, fixture_vocab, small_params)


__all__ = ["pa"]
