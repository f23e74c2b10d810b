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

from tests.fixtures import ROOT
from textclf.artifacts import arrow_values
from textclf.data.clean import clean
from textclf.data.ingest import ingest
from textclf.data.split import split
from textclf.data.vocab import build_vocab, count_tokens
from textclf.model import build_model, encode, predict_proba
from textclf.params import load_params
from textclf.sources import read_records
from textclf.text import clean_batch, load_stopwords, normalize
from textclf.training.run import Prepared, train_model

POSITIVE = [
    "质量很好，非常满意",
    "很喜欢，推荐购买",
    "酒店服务很好，房间干净舒适",
    "物流很快，东西不错",
]
NEGATIVE = ["质量太差了，非常失望", "很难用，后悔买了", "房间很脏，服务态度很差", "垃圾，千万别买"]


@pytest.fixture(scope="module")
def sample_model():
    """The train stage's own path (autotune included, fewer trials for test time) on the sample."""
    path = ROOT / "params.yaml"
    ip, cp, sp, vp = (load_params(s, path) for s in ("ingest", "clean", "split", "vocab"))
    tp = load_params("train", path)
    tp = tp.model_copy(update={"device": "cpu", "autotune": tp.autotune.model_copy(update={"trials": 4})})
    docs = ingest(read_records(ip.model_copy(update={"source": str(ROOT / "data/sample/reviews-zh")})), ip).documents
    stop = load_stopwords(cp)
    parts, _ = split(clean(docs, cp, stop).clean, sp)
    vocab = build_vocab(count_tokens(arrow_values(parts["train"]["tokens"]), vp.ngrams), vp)
    out = train_model(Prepared(parts["train"], parts["valid"], vocab), tp, torch.device("cpu"))
    model = build_model(out.cfg)
    model.load_state_dict(out.result.best_state)
    vt = pa.array(vocab["tokens"], pa.string())

    def predict(texts: list[str]) -> np.ndarray:
        tokens = clean_batch(normalize(texts), cp, stop)
        ids, off = encode(tokens, vt, out.enc)
        return predict_proba(model, torch.from_numpy(ids), torch.from_numpy(off)).numpy()

    return predict, out.labels, parts["test"]


def test_minimum_functionality(sample_model):
    predict, labels, _ = sample_model
    pred = np.asarray(labels)[predict(POSITIVE + NEGATIVE).argmax(1)]
    assert pred.tolist() == ["pos"] * len(POSITIVE) + ["neg"] * len(NEGATIVE)


# Invariance only to what carries no meaning. Punctuation is out of it: "!!!", "?!" and
# emoticons are tokens the model may weigh (they carry sentiment).
@pytest.mark.parametrize(
    "change",
    [
        lambda t: t + "   ",
        lambda t: "\t" + t + "\n",
        lambda t: t.replace("，", " ， "),
        lambda t: f"<p>{t}</p>",
        lambda t: f"<div class='review'><b>{t}</b><!-- imported --></div>",
        lambda t: t.upper(),
    ],
    ids=[
        "trailing-spaces",
        "tab-newline",
        "spaced-comma",
        "paragraph-tag",
        "nested-markup",
        "upper-case",
    ],
)
def test_whitespace_markup_and_case_do_not_change_a_prediction(sample_model, change):
    predict, _, test = sample_model
    texts = test["text"].head(300).tolist()
    base = predict(texts)
    changed = predict([change(t) for t in texts])
    assert (base.argmax(1) == changed.argmax(1)).all()
    np.testing.assert_allclose(base, changed, atol=1e-6)


def test_which_url_a_text_links_to_does_not_matter(sample_model):
    predict, _, test = sample_model
    texts = test["text"].head(300).tolist()
    a = predict([f"{t} http://example.com/item/1" for t in texts])
    b = predict([f"{t} https://shop.example.org/p?id=99&ref=mail" for t in texts])
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_emphasis_is_a_signal_not_noise(sample_model):
    """Kept punctuation reaches the model: "!!!" can move a probability (it need not flip a label)."""
    predict, labels, _ = sample_model
    plain, loud = predict(["质量很好"]), predict(["质量很好！！！"])
    assert not np.allclose(plain, loud)
    assert labels[plain.argmax()] == labels[loud.argmax()] == "pos"


def test_full_width_and_half_width_forms_agree(sample_model):
    predict, _, _ = sample_model
    a = predict(["ＧＯＯＤ质量很好１２３", "bad 很差"]).argmax(1)
    b = predict(["GOOD质量很好123", "BAD 很差"]).argmax(1)
    assert (a == b).all()
