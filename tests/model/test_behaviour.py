"""Model behaviour on the sample corpus (Made-With-ML style): invariance and minimum functionality.

A model is trained in-process on the embedded sample with the project's default params (epochs
capped for test time), and raw texts go through the same path prediction uses: normalise →
clean (the bundle's settings) → encode → model.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from stages.clean import clean
from stages.ingest import ingest
from stages.model import build_model, encode, predict_proba
from stages.params import load_params
from stages.sources import read_records
from stages.split import split
from stages.text import clean_batch, load_stopwords, normalize
from stages.train import fit, prepare
from stages.vocab import build_vocab, count_tokens
from tests.fixtures import ROOT

POSITIVE = ["质量很好，非常满意", "很喜欢，推荐购买", "酒店服务很好，房间干净舒适", "物流很快，东西不错"]
NEGATIVE = ["质量太差了，非常失望", "很难用，后悔买了", "房间很脏，服务态度很差", "垃圾，千万别买"]


@pytest.fixture(scope="module")
def sample_model():
    path = ROOT / "params.yaml"
    ip, cp, sp, vp = (load_params(s, path) for s in ("ingest", "clean", "split", "vocab"))
    tp = load_params("train", path).model_copy(update={"epochs": 3, "device": "cpu"})
    docs = ingest(read_records(ip.model_copy(update={"source": "sample:reviews-zh"})), ip).documents
    stop = load_stopwords(cp)
    parts, _ = split(clean(docs, cp, stop).clean, sp)
    vocab = build_vocab(count_tokens(parts["train"]["tokens"].array._pa_array.combine_chunks(), vp.ngrams), vp)
    tr, va, cfg, enc, labels = prepare(parts["train"], parts["valid"], vocab, tp)
    result = fit(tr, va, cfg, tp, torch.device("cpu"))
    model = build_model(cfg)
    model.load_state_dict(result.best_state)
    vt = pa.array(vocab["tokens"], pa.string())

    def predict(texts: list[str]) -> np.ndarray:
        tokens = clean_batch(normalize(texts), cp, stop)
        ids, off = encode(tokens, vt, enc)
        return predict_proba(model, torch.from_numpy(ids), torch.from_numpy(off)).numpy()

    return predict, labels, parts["test"]


def test_minimum_functionality(sample_model):
    predict, labels, _ = sample_model
    pred = np.asarray(labels)[predict(POSITIVE + NEGATIVE).argmax(1)]
    assert pred.tolist() == ["pos"] * len(POSITIVE) + ["neg"] * len(NEGATIVE)


@pytest.mark.parametrize("suffix", ["!", "。", "！！！", "   ", "\t", "…", "?"])
def test_trailing_punctuation_or_whitespace_does_not_flip_a_prediction(sample_model, suffix):
    predict, _, test = sample_model
    texts = test["text"].head(300).tolist()
    base = predict(texts).argmax(1)
    changed = predict([t + suffix for t in texts]).argmax(1)
    assert (base == changed).all()


def test_full_width_and_half_width_forms_agree(sample_model):
    predict, _, _ = sample_model
    a = predict(["ＧＯＯＤ质量很好１２３", "bad 很差"]).argmax(1)
    b = predict(["GOOD质量很好123", "BAD 很差"]).argmax(1)
    assert (a == b).all()
