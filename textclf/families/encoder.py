"""The `encoder` family: a pretrained BERT-architecture encoder read from a local Hugging Face
folder, used frozen (CPU) or fine-tuned (GPU).

- **Where the model comes from.** `train.encoder.path` names a folder with `config.json`,
  `model.safetensors` and `tokenizer.json` (sentence-transformers folders add `1_Pooling/` and
  `modules.json`, read for the pooling and the final normalisation). Nothing is downloaded, no
  remote code runs (a config with `auto_map` is refused), and only safetensors weights are read.
  `load_source` refuses a hub id, a missing folder or a broken one with the command that fetches it.
- **The encoder** (`BertEncoder`) is written here in plain torch, with the Hugging Face module
  names so the checkpoint loads as it is: embeddings, post-LayerNorm blocks, attention through
  `scaled_dot_product_attention`. It covers `model_type: bert` (BERT, MiniLM, most
  sentence-transformers models); `transformers` is not needed to train, predict or serve.
  tests/model/test_encoder.py checks it against transformers' BertModel on a random BERT.
- **Frozen** (`fit_frozen`): the pooled embedding of every document, computed once per (encoder,
  max_len, text) and kept in a content-addressed cache (`EmbeddingCache`, .textclf/embeddings/),
  joins the unit-length TF-IDF vector in the linear family's LR head (one convex L-BFGS fit,
  textclf.families.linear); the NB-scaled head stays on TF-IDF. Probe on an English review
  corpus: TF-IDF + LR 0.824, embedding + LR 0.805, both 0.845 macro-F1.
- **Fine-tune** (`fit_finetune`): AdamW (fused on CUDA), warm-up then linear decay, layer-wise lr
  decay, bf16 autocast (fp16 + GradScaler where bf16 is missing), length-bucketed batches with
  dynamic padding, gradient accumulation, class weights, early stopping on valid macro-F1, and a
  per-epoch checkpoint that a killed run resumes from.
- **One model for both** (`EncoderModel`): logits of the LR head = TF-IDF · W + scale · pooled ·
  W_e + b (fine-tuned models keep W = 0 and no NB head), so prediction, evaluation and the ONNX
  graph take one input layout: the vocabulary ids + offsets and the encoder's padded token ids.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from textclf.errors import InputError, ParamsError
from textclf.families.base import ModelFamily

log = logging.getLogger("textclf.train")

SUPPORTED_TYPES = ("bert",)
ACTIVATIONS = {"gelu": "none", "gelu_new": "tanh", "gelu_pytorch_tanh": "tanh"}
# pooled embeddings are rounded to float16 where they are made (training features, prediction,
# the ONNX graph alike): the last float32 bits of a matmul depend on the batch a text was padded
# in and on the CPU's kernels; a fit on rounded features does not.
EMBED_DTYPE = torch.float16
CACHE_FORMAT = "textclf-embeddings/1"
FETCH_HINT = (
    "`make encoder` unpacks all-MiniLM-L6-v2 into models/pretrained/all-MiniLM-L6-v2; any other: "
    "`huggingface-cli download <hub id> --local-dir models/pretrained/<name>`"
)
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


# ---------------------------------------------------------------------------------------------
# the source: a local Hugging Face folder, checked


@dataclass(frozen=True)
class EncoderSource:
    """What a model folder holds, checked; the weights are read on demand (`weights`)."""

    path: Path
    config: dict  # config.json: the keys BertEncoder reads
    tokenizer: str  # tokenizer.json, as text (it goes into the bundle)
    pooling: str  # mean | cls | max
    normalize: bool  # sentence-transformers' Normalize module: unit-length embeddings
    license: str | None  # README's `license:` line (the model card's licence id)
    license_text: str | None  # the folder's LICENSE file: copied into the bundle
    revision: str | None  # a commit hash the folder records, if any
    digest: str  # SHA-256 over config, weights, tokenizer and pooling: the cache key

    def weights(self) -> dict[str, torch.Tensor]:
        return _load_weights(self.path / "model.safetensors")

    def meta(self) -> dict:
        """What the bundle records about the encoder (config.json `encoder`)."""
        return {
            "config": self.config,
            "pooling": self.pooling,
            "normalize": self.normalize,
            "source": self.path.name,
            "source_sha256": self.digest,
            "license": self.license,
            "revision": self.revision,
        }

    def bundle_files(self) -> dict[str, bytes]:
        """What the bundle carries besides the weights: the tokenizer and the licence."""
        files = {"tokenizer.json": self.tokenizer.encode("utf-8")}
        if self.license_text:
            files["encoder-LICENSE"] = self.license_text.encode("utf-8")
        return files


def load_source(path: str | Path) -> EncoderSource:
    """The folder `train.encoder.path` names, or a ParamsError / InputError that says what to do."""
    p = Path(path)
    if not p.exists():
        if _HUB_ID.match(str(path)) and not str(path).startswith(("models/", "data/", "./")):
            raise ParamsError(
                f"params.yaml: train.encoder.path: {path!r} looks like a Hugging Face hub id; textclf never "
                f"downloads. Fetch it first: `huggingface-cli download {path} --local-dir "
                f"models/pretrained/{Path(str(path)).name}` and set train.encoder.path to that folder"
            )
        raise InputError(f"train.encoder.path: {p} does not exist ({FETCH_HINT})")
    if not p.is_dir():
        raise InputError(f"train.encoder.path: {p} is not a folder ({FETCH_HINT})")
    if not (p / "config.json").is_file():
        raise InputError(f"train.encoder.path: {p} holds no Hugging Face model (no config.json): {FETCH_HINT}")
    config = _read_json(p / "config.json")
    if "auto_map" in config:
        raise InputError(
            f"{p}/config.json asks for remote code (auto_map): textclf never sets trust_remote_code; "
            "use a model whose architecture is built in"
        )
    mtype = config.get("model_type")
    if mtype not in SUPPORTED_TYPES:
        raise InputError(
            f"{p}: model_type {mtype!r} is not supported: the encoder family implements "
            f"{', '.join(SUPPORTED_TYPES)} (BERT, MiniLM and most sentence-transformers models)"
        )
    act = config.get("hidden_act", "gelu")
    if act not in ACTIVATIONS:
        raise InputError(f"{p}: hidden_act {act!r} is not supported ({', '.join(ACTIVATIONS)})")
    if config.get("position_embedding_type", "absolute") != "absolute":
        raise InputError(f"{p}: position_embedding_type {config['position_embedding_type']!r} is not supported")
    if not (p / "model.safetensors").is_file():
        pickled = [n for n in ("pytorch_model.bin", "tf_model.h5") if (p / n).exists()]
        raise InputError(
            f"{p}: no model.safetensors"
            + (
                f" (only {pickled[0]}: pickled weights are never loaded; convert them to safetensors)"
                if pickled
                else ""
            )
            + f": {FETCH_HINT}"
        )
    if not (p / "tokenizer.json").is_file():
        raise InputError(f"{p}: no tokenizer.json (the fast tokenizer file): {FETCH_HINT}")
    tokenizer = (p / "tokenizer.json").read_text(encoding="utf-8")
    try:
        _tokenizer(tokenizer, 8)
    except Exception as err:  # noqa: BLE001 - the Rust library raises its own exception type
        raise InputError(f"{p}/tokenizer.json is not a tokenizer the `tokenizers` library reads: {err}") from None
    pooling, normalize = _pooling(p)
    h = hashlib.sha256()
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        h.update(name.encode() + b"\0" + _file_sha256(p / name).encode() + b"\0")
    h.update(f"{pooling}:{normalize}".encode())
    license_id, license_text = _license(p)
    return EncoderSource(
        p, config, tokenizer, pooling, normalize, license_id, license_text, _revision(p), h.hexdigest()
    )


def _read_json(path: Path) -> dict:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"{path}: not readable JSON: {err}") from None
    if not isinstance(obj, dict):
        raise InputError(f"{path}: expected a JSON object")
    return obj


def _pooling(p: Path) -> tuple[str, bool]:
    """sentence-transformers' pooling mode and whether a Normalize module follows; mean without."""
    pooling, normalize = "mean", False
    pool_cfg = p / "1_Pooling" / "config.json"
    if pool_cfg.is_file():
        c = _read_json(pool_cfg)
        modes = [
            m
            for m in ("mean", "cls", "max")
            if c.get(f"pooling_mode_{m}_tokens" if m != "cls" else "pooling_mode_cls_token")
        ]
        if len(modes) != 1:
            raise InputError(f"{pool_cfg}: one pooling mode of mean, cls or max is supported, got {modes or 'none'}")
        pooling = modes[0]
    if (p / "modules.json").is_file():
        mods = json.loads((p / "modules.json").read_text(encoding="utf-8"))
        normalize = any(str(m.get("type", "")).endswith("Normalize") for m in mods if isinstance(m, dict))
    return pooling, normalize


def _license(p: Path) -> tuple[str | None, str | None]:
    """(the model card's `license:` id, the LICENSE file's text)."""
    text = next(
        (
            (p / n).read_text(encoding="utf-8", errors="replace")
            for n in ("LICENSE", "LICENSE.txt", "LICENSE.md")
            if (p / n).is_file()
        ),
        None,
    )
    readme = p / "README.md"
    m = (
        re.search(r"^license:\s*(\S+)", readme.read_text(encoding="utf-8", errors="replace"), re.M)
        if readme.is_file()
        else None
    )
    return (m.group(1) if m else None), text


def _revision(p: Path) -> str | None:
    for name in ("REVISION", ".revision"):
        if (p / name).is_file():
            return (p / name).read_text(encoding="utf-8").strip()[:64] or None
    return None


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _load_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise InputError(f"{path}: not a readable safetensors file: {err}") from None
    # a checkpoint of a task model (BertForMaskedLM, ...) names the encoder `bert.*`
    if any(k.startswith("bert.") for k in state):
        state = {k[5:]: v for k, v in state.items() if k.startswith("bert.")}
    # the pooler (a dense layer for the NSP head) and the position-id buffer are not ours
    return {k: v.float() for k, v in state.items() if not k.startswith("pooler.") and not k.endswith("position_ids")}


# ---------------------------------------------------------------------------------------------
# the encoder: BERT in plain torch, Hugging Face's module names


class _Attention(nn.Module):
    def __init__(self, h: int, heads: int, dropout: float, eps: float):
        super().__init__()
        self.heads = heads
        self.self = nn.Module()
        self.self.query, self.self.key, self.self.value = nn.Linear(h, h), nn.Linear(h, h), nn.Linear(h, h)
        self.output = nn.Module()
        self.output.dense, self.output.LayerNorm = nn.Linear(h, h), nn.LayerNorm(h, eps=eps)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, n, h = x.shape

        def split(t):
            return t.view(b, n, self.heads, h // self.heads).transpose(1, 2)

        q, k, v = split(self.self.query(x)), split(self.self.key(x)), split(self.self.value(x))
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        a = a.transpose(1, 2).reshape(b, n, h)
        return self.output.LayerNorm(x + F.dropout(self.output.dense(a), self.dropout, self.training))


class _Layer(nn.Module):
    def __init__(self, c: dict):
        super().__init__()
        h, eps = c["hidden_size"], c.get("layer_norm_eps", 1e-12)
        self.attention = _Attention(h, c["num_attention_heads"], c.get("attention_probs_dropout_prob", 0.1), eps)
        self.intermediate = nn.Module()
        self.intermediate.dense = nn.Linear(h, c["intermediate_size"])
        self.output = nn.Module()
        self.output.dense, self.output.LayerNorm = nn.Linear(c["intermediate_size"], h), nn.LayerNorm(h, eps=eps)
        self.approximate = ACTIVATIONS[c.get("hidden_act", "gelu")]
        self.dropout = c.get("hidden_dropout_prob", 0.1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.attention(x, mask)
        y = self.output.dense(F.gelu(self.intermediate.dense(x), approximate=self.approximate))
        return self.output.LayerNorm(x + F.dropout(y, self.dropout, self.training))


class BertEncoder(nn.Module):
    """Token ids [B, L] + attention mask [B, L] → pooled embedding [B, H] (float32, rounded to
    float16 precision; unit length when the source normalises)."""

    def __init__(self, config: dict, pooling: str = "mean", normalize: bool = False):
        super().__init__()
        c = config
        h = c["hidden_size"]
        if h % c["num_attention_heads"]:
            raise ValueError("hidden_size must be a multiple of num_attention_heads")
        self.pooling, self.normalize = pooling, normalize
        self.max_positions = c.get("max_position_embeddings", 512)
        self.embeddings = nn.Module()
        self.embeddings.word_embeddings = nn.Embedding(c["vocab_size"], h)
        self.embeddings.position_embeddings = nn.Embedding(self.max_positions, h)
        self.embeddings.token_type_embeddings = nn.Embedding(c.get("type_vocab_size", 2), h)
        self.embeddings.LayerNorm = nn.LayerNorm(h, eps=c.get("layer_norm_eps", 1e-12))
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList(_Layer(c) for _ in range(c["num_hidden_layers"]))
        self.dropout = c.get("hidden_dropout_prob", 0.1)

    @property
    def hidden_size(self) -> int:
        return self.embeddings.word_embeddings.embedding_dim

    def hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        e = self.embeddings
        pos = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = e.word_embeddings(input_ids) + e.position_embeddings(pos)[None] + e.token_type_embeddings.weight[0]
        x = F.dropout(e.LayerNorm(x), self.dropout, self.training)
        mask = attention_mask.bool()[:, None, None, :]  # True = attend
        for layer in self.encoder.layer:
            x = layer(x, mask)
        return x

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x = self.hidden(input_ids, attention_mask).float()
        m = attention_mask.to(x.dtype)[:, :, None]
        if self.pooling == "cls":
            pooled = x[:, 0]
        elif self.pooling == "max":
            pooled = (x - (1 - m) * 1e9).amax(1)
        else:
            pooled = (x * m).sum(1) / m.sum(1).clamp_min(1e-9)
        if self.normalize:
            pooled = F.normalize(pooled, p=2.0, dim=1)
        return pooled.to(EMBED_DTYPE).float()

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """Parameters from the bottom (embeddings) to the top layer: for layer-wise lr decay."""
        return [list(self.embeddings.parameters()), *[list(layer.parameters()) for layer in self.encoder.layer]]


def build_encoder(meta: dict) -> BertEncoder:
    """The encoder a bundle's `encoder` record describes (weights not loaded)."""
    return BertEncoder(meta["config"], meta.get("pooling", "mean"), bool(meta.get("normalize", False)))


def load_encoder(source: EncoderSource) -> BertEncoder:
    enc = build_encoder(source.meta())
    try:
        enc.load_state_dict(source.weights())
    except RuntimeError as err:
        raise InputError(f"{source.path}/model.safetensors does not fit its config.json: {err}") from None
    return enc.eval()


# ---------------------------------------------------------------------------------------------
# tokenising and batching: the Rust `tokenizers` library, length-bucketed dynamic padding


def _tokenizer(json_text: str, max_len: int):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(json_text)
    tok.no_padding()
    tok.enable_truncation(max_length=max_len)
    return tok


class TextTokenizer:
    """Texts → token id lists (with the model's special tokens), at most `max_len` each."""

    def __init__(self, json_text: str, max_len: int):
        self.max_len = max_len
        self._tok = _tokenizer(json_text, max_len)
        self.pad_id = self._tok.token_to_id("[PAD]") or 0

    def __call__(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(list(texts))]


def padded(lists: Sequence[Sequence[int]], pad_id: int = 0, min_len: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Id lists → (input_ids, attention_mask) [B, longest], padded on the right."""
    width = max([min_len, *(len(x) for x in lists)])
    ids = np.full((len(lists), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(lists), width), dtype=np.int64)
    for i, x in enumerate(lists):
        ids[i, : len(x)] = x
        mask[i, : len(x)] = 1
    return torch.from_numpy(ids), torch.from_numpy(mask)


def buckets(lengths: np.ndarray, batch_tokens: int, max_batch: int = 1024) -> list[np.ndarray]:
    """Document indices in batches of similar length (longest first), each holding at most
    `batch_tokens` padded tokens: padding is the main waste of an encoder's batch."""
    order = np.argsort(-lengths, kind="stable")
    out, start = [], 0
    while start < len(order):
        width = max(int(lengths[order[start]]), 1)
        size = max(1, min(max_batch, batch_tokens // width))
        out.append(order[start : start + size])
        start += size
    return out


@torch.inference_mode()
def embed(
    encoder: BertEncoder,
    tokenizer: TextTokenizer,
    texts: Sequence[str],
    batch_tokens: int = 16384,
    device: torch.device | str = "cpu",
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Pooled embeddings [n, H] (float32 holding float16 values), in input order."""
    encoder.eval()
    lists = tokenizer(texts)
    out = np.zeros((len(lists), encoder.hidden_size), dtype=np.float32)
    if not lists:
        return out
    lengths = np.array([len(x) for x in lists])
    for idx in buckets(lengths, batch_tokens):
        ids, mask = padded([lists[i] for i in idx], tokenizer.pad_id)
        out[idx] = encoder(ids.to(device), mask.to(device)).cpu().numpy()
        if progress:
            progress(len(idx))
    return out


# ---------------------------------------------------------------------------------------------
# the embedding cache: one vector per (encoder, max_len, text), reused across trials and reruns


class EmbeddingCache:
    """Content-addressed embeddings: `root/<key>/NNNNNN.safetensors` shards of (SipHash of the
    text, vector). `key` covers the encoder's files, pooling and max_len, so another encoder or
    setting never reads these. A shard is written whole, then renamed: a killed run leaves
    either a complete shard or none."""

    def __init__(self, root: Path, source_digest: str, max_len: int):
        key = hashlib.sha256(f"{CACHE_FORMAT}:{source_digest}:{max_len}".encode()).hexdigest()[:24]
        self.folder = Path(root) / key
        self._keys: np.ndarray | None = None
        self._vecs: np.ndarray | None = None

    def _load(self) -> tuple[np.ndarray, np.ndarray]:
        if self._keys is None:
            from safetensors.numpy import load_file

            keys, vecs = [], []
            for shard in sorted(self.folder.glob("*.safetensors")) if self.folder.is_dir() else []:
                try:
                    t = load_file(str(shard))
                    keys.append(t["keys"].view(np.uint64))
                    vecs.append(t["vectors"].astype(np.float32))
                except Exception as err:  # noqa: BLE001 - a damaged shard is recomputed, not trusted
                    log.warning("ignoring the unreadable embedding shard %s: %s", shard, err)
            self._keys = np.concatenate(keys) if keys else np.zeros(0, np.uint64)
            self._vecs = np.concatenate(vecs) if vecs else None
        return self._keys, self._vecs

    def get(self, texts: Sequence[str], compute: Callable[[list[str]], np.ndarray]) -> tuple[np.ndarray, int]:
        """Embeddings of `texts` in order, computing only those not cached; (vectors, computed)."""
        from textclf.text import hash64

        h = hash64(list(texts)) if len(texts) else np.zeros(0, np.uint64)
        keys, vecs = self._load()
        order = np.argsort(keys, kind="stable")
        pos = np.searchsorted(keys[order], h) if len(keys) else np.zeros(len(h), np.int64)
        found = np.zeros(len(h), bool)
        if len(keys):
            pos = np.minimum(pos, len(keys) - 1)
            found = keys[order][pos] == h
        missing = np.flatnonzero(~found)
        uniq_h, first = np.unique(h[missing], return_index=True)
        fresh = compute([texts[i] for i in missing[first]]) if len(uniq_h) else None
        dim = fresh.shape[1] if fresh is not None else (vecs.shape[1] if vecs is not None else 0)
        out = np.zeros((len(h), dim), np.float32)
        if found.any():
            out[found] = vecs[order][pos[found]]
        if fresh is not None:
            out[missing] = fresh[np.searchsorted(uniq_h, h[missing])]
            self._write(uniq_h, fresh)
        return out, len(uniq_h)

    def _write(self, keys: np.ndarray, vecs: np.ndarray) -> None:
        from safetensors.numpy import save_file

        self.folder.mkdir(parents=True, exist_ok=True)
        n = len(list(self.folder.glob("*.safetensors")))
        tmp = self.folder / f".{n:06d}.{os.getpid()}.tmp"
        save_file({"keys": keys.view(np.int64), "vectors": vecs.astype(np.float16)}, str(tmp))
        os.replace(tmp, self.folder / f"{n:06d}-{os.getpid()}.safetensors")
        self._keys, self._vecs = None, None


# ---------------------------------------------------------------------------------------------
# the model: the encoder + the linear family's heads, the embedding in the LR head


class EncoderModel(nn.Module):
    """`forward(ids, offsets, input_ids, attention_mask)` → log-probabilities, as LinearModel:
    the LR head's logits are TF-IDF · lr_weight + scale · pooled · emb_weight + lr_bias; the NB
    head (frozen mode, nb_mix > 0) sees TF-IDF only. `head(ids, offsets, pooled)` is the same
    from precomputed embeddings (training, and prediction from the cache)."""

    def __init__(self, cfg, encoder_meta: dict):
        from textclf.families.linear import LinearModel

        super().__init__()
        self.cfg = cfg
        self.encoder = build_encoder(encoder_meta)
        self.linear = LinearModel(cfg)
        self.emb_weight = nn.Parameter(torch.zeros(self.encoder.hidden_size, cfg.num_classes))
        self.scale = float(cfg.feature_scale)

    def head(self, ids: torch.Tensor, offsets: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        # LinearModel returns raw logits when one head has all the weight: normalise either way
        return torch.log_softmax(self.linear(ids, offsets, extra=self.scale * pooled @ self.emb_weight), 1)

    def forward(self, ids, offsets, input_ids, attention_mask) -> torch.Tensor:
        return self.head(ids, offsets, self.encoder(input_ids, attention_mask))


def mode_for(mode: str, device: torch.device) -> str:
    return ("finetune" if device.type == "cuda" else "frozen") if mode == "auto" else mode


# ---------------------------------------------------------------------------------------------
# fine-tuning


def lr_lambda(total: int, warmup: int) -> Callable[[int], float]:
    """Linear warm-up to 1, then linear decay to 0 at `total` steps."""

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))

    return f


def param_groups(model: EncoderModel, lr: float, layer_decay: float, weight_decay: float) -> list[dict]:
    """Layer-wise lr decay: the top layer and the head at `lr`, each layer below × layer_decay;
    no weight decay on biases and LayerNorm weights."""
    groups = []
    layers = model.encoder.layer_groups()
    top = len(layers)
    for depth, params in enumerate([*layers, [model.emb_weight, model.linear.lr_bias]]):
        scale = layer_decay ** max(0, top - 1 - depth)  # the top layer (depth top - 1) and the head: 1
        decay = [p for p in params if p.ndim > 1]
        rest = [p for p in params if p.ndim <= 1]
        groups += [
            {"params": decay, "lr": lr * scale, "weight_decay": weight_decay},
            {"params": rest, "lr": lr * scale, "weight_decay": 0.0},
        ]
    return [g for g in groups if g["params"]]


def autocast_dtype(device: torch.device, amp: bool) -> torch.dtype | None:
    if device.type != "cuda" or not amp:
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


@dataclass
class FinetuneData:
    """One split for fine-tuning: the encoder's token lists, the TF-IDF ids/offsets, labels."""

    lists: list[list[int]]
    ids: torch.Tensor
    offsets: torch.Tensor
    labels: torch.Tensor

    def batch(self, idx: np.ndarray, pad_id: int, device) -> tuple:
        from textclf.model import gather_bag

        t = torch.from_numpy(idx)
        ids, off = gather_bag(self.ids, self.offsets, t)
        input_ids, mask = padded([self.lists[i] for i in idx], pad_id)
        return ids.to(device), off.to(device), input_ids.to(device), mask.to(device), self.labels[t].to(device)


def fit_finetune(
    model: EncoderModel,
    train: FinetuneData,
    valid: FinetuneData,
    ep,
    *,
    pad_id: int,
    device: torch.device,
    seed: int,
    class_weight: str = "none",
    amp: bool = True,
    patience: int = 2,
    checkpoint: Path | None = None,
    on_epoch: Callable[[dict], None] | None = None,
    deadline: float | None = None,
    fingerprint: str = "",
) -> tuple[dict[str, torch.Tensor], list[dict], int, float, float]:
    """Fine-tune encoder + head; returns (best state, history, best epoch, best valid macro-F1, tokens/s).
    `checkpoint` (a file) holds the state after each finished epoch: a killed run with the same
    `fingerprint` (data + params) resumes there and ends with the same weights; a finished run
    removes it (`dvc repro -f` trains again)."""
    model = model.to(device)
    for p in (model.linear.lr_weight, model.linear.nb_weight, model.linear.nb_bias):
        p.requires_grad_(False)  # fine-tuned models keep the TF-IDF tables at zero
    k = model.cfg.num_classes
    lengths = np.array([len(x) for x in train.lists])
    steps_per_epoch = math.ceil(len(buckets(lengths, ep.batch_tokens, 256)) / ep.grad_accum)
    total = steps_per_epoch * ep.epochs
    opt = torch.optim.AdamW(param_groups(model, ep.lr, ep.layer_decay, ep.weight_decay), fused=device.type == "cuda")
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(total, int(ep.warmup * total)))
    dtype = autocast_dtype(device, amp)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    counts = torch.bincount(train.labels, minlength=k).float().clamp_min(1)
    weight = (counts.sum() / (k * counts)).to(device) if class_weight == "balanced" else None
    history: list[dict] = []
    best_state, best_f1, best_epoch, start = None, -1.0, 0, 0
    saved = (
        torch.load(checkpoint, map_location="cpu", weights_only=True) if checkpoint and checkpoint.is_file() else None
    )
    if saved is not None and saved.get("fingerprint") != fingerprint:
        log.info("encoder: ignoring the checkpoint of another run in %s", checkpoint)
        saved = None
    if saved is not None:
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["opt"])
        sched.load_state_dict(saved["sched"])
        history, best_f1, best_epoch, start = saved["history"], saved["best_f1"], saved["best_epoch"], saved["epoch"]
        best_state = saved["best"]
        log.info("encoder: resuming fine-tuning after epoch %d", start)
    tokens, t0 = 0, time.perf_counter()
    for epoch in range(start, ep.epochs):
        model.train()
        # every epoch's randomness from (seed, epoch) alone: a resumed run continues exactly as an
        # uninterrupted one would (the batch order and the dropout masks)
        torch.manual_seed(seed * 1_000_003 + epoch)
        batches = buckets(lengths, ep.batch_tokens, 256)
        np.random.default_rng([seed, epoch]).shuffle(batches)  # similar lengths within a batch, batches in random order
        total_loss = 0.0
        for i, idx in enumerate(batches):
            ids, off, input_ids, mask, y = train.batch(idx, pad_id, device)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                pooled = F.dropout(model.encoder(input_ids, mask), ep.dropout, True)
                logp = model.head(ids, off, pooled)
            loss = F.nll_loss(logp.float(), y, weight=weight) / ep.grad_accum
            scaler.scale(loss).backward()
            total_loss += float(loss.detach()) * ep.grad_accum
            tokens += int(mask.sum())
            if (i + 1) % ep.grad_accum == 0 or i + 1 == len(batches):
                scaler.unscale_(opt)
                nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                scaler.step(opt)
                scaler.update()
                opt.zero_grad(set_to_none=True)
                sched.step()
        val = _evaluate(model, valid, pad_id, ep.batch_tokens, device, k)
        rec = {
            "epoch": epoch + 1,
            "train_loss": total_loss / max(1, len(batches)),
            "valid_loss": val["loss"],
            "valid_accuracy": val["accuracy"],
            "valid_macro_f1": val["macro_f1"],
            "lr": float(sched.get_last_lr()[0]),
        }
        history.append(rec)
        log.info("encoder finetune epoch %d: valid macro-F1 %.4f", epoch + 1, val["macro_f1"])
        if val["macro_f1"] > best_f1:
            best_f1, best_epoch = val["macro_f1"], epoch + 1
            best_state = {n: t.detach().cpu().clone() for n, t in model.state_dict().items()}
        if on_epoch:
            on_epoch(rec)
        if checkpoint is not None:
            checkpoint.parent.mkdir(parents=True, exist_ok=True)
            tmp = checkpoint.with_suffix(".tmp")
            torch.save(
                {
                    "model": model.state_dict(),
                    "opt": opt.state_dict(),
                    "sched": sched.state_dict(),
                    "history": history,
                    "best_f1": best_f1,
                    "best_epoch": best_epoch,
                    "epoch": epoch + 1,
                    "best": best_state,
                    "fingerprint": fingerprint,
                },
                tmp,
            )
            os.replace(tmp, checkpoint)
        if epoch + 1 - best_epoch >= patience or (deadline is not None and time.monotonic() > deadline):
            break
    seconds = time.perf_counter() - t0
    if checkpoint is not None:
        checkpoint.unlink(missing_ok=True)
    return best_state, history, best_epoch, best_f1, tokens / seconds if seconds else 0.0


@torch.no_grad()
def _evaluate(model: EncoderModel, data: FinetuneData, pad_id: int, batch_tokens: int, device, k: int) -> dict:
    from sklearn.metrics import f1_score

    model.eval()
    lengths = np.array([len(x) for x in data.lists])
    logps = torch.zeros(len(lengths), k)
    for idx in buckets(lengths, batch_tokens):
        ids, off, input_ids, mask, _ = data.batch(idx, pad_id, device)
        logps[torch.from_numpy(idx)] = model(ids, off, input_ids, mask).float().cpu()
    y = data.labels.cpu()
    pred = logps.argmax(1)
    return {
        "loss": float(F.nll_loss(logps, y)),
        "accuracy": float((pred == y).float().mean()),
        # over the classes that occur, as textclf.training.loop.evaluate
        "macro_f1": float(
            f1_score(y, pred, average="macro", labels=np.union1d(y.numpy(), pred.numpy()).tolist(), zero_division=0)
        ),
    }


# ---------------------------------------------------------------------------------------------
# what train, predict, evaluate and export call


def encoder_texts(texts, html: bool) -> list[str]:
    """The text the encoder reads: ingest's normalised text, markup removed when clean.html is on
    (the tokens' other cleaning - stopwords, lowercase, punctuation - is not applied: the encoder
    was pretrained on running text)."""
    import pyarrow as pa

    from textclf.text import strip_html

    arr = texts if isinstance(texts, pa.Array) else pa.array(list(texts), pa.string())
    return (strip_html(arr) if html else arr).to_pylist()


class Embedder:
    """One source's encoder + tokenizer at one max_len, and its embedding cache (None: no cache)."""

    def __init__(self, source: EncoderSource, max_len: int, batch_tokens: int, cache_root: Path | None, device="cpu"):
        self.source, self.max_len, self.batch_tokens, self.device = source, max_len, batch_tokens, device
        self.encoder = load_encoder(source).to(device)
        self.tokenizer = TextTokenizer(source.tokenizer, max_len)
        self.cache = EmbeddingCache(cache_root, source.digest, max_len) if cache_root is not None else None
        self.seconds = 0.0

    def __call__(self, texts: list[str]) -> np.ndarray:
        def compute(todo: list[str]) -> np.ndarray:
            t0 = time.perf_counter()
            out = embed(self.encoder, self.tokenizer, todo, self.batch_tokens, self.device)
            dt = time.perf_counter() - t0
            self.seconds += dt
            log.info("encoder: embedded %d documents in %.1f s (%.0f docs/s)", len(todo), dt, len(todo) / max(dt, 1e-9))
            return out

        if self.cache is None:
            return compute(texts)
        vecs, computed = self.cache.get(texts, compute)
        if computed < len(texts):
            log.info("encoder: %d of %d embeddings read from %s", len(texts) - computed, len(texts), self.cache.folder)
        return vecs


def fit_frozen(tr, va, train_emb: torch.Tensor, valid_emb: torch.Tensor, model: EncoderModel, p, device, deadline=None):
    """The linear family's convex fit with the scaled embeddings beside TF-IDF in the LR head;
    returns (the model on CPU, valid log-probabilities, the fit)."""
    from textclf.families.linear import fit_with_params

    cfg = model.cfg
    dense = (cfg.feature_scale * train_emb).to(device) if cfg.nb_mix < 1 else None
    fitted = fit_with_params(tr.to(device), cfg, p, deadline, dense=dense)
    with torch.no_grad():
        model.linear.load_state_dict(fitted.state_dict)
        if fitted.dense_weight is not None:
            model.emb_weight.copy_(fitted.dense_weight.cpu())
    model = model.cpu()
    logp = head_logp(model, va.ids, va.offsets, valid_emb)
    return model, logp, fitted


@torch.no_grad()
def head_logp(model: EncoderModel, ids, offsets, emb: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """Log-probabilities from precomputed embeddings (CPU), in order."""
    from textclf.model import gather_bag

    model.eval()
    n = len(offsets) - 1
    out = []
    for s in range(0, n, batch_size):
        idx = torch.arange(s, min(n, s + batch_size))
        bi, bo = gather_bag(ids, offsets, idx)
        out.append(model.head(bi, bo, emb[idx]))
    return torch.cat(out) if out else torch.zeros((0, model.cfg.num_classes))


@torch.no_grad()
def predict_proba(
    model: EncoderModel,
    tokenizer: TextTokenizer,
    ids: np.ndarray,
    offsets: np.ndarray,
    texts: list[str],
    batch_tokens: int = 16384,
    device="cpu",
) -> np.ndarray:
    """Probabilities [n, K] of raw-text documents: `ids`/`offsets` the vocabulary encoding (as
    every family), `texts` what the encoder reads (`encoder_texts`); length-bucketed batches."""
    model.eval()
    lists = tokenizer(texts)
    emb = np.zeros((len(lists), model.encoder.hidden_size), np.float32)
    lengths = np.array([len(x) for x in lists])
    for idx in buckets(lengths, batch_tokens) if len(lists) else []:
        input_ids, mask = padded([lists[i] for i in idx], tokenizer.pad_id)
        emb[idx] = model.encoder(input_ids.to(device), mask.to(device)).cpu().numpy()
    logp = head_logp(model.cpu(), torch.from_numpy(ids), torch.from_numpy(offsets), torch.from_numpy(emb))
    return torch.softmax(logp.float(), 1).numpy()


def model_config(p, num_embeddings: int, num_classes: int, mode: str):
    from textclf.model import ModelConfig

    frozen = mode == "frozen"
    return ModelConfig(
        type="encoder",
        num_embeddings=num_embeddings,
        embed_dim=0,
        num_classes=num_classes,
        max_len=p.encoder.max_len,
        nb_mix=p.linear.nb_mix if frozen else 0.0,
        sublinear_tf=p.linear.sublinear_tf,
        feature_scale=p.encoder.feature_scale if frozen else 1.0,
    )


def suggest(trial, p, num, cat) -> dict:
    """The family's autotune space: the head's regularisation and mix and the embedding's weight
    (frozen), or lr, epochs and layer decay (finetune); max_len in both."""
    out = {
        "encoder.max_len": cat("encoder.max_len", [64, 128, 256], p.encoder.max_len),
        "encoder.mode": p.encoder.mode,
    }
    if p.encoder.mode == "finetune":
        out["encoder.lr"] = num("encoder.lr", 1e-5, 1e-4, p.encoder.lr)
        out["encoder.epochs"] = cat("encoder.epochs", [2, 3, 4, 6], p.encoder.epochs)
        out["encoder.layer_decay"] = cat("encoder.layer_decay", [0.8, 0.9, 1.0], p.encoder.layer_decay)
        return out
    out["linear.C"] = num("encoder:linear.C", 1.0, 64.0, p.linear.C)
    out["linear.nb_mix"] = cat("encoder:linear.nb_mix", [0.0, 0.25, 0.5], p.linear.nb_mix)
    out["encoder.feature_scale"] = cat("encoder.feature_scale", [0.25, 0.5, 1.0], p.encoder.feature_scale)
    return out


# ---------------------------------------------------------------------------------------------
# a bundle of this family: its tokenizer, and the ONNX graph


def tokenizer_for(bundle) -> TextTokenizer:
    """The tokenizer a bundle carries (tokenizer.json, verified by the manifest)."""
    from textclf.bundle import BundleError

    data = (bundle.files or {}).get("tokenizer.json")
    if data is None:
        raise BundleError(f"{bundle.path}: an encoder bundle without tokenizer.json in its manifest")
    try:
        return TextTokenizer(data.decode("utf-8"), int(bundle.config["model"]["max_len"]))
    except Exception as err:  # noqa: BLE001 - the Rust library raises its own exception type
        raise BundleError(f"{bundle.path}: tokenizer.json is not readable by `tokenizers`: {err}") from None


def bundle_html(bundle) -> bool:
    return bool(((bundle.config.get("text") or {}).get("clean") or {}).get("html", True))


def gather_rows(
    ids: np.ndarray, offsets: np.ndarray, idx: np.ndarray, counts: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Documents `idx` of a count matrix (`textclf.onnx_runtime.term_counts`) as their own
    (ids, offsets [len(idx)], counts) batch."""
    starts, ends = offsets[idx], offsets[idx + 1]
    lengths = ends - starts
    batch_off = np.zeros(len(idx), np.int64)
    np.cumsum(lengths[:-1], out=batch_off[1:])
    pos = np.arange(int(lengths.sum())) + np.repeat(starts - batch_off, lengths)
    return ids[pos].astype(np.int64), batch_off, counts[pos]


class EncoderGraph(nn.Module):
    """`EncoderModel` + softmax for export: the encoder's pooled embedding, then the linear
    family's ONNX-friendly heads (textclf.families.linear.LinearGraph) with the embedding term added."""

    def __init__(self, model: EncoderModel):
        from textclf.families.linear import LinearGraph

        super().__init__()
        self.encoder = model.encoder
        self.linear = LinearGraph(model.linear)
        self.emb_weight = nn.Parameter(model.emb_weight.detach().clone() * model.scale, requires_grad=False)

    def forward(self, ids, offsets, counts, input_ids, attention_mask) -> torch.Tensor:
        return self.linear(ids, offsets, counts, extra=self.encoder(input_ids, attention_mask) @ self.emb_weight)


def onnx_example(model: EncoderModel) -> tuple[tuple, list[str], dict]:
    """Trace inputs (batch 2, two lengths) and the dynamic axes of the export."""
    k = min(8, model.cfg.num_embeddings)
    ids = torch.arange(k, dtype=torch.int64)
    offsets = torch.tensor([0, k // 2], dtype=torch.int64)
    counts = torch.arange(1, k + 1, dtype=torch.float32)
    input_ids = (
        torch.tensor([[2, 5, 6, 3], [2, 7, 3, 0]], dtype=torch.int64)
        % model.encoder.embeddings.word_embeddings.num_embeddings
    )
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]], dtype=torch.int64)
    names = ["ids", "offsets", "counts", "input_ids", "attention_mask"]
    axes = {
        "ids": {0: "ids"},
        "offsets": {0: "batch"},
        "counts": {0: "ids"},
        "input_ids": {0: "batch", 1: "length"},
        "attention_mask": {0: "batch", 1: "length"},
        "probs": {0: "batch"},
    }
    return (ids, offsets, counts, input_ids, mask), names, axes


def onnx_proba(session, lists: list[list[int]], pad_id: int, ids, offsets, k: int, batch_tokens: int = 16384):
    """Run an exported encoder graph in the same length-bucketed batches as `predict_proba`."""
    from textclf.onnx_runtime import term_counts

    out = np.zeros((len(lists), k), np.float32)
    lengths = np.array([len(x) for x in lists])
    ids, offsets, counts = term_counts(ids, offsets)
    for idx in buckets(lengths, batch_tokens) if len(lists) else []:
        bi, bo, bc = gather_rows(ids, offsets, idx, counts)
        input_ids, mask = padded([lists[i] for i in idx], pad_id)
        out[idx] = session.run(
            None,
            {"ids": bi, "offsets": bo, "counts": bc, "input_ids": input_ids.numpy(), "attention_mask": mask.numpy()},
        )[0]
    return out


# ---------------------------------------------------------------------------------------------
# the family


def _scores(logp: torch.Tensor, y: torch.Tensor) -> dict:
    """Loss, accuracy and macro-F1 (over the classes that occur) of log-probabilities."""
    from sklearn.metrics import f1_score

    pred = logp.argmax(1)
    return {
        "loss": float(F.nll_loss(logp.float(), y)),
        "accuracy": float((pred == y).float().mean()),
        "macro_f1": float(
            f1_score(y, pred, average="macro", labels=np.union1d(y.numpy(), pred.numpy()).tolist(), zero_division=0)
        ),
    }


class EncoderFamily(ModelFamily):
    name = "encoder"

    def model_config(self, p, num_embeddings: int, num_classes: int, mode: str = "frozen"):
        return model_config(p, num_embeddings, num_classes, mode)

    def build(self, cfg, sparse: bool = False, encoder: dict | None = None) -> nn.Module:
        if not isinstance(encoder, dict) or not isinstance(encoder.get("config"), dict):
            raise ValueError("an encoder model needs its encoder record (config.json `encoder`)")
        return EncoderModel(cfg, encoder)

    def reports_once(self, p, device) -> bool:
        return mode_for(p.encoder.mode, device) == "frozen"  # a frozen fit reports once, at its end

    def train(self, data, p, device, *, checkpoint=None, on_epoch=None, deadline=None, fingerprint="", **_):
        """Frozen (embeddings + the linear heads) or fine-tuned."""
        from textclf.training.checkpoint import TrainState
        from textclf.training.loop import FitResult

        tr, va, cfg, _, _ = data.get(p)
        mode = mode_for(p.encoder.mode, device)
        cfg = model_config(p, cfg.num_embeddings, cfg.num_classes, mode)
        embedder = data.embedder(p, device)
        meta = embedder.source.meta()
        model = EncoderModel(cfg, meta)
        model.encoder.load_state_dict(embedder.encoder.state_dict())
        t0 = time.perf_counter()
        if mode == "frozen":
            from textclf.families.linear import one_fit_result

            train_emb, valid_emb = data.embeddings(p, device)
            model, logp, fitted = fit_frozen(tr, va, train_emb, valid_emb, model, p, device, deadline)
            val = _scores(logp, va.labels.cpu())
            result = one_fit_result("encoder (frozen)", model, fitted, val, tr.tokens, on_epoch, deadline)
        else:
            tok = embedder.tokenizer
            ft = [
                FinetuneData(tok(data.texts(s)), e.ids, e.offsets, e.labels) for s, e in (("train", tr), ("valid", va))
            ]
            best, history, best_epoch, best_f1, tps = fit_finetune(
                model,
                ft[0],
                ft[1],
                p.encoder,
                pad_id=tok.pad_id,
                device=device,
                seed=p.seed,
                class_weight=p.class_weight,
                amp=p.amp,
                patience=p.patience,
                checkpoint=checkpoint / "encoder.pt" if checkpoint is not None else None,
                on_epoch=on_epoch,
                deadline=deadline,
                fingerprint=fingerprint,
            )
            state = TrainState(
                epoch=len(history), step=0, best_f1=best_f1, best_epoch=best_epoch, history=history, done=True
            )
            result = FitResult(best, state, tps, cut=deadline is not None and time.monotonic() >= deadline)
        log.info("encoder (%s) trained in %.1f s", mode, time.perf_counter() - t0)
        return result, cfg, {"meta": {**meta, "mode": mode}}

    def valid_predictions(self, data, out, device="cpu") -> tuple[np.ndarray, np.ndarray]:
        _, va, _, _, _ = data.get(out.params)
        model = EncoderModel(out.cfg, out.encoder["meta"])
        model.load_state_dict(out.result.best_state)
        if out.encoder["meta"]["mode"] == "frozen":  # the valid embeddings are cached: no re-embedding
            emb = data.embeddings(out.params)[1]
            pred = head_logp(model, va.ids.cpu(), va.offsets.cpu(), emb).argmax(1).numpy()
        else:
            tok = data.embedder(out.params).tokenizer
            pred = predict_proba(
                model, tok, va.ids.cpu().numpy(), va.offsets.cpu().numpy(), data.texts("valid")
            ).argmax(1)
        return va.labels.cpu().numpy(), pred

    def suggest(self, trial, p, num, cat) -> dict:
        return suggest(trial, p, num, cat)

    def as_written(self, p) -> dict:
        return {
            "encoder.max_len": p.encoder.max_len,
            "encoder:linear.C": p.linear.C,
            "encoder:linear.nb_mix": p.linear.nb_mix,
            "encoder.feature_scale": p.encoder.feature_scale,
            "encoder.lr": p.encoder.lr,
            "encoder.epochs": p.encoder.epochs,
            "encoder.layer_decay": p.encoder.layer_decay,
        }

    def graph(self, model: nn.Module) -> nn.Module:
        return EncoderGraph(model)

    def example(self, model: nn.Module) -> tuple[tuple, list[str], dict]:
        return onnx_example(model)

    def graph_meta(self, model: nn.Module, bundle) -> dict[str, str]:
        # the runner pads the encoder's token ids with the tokenizer's pad id
        return {"textclf.pad_id": str(tokenizer_for(bundle).pad_id)}

    def check_inputs(self, model, bundle, ids, offsets, texts=None) -> tuple:
        # the encoder reads the text too
        if texts is None:
            raise InputError("an encoder bundle is exported with the test split's text")
        tok = tokenizer_for(bundle)
        etexts = encoder_texts(texts, bundle_html(bundle))
        return predict_proba(model, tok, ids, offsets, etexts).astype(np.float64), tok(etexts)

    def onnx_proba(self, runner, ids, offsets, batch_size: int, lists=None) -> np.ndarray:
        n = len(offsets) - 1
        if lists is None or len(lists) != n:
            raise ValueError("an encoder graph needs the encoder's token ids of every document")
        return onnx_proba(
            runner.session,
            lists,
            runner.pad_id,
            np.asarray(ids, np.int64),
            np.asarray(offsets, np.int64),
            len(runner.labels),
        )


FAMILY = EncoderFamily()
