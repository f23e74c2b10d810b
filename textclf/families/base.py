"""What a model family is: `ModelFamily`, one small subclass per family (textclf.families.<name>).

A family says how its module takes ids (`layout`), whether it reads bigrams, how its bundle's
`ModelConfig` follows from the params, how it builds, trains and predicts on valid, what autotune
may change (`suggest`, in Optuna's names, and `as_written`, the params as written in those
names), and its ONNX graph: the module, the trace inputs, the metadata the runner needs, and how
ONNX Runtime runs it. `EpochFamily` is the base of the families trained by the epoch loop
(textclf.training.loop): bag and cnn.

Training code (the loop, scikit-learn, Optuna) is imported inside the methods that train, so
prediction and export load a family without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from textclf.model import ModelConfig, predict_proba

if TYPE_CHECKING:
    from textclf.params import TrainParams

# `data` below is a textclf.training.run.Prepared (the splits, encoded once), `out` an Outcome;
# not imported here, so that predicting and exporting never load the training code


class ModelFamily:
    name: str = ""
    # how the module takes a batch: "bag" = (ids [total], offsets [batch]), the EmbeddingBag
    # convention; "padded" = ids [batch, length], padded with 0
    layout: str = "bag"
    uses_bigrams: bool = True  # the encoding carries bigrams (train.bigrams); else unigrams only

    # --- the module
    def model_config(self, p: TrainParams, num_embeddings: int, num_classes: int) -> ModelConfig:
        raise NotImplementedError

    def build(self, cfg: ModelConfig, sparse: bool = False, encoder: dict | None = None) -> nn.Module:
        raise NotImplementedError

    # --- training
    def train(self, data, p: TrainParams, device: torch.device, **kw) -> tuple:
        """One configuration, trained: (FitResult, its ModelConfig, the bundle's encoder record or
        None); keywords as textclf.training.run.train_config takes them."""
        raise NotImplementedError

    def reports_once(self, p: TrainParams, device: torch.device) -> bool:
        """True when a fit reports its valid score once, at its end (nothing left to prune)."""
        return False

    def valid_predictions(self, data, out, device: torch.device | str = "cpu") -> tuple[np.ndarray, np.ndarray]:
        """(truth, predicted) class indices of a trained configuration on the valid split."""
        _, va, _, _, _ = data.get(out.params)
        model = self.build(out.cfg)
        model.load_state_dict(out.result.best_state)
        model = model.to(device)
        pred = predict_proba(model, va.ids.to(device), va.offsets.to(device)).argmax(1).numpy()
        return va.labels.cpu().numpy(), pred

    # --- autotune (textclf.training.autotune): `num`/`cat` draw one value, in Optuna's names;
    # the returned keys are dotted train keys (`linear.C`, `bag.dropout`, `lr`)
    def suggest(self, trial, p: TrainParams, num, cat) -> dict[str, Any]:
        return {}

    def as_written(self, p: TrainParams) -> dict[str, Any]:
        """The params as written, in the Optuna names `suggest` uses (the enqueued trial 0)."""
        return {}

    # --- export (textclf.onnx, textclf.onnx_runtime)
    def graph(self, model: nn.Module) -> nn.Module:
        """The export-friendly module: same weights and arithmetic, softmax at the end."""
        raise NotImplementedError

    def example(self, model: nn.Module) -> tuple[tuple, list[str], dict]:
        """Trace inputs, their names and the dynamic axes (output `probs`)."""
        if self.layout == "padded":
            raise NotImplementedError
        k = min(8, model.cfg.num_embeddings)
        args = (torch.arange(k, dtype=torch.int64), torch.tensor([0, k // 2, k // 2], dtype=torch.int64))
        return args, ["ids", "offsets"], {"ids": {0: "ids"}, "offsets": {0: "batch"}, "probs": {0: "batch"}}

    def graph_meta(self, model: nn.Module, bundle) -> dict[str, str]:
        """What the runner needs beyond the graph (ONNX metadata_props, `textclf.` keys)."""
        return {}

    def check_inputs(self, model: nn.Module, bundle, ids: np.ndarray, offsets: np.ndarray, texts=None) -> tuple:
        """The export check's reference: torch's probabilities (float64) of the check documents,
        and what the ONNX runner takes beside (ids, offsets) (`lists`; None for most families)."""
        return predict_proba(model, torch.from_numpy(ids), torch.from_numpy(offsets)).numpy().astype(np.float64), None

    def onnx_proba(self, runner, ids: np.ndarray, offsets: np.ndarray, batch_size: int, lists=None) -> np.ndarray:
        """Probabilities of encoded documents through an `OnnxClassifier`'s session."""
        from textclf.onnx_runtime import run_bags

        return run_bags(runner.session, ids, offsets, len(runner.labels), batch_size)


class EpochFamily(ModelFamily):
    """A family trained by the epoch loop (textclf.training.loop.fit): AdamW/SGD, early stopping
    on valid macro-F1, per-epoch checkpoints, DDP. Its section has `embed_dim` and `dropout`."""

    def section(self, p: TrainParams):
        return getattr(p, self.name)

    def init(self, model: nn.Module, ids: torch.Tensor, offsets: torch.Tensor) -> None:
        """Fixed (untrained) state computed from the train split, before training starts."""

    def sparse_gradients(self, p: TrainParams) -> bool:
        return False

    def train(
        self,
        data,
        p: TrainParams,
        device: torch.device,
        *,
        checkpoint=None,
        fingerprint: str = "",
        on_epoch=None,
        deadline: float | None = None,
        progress: bool = False,
        world=None,
    ) -> tuple:
        from textclf.training.loop import fit

        tr, va, cfg, _, _ = data.get(p)
        result = fit(
            tr,
            va,
            cfg,
            p,
            device,
            checkpoint=checkpoint,
            fingerprint=fingerprint,
            on_epoch=on_epoch,
            progress=progress,
            world=world,
            deadline=deadline,
        )
        return result, cfg, None

    def suggest(self, trial, p: TrainParams, num, cat) -> dict[str, Any]:
        # Dense Adam updates of the whole embedding table every step dominate a CPU epoch, so the
        # space keeps to batches of 64+ and tables of <= 64 columns (hashed bigrams: set them by
        # hand). The Optuna names are shared by the epoch families (`embed_dim`, not `bag:…`):
        # the sampler sees one optimiser space.
        s = self.section(p)
        return {
            "lr": num("lr", 2e-3, 5e-2, p.lr),
            "batch_size": cat("batch_size", [64, 128, 256, 512], p.batch_size),
            f"{self.name}.embed_dim": cat("embed_dim", [16, 32, 64], s.embed_dim),
            f"{self.name}.dropout": num("dropout", 0.0, 0.9, s.dropout, log=False),
            "weight_decay": num("weight_decay", 1e-4, 0.3, max(p.weight_decay, 1e-6)),
            "label_smoothing": cat("label_smoothing", [0.0, 0.1], p.label_smoothing),
        }

    def as_written(self, p: TrainParams) -> dict[str, Any]:
        s = self.section(p)
        return {
            "lr": p.lr,
            "batch_size": p.batch_size,
            "embed_dim": s.embed_dim,
            "dropout": s.dropout,
            "weight_decay": max(p.weight_decay, 1e-6),
            "label_smoothing": p.label_smoothing,
        }
