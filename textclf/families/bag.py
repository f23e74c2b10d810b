"""The `bag` family: fastText-style — the mean (or IDF-weighted mean) of token and bigram
embeddings, an optional hidden layer, classes (`BagModel`), trained by the epoch loop; its ONNX
graph (`BagGraph`); its autotune space. Params: `train.bag.*` (textclf.params.BagParams) and the
epoch loop's `train.*`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from textclf.families.base import EpochFamily
from textclf.model import ModelConfig, idf_weights

if TYPE_CHECKING:
    from textclf.params import TrainParams


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


# ---------------------------------------------------------------------------------------------
# export


class BagGraph(nn.Module):
    """`BagModel` + softmax, with the bag sums taken as differences of a running sum.

    A document's sum is cumsum[end] - cumsum[start] over the gathered rows: Gather + CumSum +
    Gather, all vectorised in ONNX Runtime (a scatter-add per id is 3-4x slower there). The
    running sum is kept in float64 so the difference is exact to float32 precision however many
    ids precede a document in the batch (in float32 the error grows with the batch, to ~5e-5).

    With no hidden layer the head is linear, so it commutes with the (weighted) mean: the graph
    gathers rows of `embedding @ W.T` — one logit per class per id instead of `embed_dim`
    values — and adds the bias after pooling. Same function, reassociated (differences ~1e-7),
    and 10-30x less memory traffic per id; the graph file shrinks by the same factor.
    """

    def __init__(self, model: BagModel):
        super().__init__()
        self.idf = model.idf if model.cfg.weighting == "idf" else None
        *rest, last = model.head
        if all(isinstance(m, nn.Dropout) for m in rest):  # eval: dropout is the identity
            with torch.no_grad():
                self.table = nn.Parameter(model.embedding.weight @ last.weight.T, requires_grad=False)
                self.bias = nn.Parameter(last.bias.detach().clone(), requires_grad=False)
            self.head = None
        else:
            self.table, self.bias, self.head = model.embedding.weight, None, model.head

    def forward(self, ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        # ends from the ids' (traced, dynamic) length: torch.tensor([n]) would freeze it
        ends = torch.cat([offsets[1:], torch.ones(1, dtype=torch.int64) * ids.shape[0]])
        rows = self.table[ids]
        if self.idf is not None:
            w = self.idf[ids]
            rows = rows * w[:, None]
            cw = torch.cumsum(torch.cat([torch.zeros(1, dtype=w.dtype), w]).double(), 0)
            denom = (cw[ends] - cw[offsets]).float()
        else:
            denom = (ends - offsets).float()
        cs = torch.cumsum(torch.cat([torch.zeros(1, rows.shape[1], dtype=rows.dtype), rows]).double(), 0)
        # an empty document pools to zeros, as EmbeddingBag's mean does
        pooled = (cs[ends] - cs[offsets]).float() / denom.clamp_min(1e-6)[:, None]
        logits = pooled + self.bias if self.head is None else self.head(pooled)
        return torch.softmax(logits, dim=1)


# ---------------------------------------------------------------------------------------------


class BagFamily(EpochFamily):
    name = "bag"

    def model_config(self, p: TrainParams, num_embeddings: int, num_classes: int) -> ModelConfig:
        return ModelConfig(
            type="bag",
            num_embeddings=num_embeddings,
            embed_dim=p.bag.embed_dim,
            num_classes=num_classes,
            hidden_dim=p.bag.hidden_dim,
            dropout=p.bag.dropout,
            weighting=p.bag.weighting,
        )

    def build(self, cfg: ModelConfig, sparse: bool = False, encoder: dict | None = None) -> nn.Module:
        return BagModel(cfg, sparse=sparse)

    def init(self, model: nn.Module, ids: torch.Tensor, offsets: torch.Tensor) -> None:
        if model.cfg.weighting == "idf":
            model.idf.copy_(idf_weights(ids, offsets, model.cfg.num_embeddings))

    def sparse_gradients(self, p: TrainParams) -> bool:
        # Sparse embedding gradients make plain SGD updates touch only the rows a batch used — the
        # difference between ~1 and ~10 M tokens/s on CPU for large vocabularies. Adam(W), momentum,
        # weight decay and clipping need dense gradients.
        return p.optimizer == "sgd" and p.momentum == 0 and p.weight_decay == 0 and p.grad_clip == 0

    def suggest(self, trial, p: TrainParams, num, cat) -> dict[str, Any]:
        return super().suggest(trial, p, num, cat) | {
            "bag.weighting": cat("bag:weighting", ["none", "idf"], p.bag.weighting),
            "bigrams": cat("bag:bigrams", ["vocab", "none"], p.bigrams),
        }

    def as_written(self, p: TrainParams) -> dict[str, Any]:
        return super().as_written(p) | {"bag:weighting": p.bag.weighting, "bag:bigrams": p.bigrams}

    def graph(self, model: nn.Module) -> nn.Module:
        return BagGraph(model)


FAMILY = BagFamily()
