"""Numbers as the stages record them: the paired bootstrap of a macro-F1 difference (evaluate's
model-vs-baseline interval and autotune's choice between the params as written and the best
trial use the same draws), and the rounding that keeps a rebuild's outputs byte-identical."""

from __future__ import annotations

import numpy as np


def rounded(obj, digits: int = 6):
    """Floats to `digits` decimals (dicts and lists walked): what a hashed or git-tracked output
    records of values that BLAS noise on another CPU can flip in their last bits (losses, F1 of a
    history, calibration error), so a rebuild elsewhere writes the same bytes."""
    if isinstance(obj, float):
        return round(obj, digits)
    if isinstance(obj, dict):
        return {k: rounded(v, digits) for k, v in obj.items()}
    if isinstance(obj, list):
        return [rounded(v, digits) for v in obj]
    return obj


def bootstrap_macro_f1(y: np.ndarray, pred: np.ndarray, counts: np.ndarray, k: int) -> np.ndarray:
    """Macro-F1 of each bootstrap replicate, vectorised: `counts[b, i]` is how often document i
    was drawn in replicate b. Classes absent from a replicate (as truth and as prediction) do not
    count, as in evaluate's `score`."""
    onehot_t = np.eye(k, dtype=np.float64)[y]  # [n, k]
    onehot_p = np.eye(k, dtype=np.float64)[pred]
    c = counts.astype(np.float64)
    tp = c @ (onehot_t * onehot_p)  # [B, k]
    denom = c @ onehot_t + c @ onehot_p  # true + predicted per class
    present = denom > 0
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=present)
    return f1.sum(axis=1) / np.maximum(present.sum(axis=1), 1)


def paired_macro_f1_deltas(
    y: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, k: int, n_boot: int, seed: int
) -> tuple[float, np.ndarray]:
    """macro-F1(a) - macro-F1(b) on these documents, and `n_boot` paired bootstrap replicates of it.

    A document matters to either F1 only through its (truth, a, b) triple, so a replicate is
    drawn as counts over the k³ triples — multinomial(n, triple shares), exactly the
    distribution of resampling n documents — at a cost independent of n."""
    n = len(y)
    cell = (y * k + pred_a) * k + pred_b
    counts = np.bincount(cell, minlength=k**3)
    present = np.flatnonzero(counts)
    counts = counts[present]
    ty, ta, tb = present // (k * k), (present // k) % k, present % k  # each cell's triple

    def delta(c: np.ndarray) -> np.ndarray:
        return bootstrap_macro_f1(ty, ta, c, k) - bootstrap_macro_f1(ty, tb, c, k)

    observed = float(delta(counts[None, :])[0])
    if not n_boot:
        return observed, np.zeros(0)
    rng = np.random.default_rng(seed)
    return observed, delta(rng.multinomial(n, counts / n, size=n_boot))
