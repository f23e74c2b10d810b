"""DVC stage `export`: the bundle + the test split → models/onnx/{model.onnx, model.int8.onnx},
reports/export.json. Fails (exit 4) when the fp32 graph is not the model: see textclf.onnx."""

from __future__ import annotations

import shutil

from textclf import kernels

kernels.pin_for_stage()  # before torch loads: train.cpu_kernels (textclf.kernels)

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
        kernels.apply_threads()
        bundle = load_bundle(BUNDLE)
        test = read_parquet(TEST, columns=["label", "tokens", "text"])
        tokens = arrow_values(test["tokens"])
        ONNX_DIR.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_dir_for(ONNX_DIR)
        try:
            report = export(bundle, tokens, test["label"].to_numpy(dtype=object), tmp, texts=arrow_values(test["text"]))
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
