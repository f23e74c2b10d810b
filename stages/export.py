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
metadata names the bundle it came from (`bundle_digest`), so a stale graph is refused at load."""

from __future__ import annotations

import shutil

from textclf.artifacts import arrow_values, read_parquet, replace_dir, run_main, temp_dir_for, write_json
from textclf.bundle import load_bundle
from textclf.onnx import (
    TOLERANCE,
    ParityError,
    export,
    log,
)
from textclf.paths import BUNDLE, ONNX_DIR, TEST
from textclf.paths import EXPORT_REPORT as REPORT


def main() -> None:

    def body():
        bundle = load_bundle(BUNDLE)
        test = read_parquet(TEST, columns=["label", "tokens"])
        tokens = arrow_values(test["tokens"])
        ONNX_DIR.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_dir_for(ONNX_DIR)
        try:
            report = export(bundle, tokens, test["label"].to_numpy(dtype=object), tmp)
            replace_dir(tmp, ONNX_DIR)
        except ParityError as err:
            write_json(err.report, REPORT)
            raise ParityError(f"{err} (details: {REPORT})") from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        write_json(report, REPORT)
        log.info(
            "exported %s: fp32 parity %.2g (≤ %g), int8 accuracy %+.4f vs torch, %.1f → %.1f MB",
            ONNX_DIR,
            report["parity_max_abs_diff"],
            TOLERANCE,
            report["int8"]["accuracy_delta"],
            report["size_bytes"]["fp32"] / 1e6,
            report["size_bytes"]["int8"] / 1e6,
        )

    run_main("export", body)


if __name__ == "__main__":
    main()
