"""The `cnn` family: TextCNN (Kim 2014) — embeddings, parallel 1-D convolutions, max-pool over
time, classes (`CNNModel`), trained by the epoch loop on padded batches of similar length; its
ONNX graph (`CNNGraph`); its autotune space. Params: `train.cnn.*` (textclf.params.CNNParams) and
the epoch loop's `train.*`. Unigrams only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from textclf.families.base import EpochFamily
from textclf.model import ModelConfig

if TYPE_CHECKING:
    from textclf.params import TrainParams


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


# ---------------------------------------------------------------------------------------------
# export


class CNNGraph(nn.Module):
    """`CNNModel` + softmax, minus its pad-to-the-widest-kernel branch (the runner pads)."""

    def __init__(self, model: CNNModel):
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model.logits(ids), dim=1)


# ---------------------------------------------------------------------------------------------


class CNNFamily(EpochFamily):
    name = "cnn"
    layout = "padded"
    uses_bigrams = False

    def model_config(self, p: TrainParams, num_embeddings: int, num_classes: int) -> ModelConfig:
        return ModelConfig(
            type="cnn",
            num_embeddings=num_embeddings,
            embed_dim=p.cnn.embed_dim,
            num_classes=num_classes,
            dropout=p.cnn.dropout,
            kernel_sizes=p.cnn.kernel_sizes,
            num_filters=p.cnn.num_filters,
            max_len=p.cnn.max_len,
        )

    def build(self, cfg: ModelConfig, sparse: bool = False, encoder: dict | None = None) -> nn.Module:
        return CNNModel(cfg)

    def graph(self, model: nn.Module) -> nn.Module:
        return CNNGraph(model)

    def example(self, model: nn.Module) -> tuple[tuple, list[str], dict]:
        width = max(model.cfg.kernel_sizes) + 2
        args = (torch.ones((2, width), dtype=torch.int64),)
        return args, ["ids"], {"ids": {0: "batch", 1: "length"}, "probs": {0: "batch"}}

    def graph_meta(self, model: nn.Module, bundle) -> dict[str, str]:
        # what the runner needs to pad exactly as predict_proba does
        return {"textclf.max_len": str(model.cfg.max_len), "textclf.min_len": str(max(model.cfg.kernel_sizes))}

    def onnx_proba(self, runner, ids: np.ndarray, offsets: np.ndarray, batch_size: int, lists=None) -> np.ndarray:
        from textclf.onnx_runtime import run_padded

        max_len, min_len = int(runner.meta["textclf.max_len"]), int(runner.meta["textclf.min_len"])
        return run_padded(runner.session, ids, offsets, len(runner.labels), max_len, min_len, batch_size)


FAMILY = CNNFamily()
