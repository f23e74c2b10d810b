"""Running an exported model with onnxruntime: `OnnxClassifier` (what `textclf predict --runtime onnx`
uses); the export side (textclf.onnx) builds and checks the graphs. onnx and onnxruntime are
imported when a model is loaded, so predicting with torch needs neither."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from textclf.bundle import Bundle, BundleError
from textclf.model import (
    gather_padded,
)

FP32, INT8 = "model.onnx", "model.int8.onnx"
FORMAT = "textclf-onnx/2"  # 2: the linear graphs take the count matrix (ids, offsets, counts)
MAX_BATCH_IDS = 1 << 16


def bundle_digest(bundle: Bundle) -> str:
    """One SHA-256 for the whole bundle: of its manifest, which pins every file's SHA-256."""
    canonical = json.dumps(bundle.manifest, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------------------------------------
# running a graph: ONNX Runtime on CPU, batched exactly as `textclf.model.predict_proba`


class OnnxClassifier:
    """An exported graph in ONNX Runtime. With `bundle`, a graph from another bundle is refused."""

    def __init__(self, path: Path | str, bundle: Bundle | None = None, threads: int = 0):
        import onnx
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise BundleError(f"{self.path}: no ONNX model here (build it with `dvc repro export`)")
        data = self.path.read_bytes()
        try:
            proto = onnx.load_from_string(data)
        except Exception as err:  # noqa: BLE001 - protobuf raises several types; all mean "not ONNX"
            raise BundleError(f"{self.path}: not an ONNX model: {err}") from None
        # Weights must be inside the file: external data could name any path on this machine.
        if any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer):
            raise BundleError(f"{self.path}: refers to external weight files; textclf graphs are self-contained")
        self.meta = {p.key: p.value for p in proto.metadata_props}
        got = self.meta.get("textclf.format")
        if got != FORMAT:
            if str(got).startswith("textclf-onnx/"):
                raise BundleError(
                    f"{self.path}: exported by another textclf version (graph format {got}, this textclf "
                    f"runs {FORMAT}): rerun `dvc repro export`"
                )
            raise BundleError(f"{self.path}: not a textclf ONNX export (format {got!r})")
        if bundle is not None and self.meta.get("textclf.bundle_sha256") != bundle_digest(bundle):
            raise BundleError(
                f"{self.path} was exported from another bundle than {bundle.path} (rerun `dvc repro export`)"
            )
        self.type = self.meta.get("textclf.model_type")
        self.labels = json.loads(self.meta.get("textclf.labels", "[]"))
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(data, sess_options=opts, providers=["CPUExecutionProvider"])
        self.pad_id = int(self.meta.get("textclf.pad_id", 0))
        from textclf.families.registry import family

        try:
            self.family = family(self.type)
        except ValueError as err:
            raise BundleError(f"{self.path}: {err}") from None

    def proba(
        self, ids: np.ndarray, offsets: np.ndarray, batch_size: int = 4096, lists: list[list[int]] | None = None
    ) -> np.ndarray:
        """Probabilities for encoded documents (`encode`'s flat ids + offsets [n+1]), in order;
        an encoder graph also takes each document's encoder token ids (`lists`)."""
        return self.family.onnx_proba(self, ids, offsets, batch_size, lists)


def term_counts(ids: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Encoded documents (flat `ids`, `offsets` [n+1]) as their document-term count matrix in CSR
    form: each document's distinct ids in increasing order, its offsets [n+1] into them, and how
    often each occurs (float32) — what the `linear` graph takes. One sorted unique (torch's) of
    the keys document * (max id + 1) + id, as int32 (half the bytes to sort) in chunks of
    documents small enough for that."""
    ids = np.asarray(ids, np.int64)
    offsets = np.asarray(offsets, np.int64)
    n = len(offsets) - 1
    if len(ids) == 0:
        return ids, np.zeros(n + 1, np.int64), np.zeros(0, np.float32)
    m = int(ids.max()) + 1
    step = max(1, (2**31 - 1) // m)  # documents per int32 key space
    out_ids, out_counts, out_offsets = [], [], [np.zeros(1, np.int64)]
    done = 0
    for a in range(0, n, step):
        b = min(n, a + step)
        key = (
            np.repeat(np.arange(b - a, dtype=np.int64) * m, np.diff(offsets[a : b + 1])) + ids[offsets[a] : offsets[b]]
        )
        distinct, counts = torch.unique(torch.from_numpy(key.astype(np.int32)), sorted=True, return_counts=True)
        distinct = distinct.numpy()
        starts = np.searchsorted(distinct, np.arange(1, b - a + 1, dtype=np.int64) * m)
        out_offsets.append(starts + done)
        out_ids.append(
            (distinct - np.repeat(np.arange(b - a, dtype=np.int32) * m, np.diff(starts, prepend=0))).astype(np.int64)
        )
        out_counts.append(counts.numpy().astype(np.float32))
        done += len(distinct)
    return np.concatenate(out_ids), np.concatenate(out_offsets), np.concatenate(out_counts)


def run_bags(
    session,
    ids: np.ndarray,
    offsets: np.ndarray,
    k: int,
    batch_size: int = 4096,
    counts: np.ndarray | None = None,
) -> np.ndarray:
    """A `bag`-layout graph (ids, offsets[, counts]) over encoded documents, in batches of at most
    `batch_size` documents and about MAX_BATCH_IDS ids (the running sum holds a float64 row per
    id); `counts` (one per id, `term_counts`) for the graphs that take the count matrix."""
    n = len(offsets) - 1
    out = np.empty((n, k), dtype=np.float32)
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    offsets = np.asarray(offsets, dtype=np.int64)
    s = 0
    while s < n:
        e = min(n, s + batch_size, max(s + 1, int(np.searchsorted(offsets, offsets[s] + MAX_BATCH_IDS))))
        a, b = int(offsets[s]), int(offsets[e])
        feed = {"ids": ids[a:b], "offsets": offsets[s:e] - a}
        if counts is not None:
            feed["counts"] = counts[a:b]
        out[s:e] = session.run(None, feed)[0]
        s = e
    return out


def run_padded(
    session, ids: np.ndarray, offsets: np.ndarray, k: int, max_len: int, min_len: int, batch_size: int = 4096
) -> np.ndarray:
    """A `padded`-layout graph (ids [batch, length]) in the same length-sorted batches and padding
    as `textclf.model.predict_proba` (padding changes a TextCNN's max-pool, so the batches must
    match for the probabilities to match)."""
    n = len(offsets) - 1
    out = np.empty((n, k), dtype=np.float32)
    ids_t, off_t = torch.from_numpy(np.asarray(ids, np.int64)), torch.from_numpy(np.asarray(offsets, np.int64))
    order = torch.argsort(off_t[1:] - off_t[:-1])
    for s in range(0, n, batch_size):
        idx = order[s : s + batch_size]
        x = gather_padded(ids_t, off_t, idx, max_len).numpy()
        if x.shape[1] < min_len:
            x = np.pad(x, ((0, 0), (0, min_len - x.shape[1])))
        out[idx.numpy()] = session.run(None, {"ids": x})[0]
    return out
