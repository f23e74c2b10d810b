"""One training configuration, start to finish: a plain run or one autotune trial.

`prepare` encodes the splits, `train_config` fits one configuration (its family's `train`:
textclf.families),
`autotune` searches (textclf.training.autotune), and the outcome is saved as the bundle's config
and weights. The train stage (stages/train.py) reads, calls these and writes; nothing here reads
params.yaml or imports DVC, DVCLive or Prefect.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from textclf.artifacts import arrow_values, fsync_path, write_bytes
from textclf.errors import InputError
from textclf.families.registry import family
from textclf.model import EncodingConfig, ModelConfig
from textclf.params import TrainParams
from textclf.paths import CHECKPOINT, EMBEDDINGS
from textclf.stats import paired_macro_f1_deltas, rounded
from textclf.text import load_stopwords
from textclf.training import autotune as at
from textclf.training.checkpoint import TrainState
from textclf.training.distributed import World
from textclf.training.loop import Encoded, FitResult, encode_split

log = logging.getLogger("textclf.train")

# ---------------------------------------------------------------------------------------------


def prepare(
    train_df, valid_df, vocab: dict, p: TrainParams
) -> tuple[Encoded, Encoded, ModelConfig, EncodingConfig, list[str]]:
    labels = sorted(set(train_df["label"].tolist()))
    index = {c: i for i, c in enumerate(labels)}
    if len(train_df) == 0 or len(valid_df) == 0:
        raise InputError(
            f"the {'train' if len(train_df) == 0 else 'valid'} split is empty: early stopping and "
            "model selection need both (more data, or other split ratios)"
        )
    unknown = sorted(set(valid_df["label"].tolist()) - set(labels))
    if unknown:
        raise InputError(f"valid split has labels the train split lacks: {unknown}")
    bigrams = p.bigrams if family(p.model).uses_bigrams else "none"
    if bigrams == "vocab" and vocab.get("ngrams", 1) < 2:
        raise InputError("train.bigrams=vocab needs vocab.ngrams: 2")
    enc = EncodingConfig(
        vocab_size=len(vocab["tokens"]),
        bigrams=bigrams,
        hash_buckets=p.hash_buckets if bigrams == "hashed" else 0,
    )
    vt = pa.array(vocab["tokens"], pa.string())

    def tok(df):
        return arrow_values(df["tokens"])

    tr = encode_split(tok(train_df), train_df["label"].to_numpy(dtype=object), vt, enc, index)
    va = encode_split(tok(valid_df), valid_df["label"].to_numpy(dtype=object), vt, enc, index)
    return tr, va, model_config(p, enc.num_embeddings, len(labels)), enc, labels


def model_config(p: TrainParams, num_embeddings: int, num_classes: int) -> ModelConfig:
    return family(p.model).model_config(p, num_embeddings, num_classes)


def extra_stopwords(clean_params) -> list[str]:
    """The words of clean.stopwords_file as the clean stage applied them (normalised), sorted."""

    if not clean_params.stopwords_file:
        return []
    builtin = load_stopwords(clean_params.model_copy(update={"stopwords_file": None}))
    return sorted(load_stopwords(clean_params) - builtin)


def bundle_config(
    cfg: ModelConfig,
    enc: EncodingConfig,
    labels: list[str],
    vocab: dict,
    clean_params,
    p: TrainParams,
    result: FitResult,
    device: str,
    processes: int = 1,
) -> dict:
    """What the bundle's config.json records about a training run (textclf.bundle adds the format;
    time, device and versions go to reports/train/run.json instead: see textclf.bundle.run_metadata)."""
    return {
        "model": cfg.to_dict(),
        "encoding": {
            "vocab_size": enc.vocab_size,
            "bigrams": enc.bigrams,
            "hash_buckets": enc.hash_buckets,
        },
        "labels": labels,
        "vocab_hash": vocab["hash"],
        # prediction must clean text exactly as the clean stage did: the user's extra stopwords go
        # in by content (sorted), so prediction never reads the file the path names
        "text": {
            "clean": clean_params.model_dump(mode="json"),
            "normalize": "nfkc-v1",
            "stopwords_extra": extra_stopwords(clean_params),
        },
        "params": p.model_dump(mode="json"),
        "training": {
            "best_epoch": result.state.best_epoch,
            "best_valid_macro_f1": result.state.best_f1,
            "epochs_run": result.state.epoch,
            "history": rounded(result.state.history),
        },
    }


# ---------------------------------------------------------------------------------------------
# one configuration, start to finish (a plain run, or one autotune trial)


@dataclass
class Outcome:
    """A trained configuration: its fit, model config, encoding and labels."""

    result: FitResult
    cfg: ModelConfig
    enc: EncodingConfig
    labels: list[str]
    params: TrainParams
    encoder: dict | None = None  # the encoder family: {"meta": its bundle record} (the tokenizer stays in its source)


class Prepared:
    """The train/valid splits encoded once per encoding (autotune trials share them), and for the
    encoder family their embeddings, once per (encoder, max_len): in memory across trials, in
    the content-addressed cache (`cache_root`) across runs."""

    def __init__(self, train_df, valid_df, vocab: dict, html: bool = True, cache_root: Path | None = EMBEDDINGS):
        self.train_df, self.valid_df, self.vocab = train_df, valid_df, vocab
        self.html, self.cache_root = html, cache_root
        self._cache: dict = {}
        self._embedders: dict = {}
        self._embedded: dict = {}

    def embedder(self, p: TrainParams, device: torch.device | str = "cpu"):
        from textclf.families import encoder as fam

        key = (p.encoder.path, p.encoder.max_len)
        if key not in self._embedders:
            source = fam.load_source(p.encoder.path)
            self._embedders[key] = fam.Embedder(
                source, p.encoder.max_len, p.encoder.batch_tokens, self.cache_root, device
            )
        return self._embedders[key]

    def texts(self, split: str) -> list[str]:
        from textclf.families.encoder import encoder_texts

        df = self.train_df if split == "train" else self.valid_df
        return encoder_texts(arrow_values(df["text"]), self.html)

    def embeddings(self, p: TrainParams, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        emb = self.embedder(p, device)
        key = (emb.source.digest, p.encoder.max_len)
        if key not in self._embedded:
            self._embedded[key] = tuple(torch.from_numpy(emb(self.texts(s))) for s in ("train", "valid"))
        return self._embedded[key]

    def get(self, p: TrainParams) -> tuple[Encoded, Encoded, ModelConfig, EncodingConfig, list[str]]:
        key = (p.bigrams if family(p.model).uses_bigrams else "none", p.hash_buckets)
        if key not in self._cache:
            self._cache[key] = prepare(self.train_df, self.valid_df, self.vocab, p)
        tr, va, cfg, enc, labels = self._cache[key]
        return tr, va, model_config(p, cfg.num_embeddings, cfg.num_classes), enc, labels


def train_model(data: Prepared, p: TrainParams, device: torch.device) -> Outcome:
    """What the train stage does with these params, in memory: the autotune search when
    `autotune.budget_s` > 0, else one run of the params as written (no checkpoint, no logs)."""
    if p.autotune.budget_s > 0:
        return autotune(data, p, device, checkpoint=None).result
    return train_config(data, p, device)


def train_config(
    data: Prepared,
    p: TrainParams,
    device: torch.device,
    *,
    checkpoint: Path | None = None,
    fingerprint: str = "",
    on_epoch: Callable[[dict], None] | None = None,
    deadline: float | None = None,
    progress: bool = False,
    world: World | None = None,
) -> Outcome:
    _, _, _, enc, labels = data.get(p)
    result, cfg, encoder = family(p.model).train(
        data,
        p,
        device,
        checkpoint=checkpoint,
        fingerprint=fingerprint,
        on_epoch=on_epoch,
        deadline=deadline,
        progress=progress,
        world=world,
    )
    return Outcome(result, cfg, enc, labels, p, encoder)


def autotune(
    data: Prepared,
    p: TrainParams,
    device: torch.device,
    fingerprint: str = "",
    checkpoint: Path | None = CHECKPOINT,
):
    """The Optuna search (textclf.training.autotune) over `train_config` runs (resumable in `checkpoint`)."""

    def run_trial(params: TrainParams, report, deadline: float):
        # a convex fit (linear, frozen encoder) reports once, when it has finished: nothing left to prune
        final = family(params.model).reports_once(params, device)
        out = train_config(
            data,
            params,
            device,
            deadline=deadline,
            on_epoch=lambda rec: report(rec["epoch"], rec["valid_macro_f1"], final=final),
        )
        return out, out.result.cut

    def prefer(first: Outcome, best: Outcome) -> tuple[bool, dict]:
        return prefer_best(data, first, best, p.autotune.seed)

    return at.search(
        p,
        run_trial,
        score=lambda out: out.result.state.best_f1,
        checkpoint=checkpoint,
        fingerprint=fingerprint,
        restore=restore_outcome,
        save=save_outcome,
        prefer=prefer,
    )


def valid_predictions(
    data: Prepared, out: Outcome, device: torch.device | str = "cpu"
) -> tuple[np.ndarray, np.ndarray]:
    """(truth, predicted) class indices of a trial's model on the valid split."""
    return family(out.cfg.type).valid_predictions(data, out, device)


def prefer_best(data: Prepared, first: Outcome, best: Outcome, seed: int, n_boot: int = 1000) -> tuple[bool, dict]:
    """The one-standard-error rule: the best trial replaces trial 0 only when its valid macro-F1
    gain is larger than the paired bootstrap standard error of that gain (seeded: same choice
    every run)."""

    y, pred_best = valid_predictions(data, best)
    _, pred_first = valid_predictions(data, first)
    delta, deltas = paired_macro_f1_deltas(y, pred_best, pred_first, len(best.labels), n_boot, seed)
    se = float(deltas.std(ddof=1))
    return delta > se, {"delta": delta, "se": se}


def checkpoint_files(name: str) -> tuple[str, str]:
    """The tensors and meta file names an autotune outcome (`best`, `first`) is saved under."""
    return f"{name}.safetensors", f"{name}.json"


def save_outcome(folder: Path, out: Outcome, name: str = "best") -> None:
    """An autotune trial's result (trial 0's, the best's), kept beside the search log."""

    tensors_file, meta_file = checkpoint_files(name)
    folder.mkdir(parents=True, exist_ok=True)
    meta = {
        "cfg": out.cfg.to_dict(),
        "enc": out.enc.__dict__,
        "labels": out.labels,
        "params": out.params.model_dump(mode="json"),
        "state": out.result.state.__dict__,
        "tokens_per_s": out.result.tokens_per_s,
        "cut": out.result.cut,
    }
    if out.encoder is not None:
        meta["encoder"] = out.encoder
    tmp = folder / f".{tensors_file}.tmp"
    # one metadata key: safetensors writes its metadata map in no fixed order
    save_file(
        {k: v.detach().cpu().contiguous() for k, v in out.result.best_state.items()},
        str(tmp),
        metadata={"meta": json.dumps(meta, sort_keys=True)},
    )
    fsync_path(tmp)
    os.replace(tmp, folder / tensors_file)
    write_bytes(folder / meta_file, json.dumps(meta, sort_keys=True).encode("utf-8"))


def restore_outcome(folder: Path, name: str = "best") -> Outcome | None:
    tensors_file, meta_file = checkpoint_files(name)
    try:
        meta = json.loads((folder / meta_file).read_text(encoding="utf-8"))
        with safe_open(str(folder / tensors_file), framework="pt") as f:
            if json.loads((f.metadata() or {}).get("meta", "null")) != meta:
                return None  # interrupted between the two writes
        tensors = load_file(str(folder / tensors_file))
        result = FitResult(tensors, TrainState(**meta["state"]), meta["tokens_per_s"], meta["cut"])
        return Outcome(
            result,
            ModelConfig.from_dict(meta["cfg"]),
            EncodingConfig(**meta["enc"]),
            meta["labels"],
            TrainParams.model_validate(meta["params"]),
            meta.get("encoder"),
        )
    except (OSError, ValueError, KeyError, TypeError) as err:
        log.warning("ignoring the unreadable best trial in %s: %s", folder, err)
        return None


def warn_small_classes(labels, minimum: int = 50) -> list[str]:
    """Classes with fewer than `minimum` training documents: their F1 is noisy and easily 0."""
    counts = pd.Series(labels).value_counts()
    small = sorted(counts[counts < minimum].index.tolist())
    for c in small:
        log.warning(
            "class %r has only %d training documents (< %d): expect a noisy or zero F1 for it; "
            "class_weight: balanced and more examples help",
            c,
            counts[c],
            minimum,
        )
    return small


# ---------------------------------------------------------------------------------------------
# the stage
