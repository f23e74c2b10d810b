"""The model bundle: models/classifier/{model.safetensors, config.json, vocab.json, manifest.json}.

Safe to load from anywhere: weights are safetensors and everything else JSON (nothing is ever
unpickled); `manifest.json` lists every file with its SHA-256 and a bundle whose files do not
match it is refused; file names in the manifest are plain names, so nothing can point outside the
bundle directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy
import pyarrow
import torch
from safetensors import SafetensorError
from safetensors.torch import load, save_file

from textclf import paths
from textclf.artifacts import replace_dir, sha256_file, temp_dir_for
from textclf.errors import InputError
from textclf.model import ModelConfig, build_model

FORMAT = "textclf-bundle/1"
MAX_LEN = 1 << 20  # cnn: tokens per document; a padding width, so bounded like every size
FILES = ("model.safetensors", "config.json", "vocab.json")


class BundleError(InputError):
    """A bundle is missing, incomplete, tampered with, or from an incompatible version."""


@dataclass(frozen=True)
class Bundle:
    path: Path
    config: dict
    vocab: dict
    state_dict: dict[str, torch.Tensor]
    manifest: dict
    files: dict[str, bytes] | None = None  # the other files the manifest lists (the encoder's tokenizer.json)

    @property
    def labels(self) -> list[str]:
        return list(self.config["labels"])

    @property
    def model_config(self) -> ModelConfig:
        return ModelConfig.from_dict(self.config["model"])

    def build_model(self, device: torch.device | str = "cpu") -> torch.nn.Module:
        """The model, built only after its config is checked against the weights' shapes on a
        skeleton that allocates nothing (torch's meta device): a config.json naming a
        10^12-row table is refused, not allocated. The weights' size is bounded by the file's."""
        try:
            cfg = self.model_config
            encoder = self.config.get("encoder")
            with torch.device("meta"):
                skeleton = build_model(cfg, encoder=encoder)
            expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
            got = {k: tuple(v.shape) for k, v in self.state_dict.items()}
            if expected != got:
                diff = sorted(set(expected.items()) ^ set(got.items()))[:4]
                raise ValueError(f"config.json describes other tensors than model.safetensors holds: {diff}")
            if not 0 < cfg.max_len <= MAX_LEN:
                raise ValueError(f"model.max_len {cfg.max_len} is outside 1..{MAX_LEN}")
            model = build_model(cfg, encoder=encoder)
            model.load_state_dict(self.state_dict)
        except (TypeError, ValueError, KeyError, RuntimeError) as err:
            # a bundle that passed its manifest but was written by an incompatible textclf
            raise BundleError(f"{self.path}: model config and weights do not fit this textclf: {err}") from None
        return model.to(device).eval()


def run_metadata(device: str, processes: int = 1, **extra) -> dict:
    """What a training run records outside the bundle (reports/train/run.json, not cached by
    DVC, not in git): when, where and with which libraries it ran."""
    return {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "device": device,
        "processes": processes,
        "versions": _versions(),
        **extra,
    }


def _versions() -> dict:
    import pandas
    import sklearn

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "pandas": pandas.__version__,
        "pyarrow": pyarrow.__version__,
        "scikit-learn": sklearn.__version__,
    }


def save_bundle(
    path: Path | str,
    state_dict: dict[str, torch.Tensor],
    config: dict,
    vocab: dict,
    files: dict[str, bytes] | None = None,
) -> Path:
    """Write the bundle into a temp directory beside `path`, then swap it into place; `files`:
    more members by plain name (the encoder family's tokenizer.json and licence), in the manifest."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir_for(path)
    try:
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in state_dict.items()},
            str(tmp / "model.safetensors"),
        )
        # only what the training inputs decide: no time, host, device or library versions (those go
        # to run_metadata(), an uncached file), so a rebuild reproduces the bundle's hash
        full = {"format": FORMAT, **config}
        # keys sorted: a resumed search restores its records with sorted keys, a fresh one does not;
        # the bytes (and so the bundle's hash) must not depend on which happened
        (tmp / "config.json").write_text(
            json.dumps(full, indent=2, ensure_ascii=False, sort_keys=True), encoding="utf-8"
        )
        (tmp / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        extra = dict(files or {})
        for name, data in extra.items():
            if name in (*FILES, "manifest.json"):
                raise ValueError(f"{name} is a bundle file of its own")
            _member(tmp, name).write_bytes(data)
        names = [*FILES, *sorted(extra)]
        manifest = {"format": FORMAT, "files": {name: sha256_file(tmp / name) for name in names}}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _member(root: Path, name: str) -> Path:
    """A file inside the bundle; names with separators, '..' or links are refused."""
    if not isinstance(name, str) or not name or "\x00" in name or name != Path(name).name or name in (".", ".."):
        raise BundleError(f"{root}: manifest names {name!r}, which is not a plain file name in the bundle")
    p = root / name
    if p.is_symlink():
        raise BundleError(f"{root}: {name} is a symbolic link; bundles hold regular files only")
    if not p.resolve().is_relative_to(root.resolve()):
        raise BundleError(f"{root}: {name} resolves outside the bundle")
    return p


def _read_member(root: Path, name: str) -> bytes:
    """The bytes of one bundle file, read once: the bytes that are hashed are the bytes that are
    parsed (no window in which the file could be swapped between check and use). Opened without
    following links and only if it is a regular file (a FIFO or device would block or never end)."""
    p = _member(root, name)
    try:
        st = p.lstat()
    except FileNotFoundError:
        raise BundleError(f"{root}: {name} listed in the manifest is missing") from None
    if not stat.S_ISREG(st.st_mode):
        raise BundleError(f"{root}: {name} is not a regular file")
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(p, flags)
    except OSError as err:
        raise BundleError(f"{root}: cannot read {name}: {err.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise BundleError(f"{root}: {name} is not a regular file")
        return f.read()


def _json(root: Path, name: str, data: bytes) -> dict:
    try:
        obj = json.loads(data.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BundleError(f"{root / name}: not valid JSON: {err}") from None
    if not isinstance(obj, dict):
        raise BundleError(f"{root / name}: expected a JSON object, got {type(obj).__name__}")
    return obj


def load_bundle(path: Path | str = paths.BUNDLE) -> Bundle:
    root = Path(path)
    if not root.is_dir():
        raise BundleError(f"{root}: no model bundle here (train one with `dvc repro train`)")
    if not (root / "manifest.json").exists() and not (root / "manifest.json").is_symlink():
        raise BundleError(f"{root}: manifest.json missing: not a textclf bundle")
    manifest = _json(root, "manifest.json", _read_member(root, "manifest.json"))
    if manifest.get("format") != FORMAT:
        raise BundleError(f"{root}: bundle format {manifest.get('format')!r}, this textclf reads {FORMAT!r}")
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        raise BundleError(f"{root}: manifest.json: `files` must map file names to SHA-256 digests")
    missing = [f for f in FILES if f not in files]
    if missing:
        raise BundleError(f"{root}: manifest does not list {missing}")
    for name in files:  # every name is checked before any file is opened
        _member(root, name)
    data: dict[str, bytes] = {}
    for name in [*FILES, *sorted(set(files) - set(FILES))]:  # extra listed files are verified too
        data[name] = _read_member(root, name)
        if hashlib.sha256(data[name]).hexdigest() != files[name]:
            raise BundleError(
                f"{root}: {name} does not match its SHA-256 in manifest.json "
                "(modified or corrupted bundle): refusing to load it"
            )
    config = _json(root, "config.json", data["config.json"])
    vocab = _json(root, "vocab.json", data["vocab.json"])
    if config.get("vocab_hash") != vocab.get("hash"):
        raise BundleError(
            f"{root}: config.json names vocab {config.get('vocab_hash')}, vocab.json is {vocab.get('hash')}"
        )
    for key, kind in (("labels", list), ("model", dict), ("encoding", dict)):
        if not isinstance(config.get(key), kind):
            raise BundleError(f"{root}: config.json has no valid `{key}`: not a textclf bundle or an incompatible one")
    if not isinstance(vocab.get("tokens"), list):
        raise BundleError(f"{root}: vocab.json has no token list")
    try:
        state = load(data["model.safetensors"])  # safetensors: tensors only, nothing is unpickled
    except SafetensorError as err:
        raise BundleError(f"{root}: model.safetensors is not a valid safetensors file: {err}") from None
    return Bundle(root, config, vocab, state, manifest, {k: v for k, v in data.items() if k not in FILES})
