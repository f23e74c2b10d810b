"""The linear family: its TF-IDF vectors are scikit-learn's, its LR head is scikit-learn's
LogisticRegression optimum, the model's own forward pass agrees with the fit's sparse matrices,
and the NB head is the NBSVM construction."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from textclf.artifacts import arrow_values
from textclf.families.linear import LinearModel, fit_linear, nb_ratios, sample_weights, tfidf_matrix, tfidf_weights
from textclf.model import EncodingConfig, ModelConfig, encode, idf_weights, predict_proba


@pytest.fixture(scope="module")
def encoded(fixture_split, fixture_vocab):
    train, valid, _ = fixture_split
    enc = EncodingConfig(vocab_size=len(fixture_vocab["tokens"]), bigrams="vocab")
    vt = pa.array(fixture_vocab["tokens"], pa.string())
    out = {}
    for name, df in (("train", train), ("valid", valid)):
        ids, off = encode(arrow_values(df["tokens"]), vt, enc)
        labels = np.array(sorted(set(train["label"])), dtype=object)
        y = np.searchsorted(labels, df["label"].to_numpy(dtype=object))
        out[name] = (
            torch.from_numpy(ids),
            torch.from_numpy(off),
            torch.from_numpy(y.astype(np.int64)),
        )
    return out, enc.num_embeddings


def dense_tfidf(ids, off, idf, v):
    m = tfidf_matrix(ids, off, idf)
    return m.x.to_dense().numpy()


def sklearn_docs(ids, off):
    """The same documents as strings of ids (ids 0/1 dropped: the model gives them no weight)."""
    out = []
    for a, b in zip(off[:-1].tolist(), off[1:].tolist(), strict=True):
        out.append(" ".join(str(i) for i in ids[a:b].tolist() if i > 1))
    return out


def test_tfidf_vectors_are_scikit_learns(encoded):
    data, v = encoded
    ids, off, _ = data["train"]
    docs = sklearn_docs(ids, off)
    vec = TfidfVectorizer(analyzer=str.split, sublinear_tf=True, norm="l2", smooth_idf=True)
    ref = vec.fit_transform(docs)
    idf = idf_weights(ids, off, v)
    cols = np.array([int(t) for t in vec.get_feature_names_out()])
    np.testing.assert_allclose(idf[cols].numpy(), vec.idf_, rtol=1e-5)
    ours = dense_tfidf(ids, off, idf, v)[:, cols]
    np.testing.assert_allclose(ours, ref.toarray(), atol=1e-6)
    # the model's per-id weights sum to the same vector (what prediction and ONNX compute)
    w = tfidf_weights(ids, off[:-1], idf)
    summed = np.zeros((len(off) - 1, v), dtype=np.float64)
    doc = np.repeat(np.arange(len(off) - 1), np.diff(off.numpy()))
    np.add.at(summed, (doc, ids.numpy()), w.numpy())
    np.testing.assert_allclose(summed[:, cols], ref.toarray(), atol=1e-6)


def test_the_lr_head_reaches_scikit_learns_optimum(encoded):
    data, v = encoded
    ids, off, y = data["train"]
    cfg = ModelConfig(type="linear", num_embeddings=v, embed_dim=0, num_classes=2, nb_mix=0.0)
    fitted = fit_linear(ids, off, y, cfg, c=4.0, max_iter=1000)
    assert fitted.converged
    model = LinearModel(cfg)
    model.load_state_dict(fitted.state_dict)
    vids, voff, _ = data["valid"]
    ours = predict_proba(model, vids, voff).numpy()
    idf = idf_weights(ids, off, v)
    x = tfidf_matrix(ids, off, idf).x.to_dense().numpy()
    xv = tfidf_matrix(vids, voff, idf).x.to_dense().numpy()
    # two classes: the softmax over two weight rows pays half the L2 penalty of scikit-learn's
    # single binary weight vector for the same decision function, so C = 4 here is its C = 8
    ref = LogisticRegression(C=8.0, tol=1e-8, max_iter=5000).fit(x, y.numpy()).predict_proba(xv)
    np.testing.assert_allclose(ours, ref, atol=2e-3)
    assert (ours.argmax(1) == ref.argmax(1)).mean() >= 0.99


def test_forward_agrees_with_the_fits_sparse_matrix(encoded):
    data, v = encoded
    ids, off, y = data["train"]
    cfg = ModelConfig(type="linear", num_embeddings=v, embed_dim=0, num_classes=2, nb_mix=0.5)
    model = LinearModel(cfg)
    model.load_state_dict(fit_linear(ids, off, y, cfg, c=8.0).state_dict)
    vids, voff, _ = data["valid"]
    x = tfidf_matrix(vids, voff, model.idf).x
    with torch.no_grad():
        lr = torch.softmax(x @ model.lr_weight + model.lr_bias, 1)
        nb = torch.softmax(x @ model.nb_weight + model.nb_bias, 1)
    expected = 0.5 * lr + 0.5 * nb
    np.testing.assert_allclose(predict_proba(model, vids, voff).numpy(), expected.numpy(), atol=1e-5)


def test_nb_ratios_and_balanced_weights_by_hand():
    # 3 documents, ids 2..4; class 0 = docs 0,1; class 1 = doc 2
    ids = torch.tensor([2, 3, 2, 4])
    off = torch.tensor([0, 2, 3, 4])
    y = torch.tensor([0, 0, 1])
    m = tfidf_matrix(ids, off, torch.ones(5))
    r = nb_ratios(m, y, 2, alpha=1.0)
    # class 0: df = [2, 1, 0] on ids 2..4 (+1 each) vs others [0, 0, 1] (+1 each)
    p, q = np.array([0, 0, 2, 1, 0.0]) + 1, np.array([0, 0, 0, 0, 1.0]) + 1
    expected = np.log((p / p.sum()) / (q / q.sum()))
    np.testing.assert_allclose(r[:, 0].numpy(), expected, rtol=1e-6)
    w = sample_weights(y, 2, "balanced")
    assert w.mean().item() == pytest.approx(1.0)
    assert w[2].item() == pytest.approx(2 * w[0].item())
    assert torch.equal(sample_weights(y, 2, "none"), torch.ones(3))


def test_a_document_of_unknown_tokens_gets_the_prior(encoded):
    data, v = encoded
    ids, off, y = data["train"]
    cfg = ModelConfig(type="linear", num_embeddings=v, embed_dim=0, num_classes=2)
    model = LinearModel(cfg)
    model.load_state_dict(fit_linear(ids, off, y, cfg, c=8.0).state_dict)
    p = predict_proba(model, torch.tensor([1, 1, 0]), torch.tensor([0, 3, 3])).numpy()
    assert np.isfinite(p).all()
    np.testing.assert_allclose(p[0], p[1], atol=1e-6)  # unknowns only = an empty document
