"""export: the bundle + the test split → models/onnx/{model.onnx, model.int8.onnx}, reports/export.json.

The classifier as an ONNX graph (fp32) and a dynamically quantised copy of it
(onnxruntime.quantization: 8-bit lookup tables, MatMul and Conv weights; activations quantised
at run time). The stage fails if, over the test split, the fp32 graph's probabilities differ from
torch's by more than `TOLERANCE` (max absolute difference): a deployed model must be the model
that was evaluated. The int8 model is allowed to differ; its accuracy delta against torch is
reported in reports/export.json (a DVC metrics file: evaluate owns reports/metrics.json).

Each family's graph module, trace inputs and runner live in its module (textclf.families.<name>:
`graph`, `example`, `graph_meta`, `onnx_proba`). Graph interface (what `OnnxClassifier` feeds
it; outputs `probs` float32 [batch, classes]):
  layout "bag", bag family: `ids` int64 [total ids], `offsets` int64 [batch] — each document's
       start in `ids`, the EmbeddingBag convention `textclf.model.encode` produces;
  linear family: the document-term count matrix in CSR form — `ids` (each document's distinct
       ids), `offsets` [batch], `counts` float32 (per id; `textclf.onnx_runtime.term_counts`);
  layout "padded" (cnn): `ids` int64 [batch, length], padded with 0 (`<pad>`), length ≥ the widest kernel;
  encoder: the linear inputs plus the encoder's `input_ids` and `attention_mask`.
torch exports `nn.EmbeddingBag` (and `repeat_interleave`) as an ONNX Loop over the bags, and
`torch.unique` as ONNX Unique (slow in ONNX Runtime); the bag graphs compute the same sums with
Gather + CumSum, which ONNX Runtime runs vectorised, and the linear graph takes the counts the
runner computes instead of counting them itself (format textclf-onnx/2). The graph's
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
from textclf.families.registry import family
from textclf.model import EncodingConfig, encode, label_ids
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


def graph_module(model: nn.Module) -> nn.Module:
    """The family's export-friendly forward pass (same weights, same arithmetic, ONNX-friendly
    operators, softmax at the end: textclf.families.<family>)."""
    cfg = getattr(model, "cfg", None)
    if cfg is None:
        raise TypeError(f"cannot export {type(model).__name__}")
    return family(cfg.type).graph(model).eval()


def export_onnx(model: nn.Module, bundle: Bundle, path: Path) -> Path:
    """Trace `model` to an ONNX file at `path`, tagged with the bundle it belongs to."""

    import onnx

    graph = graph_module(model)
    args, names, axes = family(model.cfg.type).example(model)
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
    meta |= family(model.cfg.type).graph_meta(model, bundle)
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
    torch_p, lists = family(model.cfg.type).check_inputs(model, bundle, ids, offsets, texts)
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
