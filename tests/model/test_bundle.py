"""The model bundle: round trip, integrity, no pickle."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from textclf.bundle import BundleError, load_bundle, save_bundle
from textclf.data.vocab import vocab_hash
from textclf.model import ModelConfig, build_model

TOKENS = ["<pad>", "<unk>", "好", "差"]


def _save(path):
    cfg = ModelConfig(type="bag", num_embeddings=4, embed_dim=3, num_classes=2)
    torch.manual_seed(0)
    model = build_model(cfg)
    vocab = {"tokens": TOKENS, "counts": [0, 0, 5, 4], "hash": vocab_hash(TOKENS)}
    config = {
        "model": cfg.to_dict(),
        "labels": ["neg", "pos"],
        "vocab_hash": vocab["hash"],
        "encoding": {"vocab_size": 4, "bigrams": "none", "hash_buckets": 0},
    }
    save_bundle(path, model.state_dict(), config, vocab)
    return model


def test_round_trip(tmp_path):
    model = _save(tmp_path / "b")
    b = load_bundle(tmp_path / "b")
    assert b.labels == ["neg", "pos"]
    assert b.config["format"] == "textclf-bundle/1"
    from textclf.bundle import run_metadata

    run = run_metadata("cpu")  # versions and time live beside the bundle (reports/train/run.json), not in it
    assert "torch" in run["versions"] and run["created"] and "versions" not in b.config
    loaded = b.build_model()
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k])
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == [
        "config.json",
        "manifest.json",
        "model.safetensors",
        "vocab.json",
    ]


def test_overwrite_is_atomic_and_complete(tmp_path):
    _save(tmp_path / "b")
    _save(tmp_path / "b")
    assert [p.name for p in tmp_path.iterdir()] == ["b"]  # no temp or .old directories left
    load_bundle(tmp_path / "b")


@pytest.mark.parametrize("name", ["model.safetensors", "config.json", "vocab.json"])
def test_tampered_file_is_refused(tmp_path, name):
    _save(tmp_path / "b")
    f = tmp_path / "b" / name
    f.write_bytes(f.read_bytes() + b" ")
    with pytest.raises(BundleError, match="SHA-256"):
        load_bundle(tmp_path / "b")


def test_manifest_cannot_point_outside_the_bundle(tmp_path):
    _save(tmp_path / "b")
    (tmp_path / "secret.json").write_text("{}")
    m = json.loads((tmp_path / "b" / "manifest.json").read_text())
    m["files"]["../secret.json"] = "0" * 64
    (tmp_path / "b" / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="not a plain file name"):
        load_bundle(tmp_path / "b")


def test_missing_bundle_and_missing_manifest(tmp_path):
    with pytest.raises(BundleError, match="no model bundle"):
        load_bundle(tmp_path / "nope")
    _save(tmp_path / "b")
    (tmp_path / "b" / "manifest.json").unlink()
    with pytest.raises(BundleError, match="manifest.json missing"):
        load_bundle(tmp_path / "b")


def test_loading_never_unpickles(tmp_path, monkeypatch):
    _save(tmp_path / "b")

    def boom(*a, **k):
        raise AssertionError("unpickling attempted")

    monkeypatch.setattr(pickle, "load", boom)
    monkeypatch.setattr(pickle, "loads", boom)
    monkeypatch.setattr(torch, "load", boom)
    load_bundle(tmp_path / "b").build_model()


def test_a_bundle_records_no_time_host_or_versions_so_a_rebuild_has_the_same_hash(tmp_path):
    """Two saves of the same weights and config, a second apart, are byte-identical."""
    import time

    cfg = ModelConfig(type="bag", num_embeddings=4, embed_dim=2, num_classes=2)
    state = {k: v.detach().clone() for k, v in build_model(cfg).state_dict().items()}
    vocab = {"tokens": TOKENS, "counts": [0, 0, 5, 4], "hash": vocab_hash(TOKENS)}
    config = {
        "model": cfg.to_dict(),
        "labels": ["neg", "pos"],
        "vocab_hash": vocab["hash"],
        "encoding": {"vocab_size": 4, "bigrams": "none", "hash_buckets": 0},
    }
    a = save_bundle(tmp_path / "a", state, config, vocab)
    time.sleep(1.1)
    b = save_bundle(tmp_path / "b", state, config, vocab)
    for name in ("model.safetensors", "config.json", "vocab.json", "manifest.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    text = (a / "config.json").read_text()
    assert "created" not in text and "versions" not in text


def test_the_bundle_bytes_do_not_depend_on_the_order_of_record_keys(tmp_path):
    """A resumed autotune restores its records with sorted keys, a fresh search keeps insertion
    order: the bundle (and so dvc.lock) must come out the same either way (a clone's fresh rebuild
    once differed from a lock made after a resumed search, in config.json's key order alone)."""
    import torch

    from textclf.bundle import save_bundle

    vocab = {"tokens": ["<pad>", "<unk>", "a"], "hash": "h"}
    state = {"w": torch.zeros(2)}
    a = {"labels": ["x"], "vocab_hash": "h", "training": {"history": [{"epoch": 1, "lr": 0.0, "valid_loss": 0.5}]}}
    b = {"vocab_hash": "h", "training": {"history": [{"valid_loss": 0.5, "lr": 0.0, "epoch": 1}]}, "labels": ["x"]}
    save_bundle(tmp_path / "a", state, a, vocab)
    save_bundle(tmp_path / "b", state, b, vocab)
    for name in ("config.json", "manifest.json", "model.safetensors", "vocab.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
