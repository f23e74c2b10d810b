"""Model vs baseline by k-fold cross-validation over train ∪ valid — the test split is never read.

One test split of ~1,700 documents cannot tell apart two classifiers that are a point apart
(evaluate's `comparison` interval is about ±0.011 on the sample). This benchmark measures the gap
the honest way for tuning: the processed train and valid splits are pooled, cut into `--folds`
folds by duplicate group (`group_id`: no group is on both sides), and in every fold

- the vocabulary is built from the fold's training part (as the vocab stage would),
- the model trains with params.yaml's `train` section (plus `-S key=value` overrides), early
  stopping on an inner holdout of `--inner` of the training part's groups,
- the baseline (params.yaml's `baseline` section) fits on the same documents the model trains on
  (as in the pipeline, where both fit the train split and only the model sees valid),

and both are scored on the held-out fold. It prints each fold, then the mean difference, its
standard error and the model/baseline ratio. Run after `make run` (it reads data/processed/):

    .venv/bin/python bench/model_vs_baseline.py
    .venv/bin/python bench/model_vs_baseline.py --folds 5 -S train.dropout=0.5 -S train.embed_dim=64
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from sklearn.metrics import f1_score
from sklearn.model_selection import GroupKFold

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flows.dvcops import InvalidParams, params_overrides, validate_params  # noqa: E402
from stages import baseline as baseline_stage  # noqa: E402
from stages import train as train_stage  # noqa: E402
from stages.artifacts import read_parquet  # noqa: E402
from stages.model import build_model, predict_proba  # noqa: E402
from stages.params import BaselineParams, TrainParams, VocabParams, load_params  # noqa: E402
from stages.text import hash64  # noqa: E402
from stages.vocab import build_vocab, count_tokens  # noqa: E402

SECTIONS = ("train", "vocab", "baseline")  # what this benchmark uses; the data splits are fixed


def load_with_overrides(overrides: list[str]) -> tuple[TrainParams, VocabParams, BaselineParams]:
    """params.yaml's train / vocab / baseline sections with `-S` overrides applied the way
    `dvc exp run -S` applies them (flows.dvcops.params_overrides: params.yaml is put back after)."""
    with params_overrides(Path.cwd(), overrides):
        validate_params(Path.cwd())
        return tuple(load_params(s) for s in SECTIONS)


def tokens_of(df: pd.DataFrame) -> pa.ListArray:
    return df["tokens"].array._pa_array.combine_chunks()


def model_f1(fit_df: pd.DataFrame, stop_df: pd.DataFrame, held: pd.DataFrame, tp: TrainParams,
             vp: VocabParams) -> tuple[float, int]:
    vocab = build_vocab(count_tokens(tokens_of(fit_df), vp.ngrams), vp)
    tr, va, cfg, enc, labels = train_stage.prepare(fit_df, stop_df, vocab, tp)
    result = train_stage.fit(tr, va, cfg, tp, torch.device("cpu"))
    model = build_model(cfg)
    model.load_state_dict(result.best_state)
    ho = train_stage.encode_split(tokens_of(held), held["label"].to_numpy(dtype=object),
                                  pa.array(vocab["tokens"], pa.string()), enc, {c: i for i, c in enumerate(labels)})
    pred = predict_proba(model, ho.ids, ho.offsets).argmax(1).numpy()
    return float(f1_score(ho.labels.numpy(), pred, average="macro")), result.state.best_epoch


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--inner", type=float, default=0.11, help="share of a fold's training groups for early stopping")
    ap.add_argument("-S", dest="overrides", action="append", default=[], help="train.key=value / vocab.* / baseline.*")
    ap.add_argument("--processed", default="data/processed")
    args = ap.parse_args(argv)

    bad = [o for o in args.overrides if "=" not in o or o.split(".", 1)[0] not in SECTIONS]
    if bad:
        ap.error(f"-S takes section.key=value for sections {sorted(SECTIONS)}: {bad}")
    train_stage.tune_allocator()
    try:
        tp, vp, bp = load_with_overrides(args.overrides)
    except InvalidParams as err:  # unknown key, wrong type, bad syntax
        ap.error(f"-S: {err}")
    d = Path(args.processed)
    pool = pd.concat([read_parquet(d / "train.parquet"), read_parquet(d / "valid.parquet")], ignore_index=True)
    print(f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads); "
          f"{len(pool)} documents (train ∪ valid), {args.folds} folds by duplicate group; test split not read")
    if args.overrides:
        print("overrides:", " ".join(args.overrides))
    diffs, scores = [], []
    for k, (fit_i, held_i) in enumerate(GroupKFold(args.folds).split(pool, groups=pool["group_id"])):
        t0 = time.perf_counter()
        part, held = pool.iloc[fit_i].reset_index(drop=True), pool.iloc[held_i].reset_index(drop=True)
        # early-stopping holdout by group hash: deterministic, and no group straddles it
        h = hash64(pa.array(part["group_id"].astype(str).to_numpy(), pa.string()), key=f"cv-inner-fold{k:03d}")
        inner = (h % np.uint64(10_000)).astype(np.float64) < args.inner * 10_000
        fit_df, stop_df = part[~inner].reset_index(drop=True), part[inner].reset_index(drop=True)
        m, epoch = model_f1(fit_df, stop_df, held, tp, vp)
        preds = baseline_stage.baseline(fit_df, held, bp)  # as in the pipeline: both fit the same train part
        b = float(f1_score(preds["label"], preds["predicted"], average="macro"))
        diffs.append(m - b)
        scores.append((m, b))
        print(f"fold {k + 1}: {len(fit_df)} train / {len(stop_df)} early-stop / {len(held)} held out — "
              f"model macro-F1 {m:.4f} (best epoch {epoch}), baseline {b:.4f}, model − baseline {m - b:+.4f} "
              f"({time.perf_counter() - t0:.1f} s)", flush=True)
    arr = np.array(diffs)
    k = len(arr)
    se = arr.std(ddof=1) / np.sqrt(k) if k > 1 else float("nan")
    # The folds' training sets overlap, so the naive standard error understates the uncertainty;
    # Nadeau & Bengio's correction scales the variance by (1/k + n_held/n_train) instead of 1/k.
    held = len(pool) / k
    corrected = arr.std(ddof=1) * np.sqrt(1 / k + held / (len(pool) - held)) if k > 1 else float("nan")
    mean_m, mean_b = np.mean(scores, axis=0)
    print(f"mean macro-F1: model {mean_m:.4f}, baseline {mean_b:.4f} = {mean_m / mean_b:.4f}x baseline")
    print(f"model − baseline macro-F1: mean {arr.mean():+.4f} over {k} folds, standard error {se:.4f} "
          f"(naive) / {corrected:.4f} (Nadeau-Bengio corrected); model wins {int((arr > 0).sum())} of {k} folds")


if __name__ == "__main__":
    main()
