"""The encoder family (textclf.families.encoder) on a random BERT built in the test: the encoder
against transformers' own, the refusals, the cache, frozen training through the train stage's
code, the bundle, prediction, ONNX parity, fine-tuning with resume."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow as pa
import pytest
import torch

from tests.fixtures import make_tiny_encoder
from textclf.artifacts import arrow_values
from textclf.bundle import load_bundle, save_bundle
from textclf.errors import InputError, ParamsError
from textclf.evaluate import model_proba
from textclf.families import encoder as fam
from textclf.params import CleanParams, TrainParams
from textclf.predict import Predictor
from textclf.training.run import Prepared, bundle_config, train_config

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, fixture_split):
    texts = [t for df in fixture_split for t in df["text"].tolist()]
    return make_tiny_encoder(tmp_path_factory.mktemp("enc") / "tiny-bert", texts)


def encoder_params(path, **over) -> TrainParams:
    enc = {"path": str(path), "mode": "frozen", "max_len": 32, "batch_tokens": 512} | over
    return TrainParams.model_validate(
        {"model": "encoder", "device": "cpu", "encoder": enc, "autotune": {"budget_s": 0.0}}
    )


# --- the encoder itself ------------------------------------------------------------------------


def test_bert_matches_transformers(tiny):
    """Same weights, same padded batch: textclf's BERT gives transformers' hidden states."""
    from transformers import BertModel

    ref = BertModel.from_pretrained(str(tiny), attn_implementation="eager").eval()
    ours = fam.load_encoder(fam.load_source(tiny))
    tok = fam.TextTokenizer((tiny / "tokenizer.json").read_text(), 32)
    ids, mask = fam.padded(tok(["great room", "the price was awful and the screen broken", "ok"]), tok.pad_id)
    with torch.no_grad():
        want = ref(input_ids=ids, attention_mask=mask).last_hidden_state
        got = ours.hidden(ids, mask)
        pooled = ours(ids, mask)
    m = mask.bool()
    assert torch.allclose(got[m], want[m], atol=1e-5)
    mean = (want * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    expected = torch.nn.functional.normalize(mean, dim=1)
    assert torch.allclose(pooled, expected, atol=1e-3)  # rounded to float16 precision
    assert torch.equal(pooled, pooled.half().float())


def test_embeddings_do_not_depend_on_the_batch(tiny):
    enc = fam.load_encoder(fam.load_source(tiny))
    tok = fam.TextTokenizer((tiny / "tokenizer.json").read_text(), 32)
    texts = ["great room", "the price was awful and the screen broken", "ok", "love it"]
    together = fam.embed(enc, tok, texts, batch_tokens=4096)
    alone = np.concatenate([fam.embed(enc, tok, [t]) for t in texts])
    np.testing.assert_array_equal(together, alone)


def test_buckets_cover_every_document_within_the_token_budget():
    lengths = np.array([5, 40, 3, 40, 17, 1, 9, 33])
    batches = fam.buckets(lengths, batch_tokens=64)
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(lengths)))
    for b in batches:
        assert len(b) * lengths[b].max() <= 64 or len(b) == 1


# --- where the model comes from ----------------------------------------------------------------


def test_refusals(tmp_path, tiny):
    with pytest.raises(ParamsError, match="hub id.*huggingface-cli download sentence-transformers/all-MiniLM-L6-v2"):
        fam.load_source("sentence-transformers/all-MiniLM-L6-v2")
    with pytest.raises(InputError, match="does not exist.*make encoder"):
        fam.load_source(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no config.json"):
        fam.load_source(tmp_path / "empty")
    remote = shutil.copytree(tiny, tmp_path / "remote")
    cfg = json.loads((remote / "config.json").read_text())
    (remote / "config.json").write_text(json.dumps(cfg | {"auto_map": {"AutoModel": "x.Model"}}))
    with pytest.raises(InputError, match="trust_remote_code"):
        fam.load_source(remote)
    other = shutil.copytree(tiny, tmp_path / "other")
    (other / "config.json").write_text(json.dumps(cfg | {"model_type": "roberta"}))
    with pytest.raises(InputError, match="model_type 'roberta' is not supported"):
        fam.load_source(other)
    pickled = shutil.copytree(tiny, tmp_path / "pickled")
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")
    with pytest.raises(InputError, match="pickled weights are never loaded"):
        fam.load_source(pickled)
    notok = shutil.copytree(tiny, tmp_path / "notok")
    (notok / "tokenizer.json").unlink()
    with pytest.raises(InputError, match="no tokenizer.json"):
        fam.load_source(notok)


def test_the_placeholder_folder_says_what_to_do():
    from tests.fixtures import ROOT

    with pytest.raises(InputError, match="no config.json.*make encoder"):
        fam.load_source(ROOT / TrainParams().encoder.path)


# --- the cache -----------------------------------------------------------------------------------


def test_cache_computes_each_text_once(tmp_path, tiny):
    source = fam.load_source(tiny)
    emb = fam.Embedder(source, 32, 512, tmp_path)
    first = emb(["great room", "awful", "great room"])
    again = fam.Embedder(source, 32, 512, tmp_path)  # a new run: reads the shard
    calls = []
    vecs, computed = again.cache.get(
        ["awful", "great room", "new text"], lambda t: calls.append(t) or fam.embed(again.encoder, again.tokenizer, t)
    )
    assert computed == 1 and calls == [["new text"]]
    np.testing.assert_array_equal(vecs[:2], first[[1, 0]])
    other = fam.Embedder(source, 16, 512, tmp_path)  # another max_len: another key
    assert other.cache.folder != emb.cache.folder


# --- frozen training, the bundle, prediction, ONNX ---------------------------------------------------


@pytest.fixture(scope="module")
def encoder_bundle(tmp_path_factory, tiny, fixture_split, fixture_vocab):
    train, valid, _ = fixture_split
    p = encoder_params(tiny)
    data = Prepared(train, valid, fixture_vocab, html=True, cache_root=None)
    out = train_config(data, p, CPU)
    config = bundle_config(out.cfg, out.enc, out.labels, fixture_vocab, CleanParams(), p, out.result, "cpu")
    config["encoder"] = out.encoder["meta"]
    path = tmp_path_factory.mktemp("bundle") / "classifier"
    save_bundle(path, out.result.best_state, config, fixture_vocab, data.embedder(p).source.bundle_files())
    return path, out


def test_frozen_fit_learns(encoder_bundle):
    _, out = encoder_bundle
    assert out.cfg.type == "encoder" and out.encoder["meta"]["mode"] == "frozen"
    assert out.result.state.best_f1 > 0.9
    assert float(out.result.best_state["emb_weight"].abs().sum()) > 0  # the embedding is used


def test_bundle_is_safe_and_complete(encoder_bundle):
    path, _ = encoder_bundle
    manifest = json.loads((path / "manifest.json").read_text())
    assert {"model.safetensors", "config.json", "vocab.json", "tokenizer.json", "encoder-LICENSE"} <= set(
        manifest["files"]
    )
    bundle = load_bundle(path)
    assert bundle.config["encoder"]["pooling"] == "mean" and bundle.config["encoder"]["normalize"]
    (path / "tokenizer.json").write_text("{}")  # tampered: refused by the manifest
    try:
        with pytest.raises(InputError, match="tokenizer.json does not match its SHA-256"):
            load_bundle(path)
    finally:
        (path / "tokenizer.json").write_bytes(bundle.files["tokenizer.json"])


def test_predict_matches_evaluate_and_onnx(encoder_bundle, fixture_split, tmp_path):
    from textclf.onnx import export

    path, _ = encoder_bundle
    test = fixture_split[2]
    bundle = load_bundle(path)
    texts = arrow_values(test["text"])
    want = model_proba(bundle, arrow_values(test["tokens"]), texts=texts)
    got = Predictor(bundle).predict_proba(texts)
    np.testing.assert_allclose(got, want, atol=1e-6)
    report = export(bundle, arrow_values(test["tokens"]), test["label"].to_numpy(dtype=object), tmp_path, texts=texts)
    assert report["passed"] and report["parity_max_abs_diff"] <= 1e-4
    assert "macro_f1_delta" in report["int8"] and isinstance(report["int8"]["shipped"], bool)
    onnx = Predictor(bundle, runtime="onnx", onnx_path=tmp_path / "model.onnx")
    labels = want.argmax(1)
    for size in (1, 2, 17):  # padded batches of several sizes: the same labels
        onnx.batch_size = size
        chunks = [onnx.predict_proba(texts[s : s + size]) for s in range(0, len(texts), size)]
        probs = np.concatenate(chunks)
        assert np.abs(probs - want).max() <= 1e-4
        assert (probs.argmax(1) == labels).all()


def test_predict_text_invariances(encoder_bundle):
    """Case, surrounding whitespace and markup carry no meaning: same probabilities."""
    path, _ = encoder_bundle
    pred = Predictor(load_bundle(path))
    base = pred.predict_proba(["great room, love it"])
    for variant in ["GREAT ROOM, LOVE IT", "  great room, love it  ", "<p>great room, love it</p>"]:
        np.testing.assert_allclose(pred.predict_proba([variant]), base, atol=1e-6)


# --- fine-tuning ----------------------------------------------------------------------------------


def _finetune(tiny, fixture_split, fixture_vocab, device, checkpoint=None, stop_after=None, amp=False):
    from textclf.training.run import prepare

    train, valid, _ = fixture_split
    p = encoder_params(tiny, mode="finetune", epochs=3, lr=1e-3, layer_decay=0.9)
    tr, va, cfg, _, _ = prepare(train, valid, fixture_vocab, p)
    cfg = fam.model_config(p, cfg.num_embeddings, cfg.num_classes, "finetune")
    source = fam.load_source(tiny)
    model = fam.EncoderModel(cfg, source.meta())
    model.encoder.load_state_dict(fam.load_encoder(source).state_dict())
    tok = fam.TextTokenizer(source.tokenizer, 32)
    data = Prepared(train, valid, fixture_vocab, cache_root=None)
    ft = [fam.FinetuneData(tok(data.texts(s)), e.ids, e.offsets, e.labels) for s, e in (("train", tr), ("valid", va))]

    def on_epoch(rec):
        if stop_after is not None and rec["epoch"] == stop_after:
            raise KeyboardInterrupt  # a run killed after this epoch's checkpoint... (see below)

    return fam.fit_finetune(
        model,
        ft[0],
        ft[1],
        p.encoder,
        pad_id=tok.pad_id,
        device=device,
        seed=0,
        amp=amp,
        patience=10,
        checkpoint=checkpoint,
        on_epoch=on_epoch,
        fingerprint="f",
    )


def _finetune_and_resume(tiny, fixture_split, fixture_vocab, device, tmp_path, amp):
    full = _finetune(tiny, fixture_split, fixture_vocab, device, amp=amp)
    ckpt = tmp_path / "encoder.pt"
    # on_epoch runs before the epoch's checkpoint is written: stopping at epoch 2 leaves epoch 1's
    with pytest.raises(KeyboardInterrupt):
        _finetune(tiny, fixture_split, fixture_vocab, device, checkpoint=ckpt, stop_after=2, amp=amp)
    assert ckpt.is_file()
    resumed = _finetune(tiny, fixture_split, fixture_vocab, device, checkpoint=ckpt, amp=amp)
    assert not ckpt.exists()  # a finished run removes its checkpoint
    assert [r["epoch"] for r in resumed[1]] == [1, 2, 3]
    for k, v in full[0].items():
        assert torch.equal(v, resumed[0][k]), k
    return full


def test_finetune_learns_and_resumes_to_the_same_weights(tiny, fixture_split, fixture_vocab, tmp_path):
    full = _finetune_and_resume(tiny, fixture_split, fixture_vocab, CPU, tmp_path, amp=False)
    assert full[3] > 0.8  # best valid macro-F1
    assert float(full[0]["linear.lr_weight"].abs().sum()) == 0  # the TF-IDF table stays unused


def test_layer_wise_lr_decay(tiny):
    source = fam.load_source(tiny)
    from textclf.model import ModelConfig

    model = fam.EncoderModel(ModelConfig("encoder", 10, 0, 2), source.meta())
    groups = fam.param_groups(model, 1.0, 0.5, 0.01)
    lrs = sorted({g["lr"] for g in groups})
    assert lrs == [0.25, 0.5, 1.0]  # embeddings, layer 1, layer 2 + head (2 layers)
    assert all(g["weight_decay"] == 0 for g in groups if all(p.ndim == 1 for p in g["params"]))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_bf16_finetune_resumes(tiny, fixture_split, fixture_vocab, tmp_path):
    assert fam.autocast_dtype(torch.device("cuda"), True) in (torch.bfloat16, torch.float16)
    _finetune_and_resume(tiny, fixture_split, fixture_vocab, torch.device("cuda"), tmp_path, amp=True)


def test_autocast_only_on_cuda():
    assert fam.autocast_dtype(CPU, True) is None
    assert fam.mode_for("auto", CPU) == "frozen"
    assert fam.mode_for("auto", torch.device("cuda")) == "finetune"
    assert fam.mode_for("finetune", CPU) == "finetune"


__all__ = ["pa"]


def test_serve_and_predict_cli_with_an_encoder_bundle(encoder_bundle, fixture_split, tmp_path):
    """`textclf serve` over real HTTP on 127.0.0.1, torch and ONNX runtimes, and `textclf predict`
    in a subprocess: the same labels as the in-process predictor."""
    import subprocess
    import sys

    import httpx

    from tests.fixtures import ROOT
    from tests.pipelines import LIMITS, serving
    from textclf.onnx import export
    from textclf.serve import create_app

    path, _ = encoder_bundle
    bundle = load_bundle(path)
    test = fixture_split[2]
    texts = test["text"].tolist()[:6]
    want = Predictor(bundle).predict(texts)
    export(
        bundle,
        arrow_values(test["tokens"]),
        test["label"].to_numpy(dtype=object),
        tmp_path,
        texts=arrow_values(test["text"]),
    )
    for runtime in ("torch", "onnx"):
        pred = Predictor(bundle, runtime=runtime, onnx_path=tmp_path / "model.onnx")
        with serving(create_app(pred, LIMITS, None, None)) as base:
            r = httpx.post(f"{base}/predict", json={"texts": texts}, timeout=30)
            assert r.status_code == 200, r.text
            assert [p["label"] for p in r.json()["predictions"]] == [w["label"] for w in want]
            assert httpx.get(f"{base}/metadata", timeout=10).json()["model"]["type"] == "encoder"
    out = subprocess.run(
        [sys.executable, "-m", "textclf.cli", "predict", "--bundle", str(path), *texts],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert [json.loads(line)["label"] for line in out.stdout.splitlines()] == [w["label"] for w in want]


def test_the_valid_predictions_of_a_frozen_trial_reuse_the_cached_embeddings(
    tiny, fixture_split, fixture_vocab, monkeypatch
):
    """The one-SE rule scores trials on valid: a frozen trial's valid embeddings are already in
    memory, so scoring it embeds nothing again (it once re-embedded the valid split)."""
    from textclf.training.run import valid_predictions

    train, valid, _ = fixture_split
    p = encoder_params(tiny)
    data = Prepared(train, valid, fixture_vocab, cache_root=None)
    out = train_config(data, p, CPU)
    for name in ("embed", "predict_proba"):  # either would run the encoder over the valid split again
        monkeypatch.setattr(fam, name, lambda *a, **k: pytest.fail("embedded again"))
    y, pred = valid_predictions(data, out)
    assert len(y) == len(valid) and (y == pred).mean() > 0.9
    assert "tokenizer" not in out.encoder  # derivable from the source: not kept twice
