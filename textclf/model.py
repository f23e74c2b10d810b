"""What every model family shares (the families' modules: textclf.families): the bundle's
`ModelConfig`, the input encoding, batching and prediction.

`encode` turns token lists into one flat id tensor + per-document offsets (the layout
`nn.EmbeddingBag` takes). The trainer keeps that pair on the device and cuts batches out of it
with tensor indexing (`gather_bag`, `gather_padded`): no per-document Python on the hot path.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch import nn

from textclf.text import bigrams, hash64

BIGRAM_HASH_KEY = "textclf-bigram-1"


@dataclass(frozen=True)
class ModelConfig:
    type: str  # the family (textclf.families)
    num_embeddings: int
    embed_dim: int
    num_classes: int
    hidden_dim: int = 0
    dropout: float = 0.0
    kernel_sizes: tuple[int, ...] = (3, 4, 5)
    num_filters: int = 100
    max_len: int = 400
    weighting: str = "none"  # bag: none = mean of embeddings | idf = IDF-weighted mean
    nb_mix: float = 0.5  # linear: weight of the naive-Bayes-scaled head in the probability average
    sublinear_tf: bool = True  # linear: term frequency 1 + log(tf)
    feature_scale: float = 0.0  # encoder: weight of the pooled embedding in the LR head

    def to_dict(self) -> dict:
        return {**asdict(self), "kernel_sizes": list(self.kernel_sizes)}

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        return cls(**{**d, "kernel_sizes": tuple(d.get("kernel_sizes", (3, 4, 5)))})


@dataclass(frozen=True)
class EncodingConfig:
    vocab_size: int
    bigrams: str = "none"  # none | vocab | hashed
    hash_buckets: int = 0

    @property
    def num_embeddings(self) -> int:
        return self.vocab_size + (self.hash_buckets if self.bigrams == "hashed" else 0)


def doc_index(offsets: torch.Tensor, total: int) -> torch.Tensor:
    """The document of every id, from bag offsets (starts; the last bag ends at `total`)."""
    lengths = torch.diff(offsets, append=torch.tensor([total], device=offsets.device))
    return torch.repeat_interleave(torch.arange(len(offsets), device=offsets.device), lengths, output_size=total)


def build_model(cfg: ModelConfig, sparse: bool = False, encoder: dict | None = None) -> nn.Module:
    """The family's torch module (textclf.families); `encoder`: the bundle's encoder record (the
    encoder family)."""
    from textclf.families.registry import family

    return family(cfg.type).build(cfg, sparse=sparse, encoder=encoder)


def layout(model: nn.Module) -> str:
    """How `model` (or the module inside a DistributedDataParallel wrapper) takes a batch:
    "bag" (ids, offsets) or "padded" (ids [batch, length])."""
    from textclf.families.registry import family

    return family(getattr(model, "module", model).cfg.type).layout


def idf_weights(ids: torch.Tensor, offsets: torch.Tensor, num_embeddings: int) -> torch.Tensor:
    """Smoothed IDF (as scikit-learn's TfidfVectorizer): log((1 + n) / (1 + df)) + 1."""
    n = len(offsets) - 1
    doc = torch.repeat_interleave(torch.arange(n), offsets[1:] - offsets[:-1])
    pairs = torch.unique(doc * num_embeddings + ids.cpu())  # one (document, id) pair per occurrence set
    df = torch.bincount(pairs % num_embeddings, minlength=num_embeddings).float()
    return torch.log((1.0 + n) / (1.0 + df)) + 1.0


# ---------------------------------------------------------------------------------------------
# encoding: labels → class indices; token lists → flat ids + offsets


def label_ids(values, labels: list[str]) -> np.ndarray:
    """The class index (position in `labels`) of every label value, vectorised; ValueError
    naming the values that are not among `labels`."""
    import pandas as pd

    values = np.asarray(values, dtype=object)
    ids = pd.Categorical(values, categories=list(labels)).codes.astype(np.int64)
    if (ids < 0).any():
        raise ValueError(f"labels outside {list(labels)}: {sorted(set(values[ids < 0].tolist()))}")
    return ids


class VocabIndex:
    """token → id lookups against one vocabulary, with the hash table built once.

    `pc.index_in` rebuilds its hash table of the whole vocabulary on every call (~1 ms per 40k
    entries): fine for a split, most of the cost of a single-document prediction. Small batches
    go through a pandas Index built once; large ones through Arrow."""

    SMALL = 50_000

    def __init__(self, tokens: list[str] | pa.Array):
        self.array = tokens if isinstance(tokens, pa.Array) else pa.array(tokens, pa.string())
        self._index = None

    def lookup(self, values: pa.Array) -> pa.Array:
        """ids (int32) of `values`, null where a value is not in the vocabulary."""
        if len(values) > self.SMALL:
            return pc.index_in(values, value_set=self.array)
        if self._index is None:
            import pandas as pd

            self._index = pd.Index(self.array.to_numpy(zero_copy_only=False), dtype=object)
        pos = self._index.get_indexer(values.to_numpy(zero_copy_only=False))
        return pa.array(pos, pa.int32(), mask=pos < 0)


def encode(
    tokens: pa.ListArray | pa.ChunkedArray, vocab_tokens: pa.Array | VocabIndex, enc: EncodingConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Token lists → (ids int64 [total], offsets int64 [n+1]). Unknown tokens → `<unk>` (1)."""
    vocab = vocab_tokens if isinstance(vocab_tokens, VocabIndex) else VocabIndex(vocab_tokens)
    if isinstance(tokens, pa.ChunkedArray):
        tokens = tokens.combine_chunks()
    n = len(tokens)
    values = pc.list_flatten(tokens)
    uni = pc.fill_null(vocab.lookup(values), 1).to_numpy(zero_copy_only=False)
    uni_off = _offsets(tokens)
    if enc.bigrams == "none":
        return uni.astype(np.int64), uni_off
    pairs = bigrams(tokens)
    pvals = pc.list_flatten(pairs)
    poff = _offsets(pairs)
    pparent = np.repeat(np.arange(n), np.diff(poff))
    if enc.bigrams == "vocab":
        bi = vocab.lookup(pvals)
        keep = pc.is_valid(bi).to_numpy(zero_copy_only=False)  # unseen bigrams add nothing
        bi = bi.to_numpy(zero_copy_only=False)[keep] if len(bi) else np.zeros(0, np.int64)
        pparent = pparent[keep]
        poff = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(pparent, minlength=n), out=poff[1:])
    else:  # hashed into buckets after the vocabulary
        h = hash64(pvals, key=BIGRAM_HASH_KEY) if len(pvals) else np.zeros(0, np.uint64)
        bi = (h % np.uint64(enc.hash_buckets)).astype(np.int64) + enc.vocab_size
    return _interleave(uni.astype(np.int64), uni_off, bi.astype(np.int64), poff)


def _offsets(lists: pa.ListArray) -> np.ndarray:
    off = lists.offsets.to_numpy().astype(np.int64)
    return off - off[0]


def _interleave(a: np.ndarray, a_off: np.ndarray, b: np.ndarray, b_off: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per document: a's ids then b's ids, vectorised."""
    n = len(a_off) - 1
    out = np.empty(len(a) + len(b), dtype=np.int64)
    a_parent = np.repeat(np.arange(n), np.diff(a_off))
    b_parent = np.repeat(np.arange(n), np.diff(b_off))
    out[np.arange(len(a)) + b_off[a_parent]] = a
    out[np.arange(len(b)) + a_off[b_parent + 1]] = b
    return out, a_off + b_off


# ---------------------------------------------------------------------------------------------
# batching: cut a batch out of the resident (ids, offsets) with tensor ops only


def gather_bag(ids: torch.Tensor, offsets: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    starts = offsets[idx]
    lengths = offsets[idx + 1] - starts
    batch_off = torch.zeros_like(lengths)
    batch_off[1:] = torch.cumsum(lengths, 0)[:-1]
    total = int(lengths.sum())
    pos = torch.arange(total, device=ids.device) + torch.repeat_interleave(
        starts - batch_off, lengths, output_size=total
    )
    return ids[pos], batch_off


def gather_padded(ids: torch.Tensor, offsets: torch.Tensor, idx: torch.Tensor, max_len: int) -> torch.Tensor:
    starts = offsets[idx]
    lengths = torch.clamp(offsets[idx + 1] - starts, max=max_len)
    width = max(int(lengths.max()), 1) if len(idx) else 1
    pos = torch.arange(width, device=ids.device)
    mask = pos[None, :] < lengths[:, None]
    flat = torch.where(mask, starts[:, None] + pos[None, :], torch.zeros_like(mask, dtype=starts.dtype))
    return torch.where(mask, ids[flat], torch.zeros((), dtype=ids.dtype, device=ids.device))


def forward_batch(model: nn.Module, ids: torch.Tensor, offsets: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    # `model` may be a DistributedDataParallel wrapper: dispatch on the module inside it, but call
    # the wrapper (its forward is what hooks the gradient all-reduce)
    if layout(model) == "bag":
        return model(*gather_bag(ids, offsets, idx))
    return model(gather_padded(ids, offsets, idx, getattr(model, "module", model).cfg.max_len))


@torch.no_grad()
def predict_proba(model: nn.Module, ids: torch.Tensor, offsets: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """Class probabilities for every encoded document, in order (float32, on CPU)."""
    model.eval()
    n = len(offsets) - 1
    out = []
    order = torch.arange(n, device=ids.device)
    if layout(model) == "padded":  # group similar lengths: less padding
        order = torch.argsort(offsets[1:] - offsets[:-1])
    for s in range(0, n, batch_size):
        idx = order[s : s + batch_size]
        out.append(torch.softmax(forward_batch(model, ids, offsets, idx).float(), dim=1))
    probs = torch.cat(out) if out else torch.zeros((0, model.cfg.num_classes))
    result = torch.empty_like(probs)
    result[order] = probs
    return result.cpu()
