"""Torch modules and their input encoding.

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
    type: str  # bag | cnn
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


class BagModel(nn.Module):
    """fastText-style: mean of token (+ bigram) embeddings → optional hidden layer → classes."""

    def __init__(self, cfg: ModelConfig, sparse: bool = False):
        super().__init__()
        self.cfg = cfg
        mode = "sum" if cfg.weighting == "idf" else "mean"
        self.embedding = nn.EmbeddingBag(cfg.num_embeddings, cfg.embed_dim, mode=mode, sparse=sparse)
        if cfg.weighting == "idf":
            # inverse document frequency of every id, fixed from the train split (a buffer: it is
            # saved in the bundle but not trained)
            self.register_buffer("idf", torch.ones(cfg.num_embeddings))
        layers: list[nn.Module] = [nn.Dropout(cfg.dropout)] if cfg.dropout else []
        if cfg.hidden_dim:
            layers += [nn.Linear(cfg.embed_dim, cfg.hidden_dim), nn.ReLU()]
            if cfg.dropout:
                layers.append(nn.Dropout(cfg.dropout))
        layers.append(nn.Linear(cfg.hidden_dim or cfg.embed_dim, cfg.num_classes))
        self.head = nn.Sequential(*layers)
        nn.init.uniform_(self.embedding.weight, -0.5 / cfg.embed_dim, 0.5 / cfg.embed_dim)

    def forward(self, ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        if self.cfg.weighting != "idf":
            return self.head(self.embedding(ids, offsets))
        w = self.idf[ids]
        summed = self.embedding(ids, offsets, per_sample_weights=w)
        lengths = torch.diff(offsets, append=torch.tensor([len(ids)], device=ids.device))
        bag = torch.repeat_interleave(torch.arange(len(offsets), device=ids.device), lengths, output_size=len(ids))
        denom = torch.zeros(len(offsets), device=ids.device, dtype=w.dtype).index_add_(0, bag, w)
        return self.head(summed / denom.clamp_min(1e-6)[:, None])


class LinearModel(nn.Module):
    """Full-rank linear classifiers over the document's TF-IDF vector, as scikit-learn's
    TfidfVectorizer(sublinear_tf=True) + LogisticRegression compute it, plus a second head whose
    weights were fitted on naive-Bayes log-count-ratio-scaled features (NBSVM, Wang & Manning
    2012). The two make different errors; their probabilities are averaged with weight `nb_mix`.

    The TF-IDF vector is computed from (ids, offsets) inside the model — term counts per document,
    1 + log(tf), the train split's IDF, L2 normalisation — so prediction, evaluation and the ONNX
    graph take the same input as every other family. `<pad>` and `<unk>` carry no weight.
    `forward` returns log-probabilities: softmax of them is the averaged distribution."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        v, k = cfg.num_embeddings, cfg.num_classes
        self.register_buffer("idf", torch.ones(v))
        self.lr_weight = nn.Parameter(torch.zeros(v, k))
        self.lr_bias = nn.Parameter(torch.zeros(k))
        self.nb_weight = nn.Parameter(torch.zeros(v, k))
        self.nb_bias = nn.Parameter(torch.zeros(k))

    def term_weights(self, ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """Per-id weights whose sum over a document's copies of an id is its TF-IDF value."""
        return tfidf_weights(ids, offsets, self.idf, self.cfg.sublinear_tf)

    def forward(self, ids: torch.Tensor, offsets: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        """`extra`: logits [batch, classes] added to the LR head's (the encoder family's embedding term)."""
        w = self.term_weights(ids, offsets)
        mix = self.cfg.nb_mix
        lr = nn.functional.embedding_bag(ids, self.lr_weight, offsets, mode="sum", per_sample_weights=w) + self.lr_bias
        if extra is not None:
            lr = lr + extra
        if mix == 0:
            return lr
        nb = nn.functional.embedding_bag(ids, self.nb_weight, offsets, mode="sum", per_sample_weights=w) + self.nb_bias
        if mix == 1:
            return nb
        return torch.log(((1 - mix) * torch.softmax(lr, 1) + mix * torch.softmax(nb, 1)).clamp_min(1e-30))


def doc_index(offsets: torch.Tensor, total: int) -> torch.Tensor:
    """The document of every id, from bag offsets (starts; the last bag ends at `total`)."""
    lengths = torch.diff(offsets, append=torch.tensor([total], device=offsets.device))
    return torch.repeat_interleave(torch.arange(len(offsets), device=offsets.device), lengths, output_size=total)


def tfidf_weights(ids: torch.Tensor, offsets: torch.Tensor, idf: torch.Tensor, sublinear: bool = True) -> torch.Tensor:
    """Per-id weights w such that summing w over a document's copies of id i gives its TF-IDF
    value (1 + log tf_i) * idf_i / ||.||_2 (or tf_i * idf_i). Ids 0 and 1 (<pad>, <unk>) get 0."""
    if len(ids) == 0:
        return torch.zeros(0, device=ids.device)
    doc = doc_index(offsets, len(ids))
    _, inverse, counts = torch.unique(doc * idf.shape[0] + ids, return_inverse=True, return_counts=True)
    tf = counts[inverse].to(idf.dtype)
    value = ((1 + torch.log(tf)) if sublinear else tf) * idf[ids] * (ids > 1).to(idf.dtype)
    sq = torch.zeros(len(offsets), device=ids.device, dtype=idf.dtype).index_add_(0, doc, value * value / tf)
    return value / tf / torch.sqrt(sq).clamp_min(1e-12)[doc]


class CNNModel(nn.Module):
    """TextCNN (Kim 2014): embeddings → parallel 1-D convolutions → max-pool over time → classes."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embedding = nn.Embedding(cfg.num_embeddings, cfg.embed_dim, padding_idx=0)
        self.convs = nn.ModuleList(nn.Conv1d(cfg.embed_dim, cfg.num_filters, k) for k in cfg.kernel_sizes)
        self.dropout = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(cfg.num_filters * len(cfg.kernel_sizes), cfg.num_classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        # ids: [batch, length] padded with 0; pad to the widest kernel so every conv has output
        min_len = max(self.cfg.kernel_sizes)
        if ids.shape[1] < min_len:
            ids = nn.functional.pad(ids, (0, min_len - ids.shape[1]))
        return self.logits(ids)

    def logits(self, ids: torch.Tensor) -> torch.Tensor:
        """Class scores of padded ids (at least as wide as the widest kernel)."""
        x = self.embedding(ids).transpose(1, 2)  # [B, D, L]
        lengths = (ids != 0).sum(dim=1, keepdim=True)  # id 0 is only ever padding
        pooled = []
        for conv, k in zip(self.convs, self.cfg.kernel_sizes, strict=True):
            h = torch.relu(conv(x))  # [B, F, L-k+1]
            # Windows that lie wholly in the padding must not win the max-pool: without this mask a
            # document's scores would depend on the longest document in its batch.
            valid = torch.arange(h.shape[2], device=ids.device)[None, :] < torch.clamp(lengths - k + 1, min=1)
            pooled.append((h * valid[:, None, :].to(h.dtype)).amax(dim=2))
        return self.out(self.dropout(torch.cat(pooled, dim=1)))


def build_model(cfg: ModelConfig, sparse: bool = False, encoder: dict | None = None) -> nn.Module:
    """The family's torch module; `encoder`: the bundle's encoder record (the encoder family)."""
    if cfg.type == "encoder":
        from textclf.families.encoder import EncoderModel

        if not isinstance(encoder, dict) or not isinstance(encoder.get("config"), dict):
            raise ValueError("an encoder model needs its encoder record (config.json `encoder`)")
        return EncoderModel(cfg, encoder)
    if cfg.type == "bag":
        return BagModel(cfg, sparse=sparse)
    if cfg.type == "linear":
        return LinearModel(cfg)
    if cfg.type == "cnn":
        return CNNModel(cfg)
    raise ValueError(f"unknown model type {cfg.type!r}")


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
    inner = getattr(model, "module", model)
    if isinstance(inner, (BagModel, LinearModel)):
        return model(*gather_bag(ids, offsets, idx))
    return model(gather_padded(ids, offsets, idx, inner.cfg.max_len))


@torch.no_grad()
def predict_proba(model: nn.Module, ids: torch.Tensor, offsets: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """Class probabilities for every encoded document, in order (float32, on CPU)."""
    model.eval()
    n = len(offsets) - 1
    out = []
    order = torch.arange(n, device=ids.device)
    if isinstance(model, CNNModel):  # group similar lengths: less padding
        order = torch.argsort(offsets[1:] - offsets[:-1])
    for s in range(0, n, batch_size):
        idx = order[s : s + batch_size]
        out.append(torch.softmax(forward_batch(model, ids, offsets, idx).float(), dim=1))
    probs = torch.cat(out) if out else torch.zeros((0, model.cfg.num_classes))
    result = torch.empty_like(probs)
    result[order] = probs
    return result.cpu()
