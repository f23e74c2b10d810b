"""What every model family shares (the families' modules: textclf.families): the bundle's
`ModelConfig`, the input encoding, batching and prediction.

`encode` turns token lists into one flat id tensor + per-document offsets (the layout
`nn.EmbeddingBag` takes). The trainer keeps that pair on the device and cuts batches out of it
with tensor indexing (`gather_bag`, `gather_padded`): no per-document Python on the hot path.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
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
    values = np.asarray(values, dtype=object)
    ids = pd.Categorical(values, categories=list(labels)).codes.astype(np.int64)
    if (ids < 0).any():
        raise ValueError(f"labels outside {list(labels)}: {sorted(set(values[ids < 0].tolist()))}")
    return ids


class VocabIndex:
    """token → id lookups against one vocabulary, with every table built once.

    `pc.index_in` builds a hash table of the whole vocabulary on every call (~4 ms for 75k
    entries), whatever the batch. Instead a batch's tokens are dictionary-encoded (Arrow hashes
    the batch, not the vocabulary), and only its distinct words are looked up — in a dict built
    once, or, when a batch has more than DISTINCT of them, with one `index_in`. A bigram is found
    by its two words' ids (a pandas integer index, built once, of the vocabulary's "a b" entries
    by (id of a, id of b)): no pair string is built. The words of a vocabulary bigram that are
    not entries themselves get ids after the vocabulary for that purpose only (as unigrams they
    stay `<unk>`). Documents with at most SMALL tokens and pairs together go through the dict
    one token at a time (`encode_small`: a few µs for one document). All paths give the ids the
    strings would (tests/model/test_model.py)."""

    SMALL = 512
    DISTINCT = 8192

    def __init__(self, tokens: list[str] | pa.Array):
        self.array = tokens if isinstance(tokens, pa.Array) else pa.array(tokens, pa.string())
        self._ids: dict[str, int] | None = None
        self._pairs: tuple | None = None

    def _table(self) -> dict[str, int]:
        if self._ids is None:  # the first occurrence wins, as in index_in
            self._ids = {t: i for i, t in reversed(list(enumerate(self.array.to_pylist())))}
        return self._ids

    def _pair_table(self) -> tuple[dict[str, int], pa.Array, int, pd.Index, np.ndarray]:
        """(word → id, extra words included; the same as an array; their count W; the index
        of left * W + right over the bigram entries; the bigram entries' ids)."""
        if self._pairs is None:
            known = self._table()
            v = len(self.array)
            extra: dict[str, int] = {}
            keys, ids = [], []
            for word, i in known.items():
                parts = word.split(" ") if isinstance(word, str) else ()
                if len(parts) != 2 or not (parts[0] and parts[1]):
                    continue  # no pair of tokens can equal it (tokens hold no spaces)
                left, right = (known.get(w) for w in parts)
                left = extra.setdefault(parts[0], v + len(extra)) if left is None else left
                right = extra.setdefault(parts[1], v + len(extra)) if right is None else right
                keys.append((left, right))
                ids.append(i)
            width = v + len(extra)
            words = pa.concat_arrays([self.array, pa.array(list(extra), pa.string())]) if extra else self.array
            pairs = np.array(keys, np.int64).reshape(-1, 2)
            index = pd.Index(pairs[:, 0] * width + pairs[:, 1])
            self._pairs = ({**extra, **known}, words, width, index, np.array(ids, np.int64))
        return self._pairs

    def _word_ids(self, values: pa.Array) -> np.ndarray:
        """The (extended) id of every string in `values`, -1 where none (or null)."""
        ext, words, _, _, _ = self._pair_table()
        if len(values) == 0:
            return np.zeros(0, np.int64)
        encoded = pc.dictionary_encode(values)
        distinct = encoded.dictionary
        if len(distinct) > self.DISTINCT:
            found = pc.fill_null(pc.index_in(distinct, value_set=words), -1).to_numpy(zero_copy_only=False)
        else:
            get = ext.get
            found = np.fromiter((get(t, -1) for t in distinct.to_pylist()), np.int64, len(distinct))
        codes = encoded.indices
        if codes.null_count:  # a null token: no id
            found = np.append(found, -1)
            codes = pc.fill_null(codes, len(distinct))
        return found.astype(np.int64)[codes.to_numpy(zero_copy_only=False)]

    def lookup(self, values: pa.Array) -> np.ndarray:
        """ids (int64) of the strings `values`, -1 where a value is not in the vocabulary (or null)."""
        found = self._word_ids(values)
        found[found >= len(self.array)] = -1  # a bigram's extra word is no vocabulary entry
        return found

    def lookup_with_pairs(self, values: pa.Array, first: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(`lookup(values)`, the ids of the bigrams "values[i] values[i+1]" for i in `first`,
        -1 where absent)."""
        _, _, width, index, pair_ids = self._pair_table()
        found = self._word_ids(values)
        left, right = found[first], found[first + 1]
        both = np.flatnonzero((left >= 0) & (right >= 0))
        bi = np.full(len(first), -1, np.int64)
        at = index.get_indexer(left[both] * width + right[both])
        bi[both[at >= 0]] = pair_ids[at[at >= 0]]
        found[found >= len(self.array)] = -1
        return found, bi

    def encode_small(self, docs: list[list[str] | None], pairs: bool) -> tuple[np.ndarray, np.ndarray]:
        """`encode` of a few documents' tokens (Python lists), with the dict: the same ids as the
        vectorised path (tested), at a few µs per document instead of a few dozen array calls."""
        get = self._table().get
        ids: list[int] = []
        offsets = [0]
        for toks in docs:
            toks = toks or []
            ids.extend([get(t, 1) for t in toks])  # unknown → <unk>
            if pairs:  # unseen bigrams add nothing
                ids.extend([i for a, b in zip(toks[:-1], toks[1:], strict=True) if (i := get(f"{a} {b}", -1)) >= 0])
            offsets.append(len(ids))
        return np.array(ids, np.int64), np.array(offsets, np.int64)


def encode(
    tokens: pa.ListArray | pa.ChunkedArray, vocab_tokens: pa.Array | VocabIndex, enc: EncodingConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Token lists → (ids int64 [total], offsets int64 [n+1]): per document its unigrams' ids,
    then its bigrams' (vocabulary or hashed). Unknown tokens → `<unk>` (1); unseen bigrams add
    nothing."""
    vocab = vocab_tokens if isinstance(vocab_tokens, VocabIndex) else VocabIndex(vocab_tokens)
    if isinstance(tokens, pa.ChunkedArray):
        tokens = tokens.combine_chunks()
    n = len(tokens)
    values = pc.list_flatten(tokens)
    if enc.bigrams != "hashed" and 2 * len(values) <= vocab.SMALL:
        return vocab.encode_small(tokens.to_pylist(), enc.bigrams == "vocab")
    uni_off = _offsets(tokens)
    if enc.bigrams == "none":
        uni = vocab.lookup(values)
        uni[uni < 0] = 1
        return uni, uni_off
    lengths = np.diff(uni_off)
    pair_doc = np.repeat(np.arange(n), np.maximum(lengths - 1, 0))  # the document of each pair
    if enc.bigrams == "vocab":
        # the pairs (i, i+1) within one document: i is not its document's last token
        keep = np.ones(max(len(values) - 1, 0), dtype=bool)
        last = uni_off[1:][lengths > 0] - 1
        keep[last[last < len(values) - 1]] = False
        uni, bi = vocab.lookup_with_pairs(values, np.flatnonzero(keep))
        found = bi >= 0  # unseen bigrams add nothing
        bi, pair_doc = bi[found], pair_doc[found]
    else:  # hashed into buckets after the vocabulary
        uni = vocab.lookup(values)
        pvals = pc.list_flatten(bigrams(tokens))
        h = hash64(pvals, key=BIGRAM_HASH_KEY) if len(pvals) else np.zeros(0, np.uint64)
        bi = (h % np.uint64(enc.hash_buckets)).astype(np.int64) + enc.vocab_size
    poff = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(pair_doc, minlength=n), out=poff[1:])
    uni[uni < 0] = 1
    return _interleave(uni, uni_off, bi, poff)


def _offsets(lists: pa.ListArray) -> np.ndarray:
    off = lists.offsets.to_numpy().astype(np.int64)
    return off - off[0]


def _interleave(a: np.ndarray, a_off: np.ndarray, b: np.ndarray, b_off: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per document: a's ids then b's ids, vectorised."""
    out = np.empty(len(a) + len(b), dtype=np.int64)
    # an element of document d moves by the other array's elements before it
    out[np.arange(len(a)) + np.repeat(b_off[:-1], np.diff(a_off))] = a
    out[np.arange(len(b)) + np.repeat(a_off[1:], np.diff(b_off))] = b
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
    padded = layout(model) == "padded"
    if not padded and 0 < n <= batch_size:  # one batch of the documents as they lie: no gather
        return torch.softmax(model(ids, offsets[:-1]).float(), dim=1).cpu()
    out = []
    order = torch.arange(n, device=ids.device)
    if padded:  # group similar lengths: less padding
        order = torch.argsort(offsets[1:] - offsets[:-1])
    for s in range(0, n, batch_size):
        idx = order[s : s + batch_size]
        out.append(torch.softmax(forward_batch(model, ids, offsets, idx).float(), dim=1))
    probs = torch.cat(out) if out else torch.zeros((0, model.cfg.num_classes))
    result = torch.empty_like(probs)
    result[order] = probs
    return result.cpu()
