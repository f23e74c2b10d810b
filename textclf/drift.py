"""Drift: does a batch of new documents look like the corpus the current model was made from?

Four checks, each a number against a threshold from params.yaml's `drift` section
(textclf.params.DriftParams):

  oov         the share of the batch's tokens the vocabulary does not know, against the test
              split's own share plus `max_oov_increase` (new vocabulary is expected; a batch in
              another language or script is almost all unknown)
  labels      the batch's label shares against the train split's: held when a chi-square test
              rejects them (p < `alpha`) *and* some label's share moved by more than `label_shift`
  confidence  the model's top-class probability on the batch against the test split's (two-sample
              Kolmogorov-Smirnov): held when the statistic is over `confidence_ks` and p < `alpha`
  length      tokens per document, against the test split's, the same way (`length_ks`)

The distribution checks need `min_docs` documents; a smaller batch is checked on its OOV rate
only, and the table says so. Pure functions: arrays and a `Predictor` in, `Check`s out; the
new-data flow (flows/incoming/) holds a batch with a held check, `textclf diff` shows them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from textclf.params import DriftParams


@dataclass(frozen=True)
class Check:
    name: str  # oov | labels | confidence | length
    value: float | None  # None: not computed (too few documents, no model)
    threshold: float | None
    held: bool
    detail: str  # in words, with the reference's figure

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Reference:
    """The corpus side: the test split through the current model, the train split's labels."""

    oov_rate: float
    label_shares: dict[str, float]
    confidence: np.ndarray  # top-class probability per test document
    lengths: np.ndarray  # tokens per test document


def oov_rate(tokens: pa.ListArray, predictor) -> float:
    """The share of tokens (unigrams) that are not vocabulary entries."""
    if isinstance(tokens, pa.ChunkedArray):
        tokens = tokens.combine_chunks()
    values = pc.list_flatten(tokens)
    if len(values) == 0:
        return 0.0
    return float(np.mean(predictor.vocab_tokens.lookup(values) < 0))


def lengths(tokens: pa.ListArray) -> np.ndarray:
    return pc.fill_null(pc.list_value_length(tokens), 0).to_numpy(zero_copy_only=False).astype(np.int64)


def reference(predictor, test_tokens: pa.ListArray, test_confidence: np.ndarray, train_labels) -> Reference:
    """`test_tokens`: the test split's cleaned tokens; `test_confidence`: the model's top-class
    probability on each test document (reports/predictions.parquet); `train_labels`: the train
    split's labels."""
    values, counts = np.unique(np.asarray(train_labels, dtype=object).astype(str), return_counts=True)
    total = float(counts.sum())
    shares = {str(v): float(c) / total for v, c in zip(values, counts, strict=True)} if len(values) else {}
    return Reference(oov_rate(test_tokens, predictor), shares, np.asarray(test_confidence, float), lengths(test_tokens))


def check_batch(texts: list[str], labels, predictor, ref: Reference, p: DriftParams) -> list[Check]:
    """The four checks of one batch (raw texts and their labels)."""
    from scipy import stats

    tokens = predictor.tokenize(texts)
    oov = oov_rate(tokens, predictor)
    limit = ref.oov_rate + p.max_oov_increase
    checks = [
        Check(
            "oov",
            oov,
            limit,
            oov > limit,
            f"the test split's {ref.oov_rate:.2f} + drift.max_oov_increase {p.max_oov_increase:g}",
        )
    ]
    n = len(texts)
    if n < p.min_docs:
        why = f"{n} documents < drift.min_docs {p.min_docs}: not tested"
        return checks + [Check(name, None, None, False, why) for name in ("labels", "confidence", "length")]

    labels = np.asarray(labels, dtype=object).astype(str)
    known = [lab for lab in ref.label_shares]
    counts = np.array([np.sum(labels == lab) for lab in known], float)
    expected = np.array([ref.label_shares[lab] for lab in known]) * counts.sum()
    if counts.sum() > 0 and len(known) > 1:
        p_value = float(stats.chisquare(counts, expected).pvalue)
        shares = counts / counts.sum()
        moved = np.abs(shares - np.array([ref.label_shares[lab] for lab in known]))
        worst = int(np.argmax(moved))
        checks.append(
            Check(
                "labels",
                float(moved[worst]),
                p.label_shift,
                p_value < p.alpha and moved[worst] > p.label_shift,
                f"`{known[worst]}` {shares[worst]:.2f} of the batch, {ref.label_shares[known[worst]]:.2f} of the "
                f"train split (chi-square p={p_value:.2g}; held when p < drift.alpha {p.alpha:g} and a share "
                f"moves by more than drift.label_shift {p.label_shift:g})",
            )
        )
    else:
        checks.append(Check("labels", None, None, False, "no known label in the batch, or one class: not tested"))

    conf = predictor.predict_proba(texts).max(axis=1)
    for name, batch, refs, threshold, what in (
        ("confidence", conf, ref.confidence, p.confidence_ks, "top-class probability"),
        ("length", lengths(tokens), ref.lengths, p.length_ks, "tokens per document"),
    ):
        if len(refs) == 0:
            checks.append(Check(name, None, None, False, "no test split to compare with"))
            continue
        ks = stats.ks_2samp(batch, refs)
        checks.append(
            Check(
                name,
                float(ks.statistic),
                threshold,
                bool(ks.statistic > threshold and ks.pvalue < p.alpha),
                f"{what}: median {np.median(batch):.3g} vs the test split's {np.median(refs):.3g} "
                f"(KS {ks.statistic:.2f}, p={ks.pvalue:.2g}; held over drift.{name}_ks {threshold:g} with "
                f"p < {p.alpha:g})",
            )
        )
    return checks


def held(checks: list[Check]) -> list[Check]:
    return [c for c in checks if c.held]


_WHAT = {"oov": "OOV rate", "labels": "label share moved", "confidence": "confidence KS", "length": "length KS"}


def reason(checks: list[Check]) -> str:
    """One line for a quarantine reason file: "drift: OOV rate 0.83 > 0.31 (...); ..."."""
    parts = [f"{_WHAT[c.name]} {c.value:.2f} > {c.threshold:.2f} ({c.detail})" for c in held(checks)]
    return "drift: " + "; ".join(parts) + " — pass --allow-drift to take the batch anyway"


def table(checks: list[Check]) -> list[str]:
    """Markdown rows (the flow's artifact, `textclf diff --md`)."""
    rows = ["| check | value | threshold | held | detail |", "|---|---|---|---|---|"]
    for c in checks:
        value = "—" if c.value is None else f"{c.value:.3f}"
        threshold = "—" if c.threshold is None else f"{c.threshold:.3f}"
        rows.append(f"| {c.name} | {value} | {threshold} | {'**held**' if c.held else 'no'} | {c.detail} |")
    return rows


def load_reference(root, predictor) -> Reference | None:
    """The `Reference` of a built repository (its test split, test predictions and train split:
    the pipeline's outputs at the workspace's commit), or None when they are not there yet."""
    from pathlib import Path

    from textclf import paths
    from textclf.artifacts import arrow_values, read_parquet

    root = Path(root)
    files = [root / paths.TEST, root / paths.PREDICTIONS, root / paths.TRAIN]
    if not all(f.is_file() for f in files):
        return None
    test = read_parquet(files[0], columns=["tokens"])
    preds = read_parquet(files[1])
    probs = preds[[c for c in preds.columns if c.startswith("prob_")]].to_numpy(dtype=float)
    train = read_parquet(files[2], columns=["label"])
    return reference(predictor, arrow_values(test["tokens"]), probs.max(axis=1), train["label"])
