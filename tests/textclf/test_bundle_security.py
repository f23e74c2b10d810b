"""Bundle security: nothing is ever unpickled, files that do not match the manifest are refused,
and no path in a bundle reaches outside it. Every refusal is a BundleError with a clear message
(never a traceback from json, safetensors or torch)."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from tests.pipelines import build_pipeline
from textclf.bundle import BundleError, load_bundle
from textclf.predict import Predictor


@pytest.fixture(scope="module")
def original(tmp_path_factory) -> Path:
    return build_pipeline(tmp_path_factory.mktemp("sec"), docs=None, epochs=1).bundle


@pytest.fixture()
def bundle(original, tmp_path) -> Path:
    """A fresh copy to tamper with."""
    return Path(shutil.copytree(original, tmp_path / "bundle"))


def manifest(path: Path) -> dict:
    return json.loads((path / "manifest.json").read_text(encoding="utf-8"))


def write_manifest(path: Path, m: dict) -> None:
    (path / "manifest.json").write_text(json.dumps(m), encoding="utf-8")


def rehash(path: Path, name: str) -> None:
    """What an attacker who can write the bundle would do: update the manifest to match."""
    m = manifest(path)
    m["files"][name] = hashlib.sha256((path / name).read_bytes()).hexdigest()
    write_manifest(path, m)


def test_an_intact_bundle_loads(bundle):
    assert load_bundle(bundle).labels == ["neg", "pos"]


@pytest.mark.parametrize("name", ["model.safetensors", "config.json", "vocab.json"])
def test_a_tampered_file_is_refused(bundle, name):
    data = bytearray((bundle / name).read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit
    (bundle / name).write_bytes(bytes(data))
    with pytest.raises(BundleError, match=f"{name} does not match its SHA-256 in manifest.json"):
        load_bundle(bundle)
    with pytest.raises(BundleError):
        Predictor(bundle)


@pytest.mark.parametrize("evil", ["../outside.json", "/etc/hostname", "sub/../../x", "..", ".", "", "a\x00b", 7])
def test_manifest_names_cannot_leave_the_bundle(bundle, evil):
    (bundle.parent / "outside.json").write_text("{}", encoding="utf-8")
    m = manifest(bundle)
    m["files"][evil] = "0" * 64
    # a JSON object key is always a string: a number lands as "7", which is a plain name (missing)
    write_manifest(bundle, m)
    with pytest.raises(BundleError, match="not a plain file name|listed in the manifest is missing"):
        load_bundle(bundle)


def test_a_listed_file_may_not_be_a_symlink_out_of_the_bundle(bundle):
    outside = bundle.parent / "elsewhere.json"
    shutil.copy(bundle / "vocab.json", outside)  # same bytes: the hash alone would pass
    (bundle / "vocab.json").unlink()
    os.symlink(outside, bundle / "vocab.json")
    with pytest.raises(BundleError, match="symbolic link"):
        load_bundle(bundle)


def test_the_manifest_itself_may_not_be_a_symlink(bundle):
    outside = bundle.parent / "m.json"
    shutil.move(bundle / "manifest.json", outside)
    os.symlink(outside, bundle / "manifest.json")
    with pytest.raises(BundleError, match="symbolic link"):
        load_bundle(bundle)


def test_a_fifo_is_refused_without_blocking(bundle):
    (bundle / "vocab.json").unlink()
    os.mkfifo(bundle / "vocab.json")
    with pytest.raises(BundleError, match="not a regular file"):
        load_bundle(bundle)


@pytest.mark.parametrize(
    "m, message",
    [
        ([1, 2], "expected a JSON object"),
        ({"format": "textclf-bundle/1", "files": ["model.safetensors"]}, "must map file names"),
        ({"format": "textclf-bundle/1", "files": {"model.safetensors": 1}}, "must map file names"),
        ({"format": "textclf-bundle/0", "files": {}}, "bundle format 'textclf-bundle/0'"),
        (
            {"format": "textclf-bundle/1", "files": {"config.json": "0" * 64}},
            "manifest does not list",
        ),
    ],
)
def test_malformed_manifests_are_refused(bundle, m, message):
    write_manifest(bundle, m)
    with pytest.raises(BundleError, match=message):
        load_bundle(bundle)


def test_broken_but_rehashed_files_are_refused_clearly(bundle):
    (bundle / "config.json").write_text("{not json", encoding="utf-8")
    rehash(bundle, "config.json")
    with pytest.raises(BundleError, match="config.json: not valid JSON"):
        load_bundle(bundle)


class _Payload:
    """Runs code when unpickled: what a malicious checkpoint does."""

    marker: str = ""

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "pwned"))


def test_a_pickle_in_place_of_the_weights_is_never_unpickled(bundle, tmp_path):
    marker = tmp_path / "pwned"
    payload = _Payload()
    payload.marker = str(marker)
    torch.save({"weights": payload}, bundle / "model.safetensors")  # a torch pickle archive
    rehash(bundle, "model.safetensors")
    with pytest.raises(BundleError, match="not a valid safetensors file"):
        load_bundle(bundle)
    (bundle / "model.safetensors").write_bytes(pickle.dumps(payload))  # a bare pickle
    rehash(bundle, "model.safetensors")
    with pytest.raises(BundleError, match="not a valid safetensors file"):
        load_bundle(bundle)
    assert not marker.exists()


def test_loading_and_predicting_never_call_pickle_or_torch_load(original, monkeypatch):
    calls = []

    def forbidden(name):
        def f(*args, **kwargs):
            calls.append(name)
            raise AssertionError(f"{name} called while loading a bundle")

        return f

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, forbidden(f"pickle.{name}"))
    monkeypatch.setattr(torch, "load", forbidden("torch.load"))
    monkeypatch.setattr(torch.serialization, "load", forbidden("torch.serialization.load"))
    predictor = Predictor(original)
    assert predictor.predict(["房间很好"])[0]["label"] in ("neg", "pos")
    assert calls == []
