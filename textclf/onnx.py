"""export: the bundle + the test split → models/onnx/{model.onnx, model.int8.onnx}, reports/export.json.

The classifier as an ONNX graph (fp32) and a dynamically quantised copy of it
(onnxruntime.quantization: 8-bit lookup tables, MatMul and Conv weights; activations quantised
at run time). The stage fails if, over the test split, the fp32 graph's probabilities differ from
torch's by more than `TOLERANCE` (max absolute difference): a deployed model must be the model
that was evaluated. The int8 model is allowed to differ; its accuracy delta against torch is
reported in reports/export.json (a DVC metrics file: evaluate owns reports/metrics.json).

Graph interface (what `OnnxClassifier` feeds it; outputs `probs` float32 [batch, classes]):
  bag: `ids` int64 [total ids], `offsets` int64 [batch] — each document's start in `ids`, the
       EmbeddingBag convention `textclf.model.encode` produces;
  cnn: `ids` int64 [batch, length], padded with 0 (`<pad>`), length ≥ the widest kernel.
torch exports `nn.EmbeddingBag` as an ONNX Loop over the bags; `BagGraph` computes the same bag
means with Gather + CumSum, which ONNX Runtime runs vectorised. The graph's
metadata names the bundle it came from (`bundle_digest`), so a stale graph is refused at load.
"""

from __future__ import annotations

import json
import logging
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from torch import nn

from textclf.bundle import Bundle
from textclf.errors import CONTRACT, InputError, TextclfError
from textclf.model import (
    BagModel,
    CNNModel,
    EncodingConfig,
    LinearModel,
    encode,
    label_ids,
    predict_proba,
)
from textclf.onnx_runtime import FORMAT, FP32, INT8, OnnxClassifier, bundle_digest

log = logging.getLogger("textclf.export")


# The contract, not a tunable: probabilities that differ by more than this are a
# different model (a bug in the graph), not float noise (ours differ by ~1e-7).
TOLERANCE = 1e-4
OPSET = 17
INT8_MAX_F1_DROP = 0.01


class ParityError(TextclfError):
    """The ONNX graph does not reproduce the torch model's probabilities (its output contract)."""

    exit_code = CONTRACT


# ---------------------------------------------------------------------------------------------
# export-friendly forward passes (same weights, same arithmetic, ONNX-friendly operators)


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


class LinearGraph(nn.Module):
    """`LinearModel` + softmax: the TF-IDF weights from term counts (ONNX Unique over
    document * V + id), per-document sums as differences of a float64 running sum (as BagGraph),
    both heads and their probability average."""

    def __init__(self, model: LinearModel):
        super().__init__()
        self.cfg = model.cfg
        self.idf = model.idf
        mix = model.cfg.nb_mix
        # one table [V, 2K]: a gather per id serves both heads
        self.table = nn.Parameter(
            torch.cat([model.lr_weight, model.nb_weight], 1).detach().clone(), requires_grad=False
        )
        self.bias = nn.Parameter(torch.cat([model.lr_bias, model.nb_bias]).detach().clone(), requires_grad=False)
        self.mix = mix

    def forward(self, ids: torch.Tensor, offsets: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        """`extra`: logits added to the LR head's (the encoder family's embedding term)."""
        n = offsets.shape[0]
        k = self.cfg.num_classes
        ends = torch.cat([offsets[1:], torch.ones(1, dtype=torch.int64) * ids.shape[0]])
        doc = torch.repeat_interleave(torch.arange(n), ends - offsets)
        _, inverse, counts = torch.unique(
            doc * self.idf.shape[0] + ids, sorted=True, return_inverse=True, return_counts=True
        )
        tf = counts[inverse].float()
        value = ((1 + torch.log(tf)) if self.cfg.sublinear_tf else tf) * self.idf[ids] * (ids > 1).float()
        csq = torch.cumsum(torch.cat([torch.zeros(1), value * value / tf]).double(), 0)
        norm = torch.sqrt((csq[ends] - csq[offsets]).float()).clamp_min(1e-12)
        w = value / tf / norm[doc]
        rows = self.table[ids] * w[:, None]
        cs = torch.cumsum(torch.cat([torch.zeros(1, 2 * k), rows]).double(), 0)
        logits = (cs[ends] - cs[offsets]).float() + self.bias
        if extra is not None:
            logits = torch.cat([logits[:, :k] + extra, logits[:, k:]], 1)
        lr, nb = torch.softmax(logits[:, :k], dim=1), torch.softmax(logits[:, k:], dim=1)
        return (1 - self.mix) * lr + self.mix * nb


class CNNGraph(nn.Module):
    """`CNNModel` + softmax, minus its pad-to-the-widest-kernel branch (the runner pads)."""

    def __init__(self, model: CNNModel):
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model.logits(ids), dim=1)


def graph_module(model: nn.Module) -> nn.Module:
    if getattr(model, "cfg", None) is not None and model.cfg.type == "encoder":
        from textclf.families.encoder import EncoderGraph

        return EncoderGraph(model).eval()
    if isinstance(model, BagModel):
        return BagGraph(model).eval()
    if isinstance(model, LinearModel):
        return LinearGraph(model).eval()
    if isinstance(model, CNNModel):
        return CNNGraph(model).eval()
    raise TypeError(f"cannot export {type(model).__name__}")


def export_onnx(model: nn.Module, bundle: Bundle, path: Path) -> Path:
    """Trace `model` to an ONNX file at `path`, tagged with the bundle it belongs to."""

    import onnx

    graph = graph_module(model)
    if model.cfg.type == "encoder":
        from textclf.families.encoder import onnx_example

        args, names, axes = onnx_example(model)
    elif isinstance(model, (BagModel, LinearModel)):
        k = min(8, model.cfg.num_embeddings)
        args = (
            torch.arange(k, dtype=torch.int64),
            torch.tensor([0, k // 2, k // 2], dtype=torch.int64),
        )
        names, axes = (
            ["ids", "offsets"],
            {"ids": {0: "ids"}, "offsets": {0: "batch"}, "probs": {0: "batch"}},
        )
    else:
        width = max(model.cfg.kernel_sizes) + 2
        args = (torch.ones((2, width), dtype=torch.int64),)
        names, axes = ["ids"], {"ids": {0: "batch", 1: "length"}, "probs": {0: "batch"}}
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        # the TorchScript exporter is the one that needs no extra package (onnxscript)
        warnings.simplefilter("ignore")
        raw = Path(tmp) / "raw.onnx"
        torch.onnx.export(
            graph,
            args,
            str(raw),
            dynamo=False,
            input_names=names,
            output_names=["probs"],
            dynamic_axes=axes,
            opset_version=OPSET,
            do_constant_folding=True,
        )
        proto = onnx.load(str(raw))
    _tag(proto, bundle, model, "fp32")
    onnx.checker.check_model(proto)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(path))
    return path


def quantize_int8(src: Path, dst: Path, bundle: Bundle, model: nn.Module) -> Path:
    """Dynamic int8 quantisation of the fp32 graph (weights int8, activations at run time)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # onnxruntime logs its pre-processing advice on the root logger
    try:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "int8.onnx"
            quantize_dynamic(str(src), str(out), weight_type=QuantType.QInt8)
            proto = onnx.load(str(out))
    finally:
        root.setLevel(level)
    _tag(proto, bundle, model, "int8")
    onnx.save(proto, str(dst))
    return dst


def _tag(proto, bundle: Bundle, model: nn.Module, variant: str) -> None:
    del proto.metadata_props[:]
    meta = {
        "textclf.format": FORMAT,
        "textclf.bundle_sha256": bundle_digest(bundle),
        "textclf.model_type": model.cfg.type,
        "textclf.variant": variant,
        "textclf.labels": json.dumps(bundle.labels, ensure_ascii=False),
    }
    if model.cfg.type == "encoder":  # the runner pads the encoder's token ids with the tokenizer's pad id
        from textclf.families.encoder import tokenizer_for

        meta["textclf.pad_id"] = str(tokenizer_for(bundle).pad_id)
    if isinstance(model, CNNModel):  # what the runner needs to pad exactly as predict_proba does
        meta |= {
            "textclf.max_len": str(model.cfg.max_len),
            "textclf.min_len": str(max(model.cfg.kernel_sizes)),
        }
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "textclf"


# ---------------------------------------------------------------------------------------------
# the check: torch vs fp32 vs int8 over the test split


def compare(torch_p: np.ndarray, fp32_p: np.ndarray, int8_p: np.ndarray, y: np.ndarray) -> dict:
    """Parity and accuracy figures; `y` are label indices. Pure: arrays in, numbers out."""

    def acc(p):
        return float((p.argmax(1) == y).mean()) if len(y) else float("nan")

    def diff(p):  # two significant digits: ONNX Runtime's kernels differ in the last bits by CPU
        return float(f"{float(np.abs(p.astype(np.float64) - torch_p).max()):.1e}") if len(y) else 0.0

    pred = torch_p.argmax(1)
    k = torch_p.shape[1] if torch_p.ndim == 2 else 0

    def f1(p):
        from sklearn.metrics import f1_score

        return (
            float(f1_score(y, p.argmax(1), average="macro", labels=list(range(k)), zero_division=0)) if len(y) else 0.0
        )

    return {
        "n": int(len(y)),
        "tolerance": TOLERANCE,
        "parity_max_abs_diff": diff(fp32_p),
        "torch": {"accuracy": acc(torch_p)},
        "fp32": {
            "accuracy": acc(fp32_p),
            "max_abs_diff": diff(fp32_p),
            "agreement": float((fp32_p.argmax(1) == pred).mean()) if len(y) else 1.0,
        },
        "int8": {
            "accuracy": acc(int8_p),
            "accuracy_delta": acc(int8_p) - acc(torch_p),
            "macro_f1_delta": f1(int8_p) - f1(torch_p),
            "max_abs_diff": diff(int8_p),
            "agreement": float((int8_p.argmax(1) == pred).mean()) if len(y) else 1.0,
        },
    }


def export(bundle: Bundle, tokens: pa.ListArray, labels: np.ndarray, out_dir: Path, texts=None) -> dict:
    """Write both graphs into `out_dir` (a scratch directory: the check needs them on disk, as
    ONNX Runtime will load them) and check them on the given documents; returns the report, or
    raises ParityError (with the report attached) when fp32 is off by more than TOLERANCE."""
    model = bundle.build_model()
    export_onnx(model, bundle, out_dir / FP32)
    quantize_int8(out_dir / FP32, out_dir / INT8, bundle, model)
    enc = EncodingConfig(**bundle.config["encoding"])
    ids, offsets = encode(tokens, pa.array(bundle.vocab["tokens"], pa.string()), enc)
    lists = None
    if model.cfg.type == "encoder":  # the encoder reads the text too (textclf.families.encoder)
        from textclf.families import encoder as fam

        if texts is None:
            raise InputError("an encoder bundle is exported with the test split's text")
        tok = fam.tokenizer_for(bundle)
        etexts = fam.encoder_texts(texts, fam.bundle_html(bundle))
        torch_p = fam.predict_proba(model, tok, ids, offsets, etexts).astype(np.float64)
        lists = tok(etexts)
    else:
        torch_p = predict_proba(model, torch.from_numpy(ids), torch.from_numpy(offsets)).numpy().astype(np.float64)
    fp32 = OnnxClassifier(out_dir / FP32, bundle).proba(ids, offsets, lists=lists)
    int8 = OnnxClassifier(out_dir / INT8, bundle).proba(ids, offsets, lists=lists)
    unknown = sorted(set(labels.tolist()) - set(bundle.labels))
    if unknown:
        raise InputError(f"test split has labels the model was not trained on: {unknown}")
    y = label_ids(labels, bundle.labels)
    report = compare(torch_p, fp32, int8, y)
    report["bundle_sha256"] = bundle_digest(bundle)
    report["size_bytes"] = {
        "fp32": (out_dir / FP32).stat().st_size,
        "int8": (out_dir / INT8).stat().st_size,
    }
    report["passed"] = report["parity_max_abs_diff"] <= TOLERANCE
    # int8 ships only if it keeps the model's macro-F1 within INT8_MAX_F1_DROP (it can collapse some
    # encoders): otherwise the export holds fp32 alone, and says so
    report["int8"]["shipped"] = report["int8"]["macro_f1_delta"] >= -INT8_MAX_F1_DROP
    if not report["int8"]["shipped"]:
        log.warning(
            "int8 graph not shipped: macro-F1 %+.4f against torch (more than %g lost)",
            report["int8"]["macro_f1_delta"],
            INT8_MAX_F1_DROP,
        )
        (out_dir / INT8).unlink()
    if not report["passed"]:
        err = ParityError(
            f"ONNX fp32 probabilities differ from torch by up to {report['parity_max_abs_diff']:.3g} "
            f"on the test split (tolerance {TOLERANCE:g}): the graph is not the evaluated model"
        )
        err.report = report
        raise err
    return report
