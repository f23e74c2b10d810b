"""The model bundle: models/classifier/{model.safetensors, config.json, vocab.json, manifest.json}.

Safe to load from anywhere: weights are safetensors and everything else JSON (nothing is ever
unpickled); `manifest.json` lists every file with its SHA-256 and a bundle whose files do not
match it is refused; file names in the manifest are plain names, so nothing can point outside the
bundle directory.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from stages.artifacts import InputError, sha256_file
from stages.model import ModelConfig, build_model

FORMAT = "textclf-bundle/1"
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

    @property
    def labels(self) -> list[str]:
        return list(self.config["labels"])

    @property
    def model_config(self) -> ModelConfig:
        return ModelConfig.from_dict(self.config["model"])

    def build_model(self, device: torch.device | str = "cpu") -> torch.nn.Module:
        model = build_model(self.model_config)
        model.load_state_dict(self.state_dict)
        return model.to(device).eval()


def _versions() -> dict:
    import numpy
    import pandas
    import pyarrow
    import sklearn

    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__,
            "pandas": pandas.__version__, "pyarrow": pyarrow.__version__, "scikit-learn": sklearn.__version__}


def save_bundle(path: Path | str, state_dict: dict[str, torch.Tensor], config: dict, vocab: dict) -> Path:
    """Write the bundle into a temp directory beside `path`, then swap it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in state_dict.items()},
                  str(tmp / "model.safetensors"))
        full = {"format": FORMAT, "created": datetime.now(UTC).isoformat(timespec="seconds"),
                "versions": _versions(), **config}
        (tmp / "config.json").write_text(json.dumps(full, indent=2, ensure_ascii=False), encoding="utf-8")
        (tmp / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        manifest = {"format": FORMAT, "files": {name: sha256_file(tmp / name) for name in FILES}}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _member(root: Path, name: str) -> Path:
    """A file inside the bundle; names with separators, '..' or links are refused."""
    if not isinstance(name, str) or not name or name != Path(name).name or name in (".", ".."):
        raise BundleError(f"{root}: manifest names {name!r}, which is not a plain file name in the bundle")
    p = root / name
    if p.is_symlink():
        raise BundleError(f"{root}: {name} is a symbolic link; bundles hold regular files only")
    if not p.resolve().is_relative_to(root.resolve()):
        raise BundleError(f"{root}: {name} resolves outside the bundle")
    return p


def load_bundle(path: Path | str = "models/classifier") -> Bundle:
    root = Path(path)
    if not root.is_dir():
        raise BundleError(f"{root}: no model bundle here (train one with `dvc repro train`)")
    mpath = _member(root, "manifest.json")
    if not mpath.exists():
        raise BundleError(f"{root}: manifest.json missing: not a textclf bundle")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BundleError(f"{mpath}: not valid JSON: {err}") from None
    if manifest.get("format") != FORMAT:
        raise BundleError(f"{root}: bundle format {manifest.get('format')!r}, this textclf reads {FORMAT!r}")
    files = manifest.get("files") or {}
    missing = [f for f in FILES if f not in files]
    if missing:
        raise BundleError(f"{root}: manifest does not list {missing}")
    for name, digest in files.items():
        p = _member(root, name)
        if not p.is_file():
            raise BundleError(f"{root}: {name} listed in the manifest is missing")
        if sha256_file(p) != digest:
            raise BundleError(f"{root}: {name} does not match its SHA-256 in manifest.json "
                              "(modified or corrupted bundle): refusing to load it")
    config = json.loads(_member(root, "config.json").read_text(encoding="utf-8"))
    vocab = json.loads(_member(root, "vocab.json").read_text(encoding="utf-8"))
    if config.get("vocab_hash") != vocab.get("hash"):
        raise BundleError(f"{root}: config.json names vocab {config.get('vocab_hash')}, vocab.json is {vocab.get('hash')}")
    state = load_file(str(_member(root, "model.safetensors")))
    return Bundle(root, config, vocab, state, manifest)
