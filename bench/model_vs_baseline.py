"""The model against the best of three references, by k-fold cross-validation over train ∪ valid
(the test split is not read unless `--test` asks for the test-split figures).

References, each fitted on exactly the documents the model trains on:
- `baseline`: the baseline stage's TF-IDF + LogisticRegression on the model's tokens;
- `baseline_raw`: TF-IDF + LogisticRegression on the raw text with scikit-learn's analyzers
  (character 1–2-grams for CJK, word 1–2-grams otherwise) — what a user writes in ten lines;
- `fasttext`: fastText (`pip install -e '.[bench]'`) on the model's tokens, the better of the
  issue's recipe (wordNgrams 2, 10 epochs, 2 threads) and fastText's own autotune on the same
  early-stopping documents the model uses (`--fasttext-autotune-s` seconds).

The corpus is built in memory from params.yaml (ingest → clean → split; `-S ingest.source=…`
and any other `-S section.key=value` override apply, as `dvc exp run -S` would), so any corpus
can be measured without touching the pipeline's outputs. The pooled train ∪ valid documents are
cut into `--folds` folds by duplicate group; in each fold the vocabulary is built from the
training part, the model runs exactly as the train stage would (autotune included, selecting on
an inner holdout of the training part's groups), and everyone is scored on the held-out fold.
It prints each fold, the means, the model's margin over the best reference (issue 11's bar:
margin >= -0.005) and the model/reference ratio:

    .venv/bin/python bench/model_vs_baseline.py
    .venv/bin/python bench/model_vs_baseline.py -S ingest.source=data/raw/mycorpus.csv --test
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from sklearn.metrics import f1_score
from sklearn.model_selection import GroupKFold

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flows.dvcops import params_overrides, validate_params  # noqa: E402
from textclf import baseline as baseline_stage  # noqa: E402
from textclf.artifacts import arrow_values  # noqa: E402
from textclf.data.clean import clean  # noqa: E402
from textclf.data.ingest import ingest  # noqa: E402
from textclf.data.split import split  # noqa: E402
from textclf.data.vocab import build_vocab, count_tokens  # noqa: E402
from textclf.errors import ParamsError  # noqa: E402
from textclf.evaluate import NON_INFERIORITY_MARGIN  # noqa: E402
from textclf.model import build_model, predict_proba  # noqa: E402
from textclf.params import load_params  # noqa: E402
from textclf.sources import read_records  # noqa: E402
from textclf.text import hash64, load_stopwords  # noqa: E402
from textclf.training import run as training_run  # noqa: E402
from textclf.training.loop import encode_split, tune_allocator  # noqa: E402

SECTIONS = ("ingest", "clean", "split", "vocab", "train", "baseline")
REFERENCES = ("baseline", "baseline_raw", "fasttext")


def load_with_overrides(overrides: list[str]) -> dict:
    """params.yaml's sections with `-S` overrides applied the way `dvc exp run -S` applies them
    (flows.dvcops.params_overrides: params.yaml is put back afterwards)."""
    with params_overrides(Path.cwd(), overrides):
        validate_params(Path.cwd())
        return {s: load_params(s) for s in SECTIONS}


def build_splits(p: dict) -> dict[str, pd.DataFrame]:
    """ingest → clean → split in memory, as the stages would (their cores, their params)."""
    docs = ingest(read_records(p["ingest"]), p["ingest"]).documents
    parts, _ = split(clean(docs, p["clean"], load_stopwords(p["clean"])).clean, p["split"])
    return parts


def tokens_of(df: pd.DataFrame) -> pa.ListArray:
    return arrow_values(df["tokens"])


def macro_f1(y, pred) -> float:
    return float(f1_score(np.asarray(y, dtype=object), np.asarray(pred, dtype=object), average="macro"))


def model_f1(fit_df: pd.DataFrame, stop_df: pd.DataFrame, held: pd.DataFrame, p: dict) -> tuple[float, str]:
    vocab = build_vocab(count_tokens(tokens_of(fit_df), p["vocab"].ngrams), p["vocab"])
    data = training_run.Prepared(fit_df, stop_df, vocab, html=p["clean"].html)
    out = training_run.train_model(data, p["train"], torch.device("cpu"))
    ho = encode_split(
        tokens_of(held),
        held["label"].to_numpy(dtype=object),
        pa.array(vocab["tokens"], pa.string()),
        out.enc,
        {c: i for i, c in enumerate(out.labels)},
    )
    if out.cfg.type == "encoder":  # reads the text too; frozen embeddings come from the cache
        from textclf.families import encoder as fam

        model = fam.EncoderModel(out.cfg, out.encoder["meta"])
        model.load_state_dict(out.result.best_state)
        texts = fam.encoder_texts(arrow_values(held["text"]), p["clean"].html)
        if out.encoder["meta"]["mode"] == "frozen":
            emb = torch.from_numpy(data.embedder(out.params)(texts))
            pred = fam.head_logp(model, ho.ids, ho.offsets, emb).argmax(1).numpy()
        else:
            tok = data.embedder(out.params).tokenizer
            pred = fam.predict_proba(model, tok, ho.ids.numpy(), ho.offsets.numpy(), texts).argmax(1)
    else:
        model = build_model(out.cfg)
        model.load_state_dict(out.result.best_state)
        pred = predict_proba(model, ho.ids, ho.offsets).argmax(1).numpy()
    return float(f1_score(ho.labels.numpy(), pred, average="macro")), out.cfg.type


def fasttext_f1(
    fit_df: pd.DataFrame, stop_df: pd.DataFrame, held: pd.DataFrame, autotune_s: int
) -> tuple[float, str] | None:
    """The better, on the early-stopping documents, of the issue's fastText recipe and fastText's
    own autotune; scored on the held-out documents. None without fastText."""
    try:
        import fasttext
    except ImportError:
        return None

    def lines(df):
        return [" ".join(t) for t in df["tokens"]]

    def label(values):
        return ["__label__" + str(v).replace(" ", "_") for v in values]

    with tempfile.TemporaryDirectory() as tmp:
        tr, va = Path(tmp) / "train.txt", Path(tmp) / "valid.txt"
        for path, df in ((tr, fit_df), (va, stop_df)):
            path.write_text(
                "".join(f"{lab} {t}\n" for lab, t in zip(label(df["label"]), lines(df), strict=True)),
                encoding="utf-8",
            )
        candidates = {"recipe": dict(epoch=10, wordNgrams=2, thread=2)}
        if autotune_s > 0:
            candidates["autotune"] = dict(autotuneValidationFile=str(va), autotuneDuration=autotune_s, thread=2)
        best = None
        for name, kw in candidates.items():
            m = fasttext.train_supervised(str(tr), verbose=0, **kw)
            v = macro_f1(label(stop_df["label"]), _ft_predict(m, lines(stop_df)))
            if best is None or v > best[0]:
                best = (v, name, m)
        _, name, m = best
        return macro_f1(label(held["label"]), _ft_predict(m, lines(held))), name


def _ft_predict(model, texts: list[str]) -> list[str]:
    # the C++ binding directly: the Python wrapper's predict breaks under NumPy 2
    out = []
    for t in texts:
        pred = model.f.predict(t + "\n", 1, 0.0, "strict")
        out.append(pred[0][1] if pred else "")
    return out


def references(fit_df, stop_df, held, p, autotune_s: int) -> dict[str, tuple[float, str]]:
    refs = {}
    # as in the pipeline: the baselines fit the model's training documents
    preds = baseline_stage.baseline(fit_df, held, p["baseline"])
    refs["baseline"] = (macro_f1(preds["label"], preds["predicted"]), "tokens")
    preds = baseline_stage.raw_baseline(fit_df, held, p["baseline"])
    refs["baseline_raw"] = (macro_f1(preds["label"], preds["predicted"]), "raw text")
    ft = fasttext_f1(fit_df, stop_df, held, autotune_s)
    if ft is not None:
        refs["fasttext"] = ft
    return refs


def inner_holdout(part: pd.DataFrame, share: float, key: str) -> np.ndarray:
    # by group hash: deterministic, and no group straddles it
    h = hash64(pa.array(part["group_id"].astype(str).to_numpy(), pa.string()), key=key)
    return (h % np.uint64(10_000)).astype(np.float64) < share * 10_000


def summarise(rows: list[dict], title: str) -> None:
    names = [n for n in REFERENCES if all(n in r for r in rows)]
    model = np.array([r["model"] for r in rows])
    best = np.array([max(r[n] for n in names) for r in rows])
    print(f"{title}: model {model.mean():.4f}; " + ", ".join(f"{n} {np.mean([r[n] for r in rows]):.4f}" for n in names))
    margin = model - best
    k = len(rows)
    se = margin.std(ddof=1) / np.sqrt(k) if k > 1 else float("nan")
    print(
        f"  model − best reference (per fold): mean {margin.mean():+.4f} (standard error {se:.4f}); "
        f"model / best = {model.mean() / best.mean():.4f}x; non-inferior (margin >= -{NON_INFERIORITY_MARGIN}) "
        f"in {int((margin >= -NON_INFERIORITY_MARGIN).sum())} of {k}"
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--folds", type=int, default=5, help="cross-validation folds over train ∪ valid")
    ap.add_argument(
        "--inner",
        type=float,
        default=0.11,
        help="share of a fold's training groups for early stopping and model selection (the valid split's role)",
    )
    ap.add_argument(
        "--fasttext-autotune-s",
        type=int,
        default=30,
        help="fastText autotune seconds per fit (0 = off)",
    )
    ap.add_argument(
        "--test",
        action="store_true",
        help="also train on train (valid for selection) and score the "
        "test split: the figures `dvc repro` reports, plus fastText's",
    )
    ap.add_argument(
        "--model-only",
        action="store_true",
        help="no references: the model's cross-validated score "
        "alone (to compare params, e.g. cleaning settings, with -S)",
    )
    ap.add_argument(
        "-S",
        dest="overrides",
        action="append",
        default=[],
        help="section.key=value (ingest, clean, split, vocab, train, baseline), as `dvc exp run -S`",
    )
    args = ap.parse_args(argv)

    bad = [o for o in args.overrides if "=" not in o or o.split(".", 1)[0] not in SECTIONS]
    if bad:
        ap.error(f"-S takes section.key=value for sections {sorted(SECTIONS)}: {bad}")
    tune_allocator()
    try:
        p = load_with_overrides(args.overrides)
    except ParamsError as err:  # unknown key, wrong type, bad syntax
        ap.error(f"-S: {err}")
    t0 = time.perf_counter()
    parts = build_splits(p)
    pool = pd.concat([parts["train"], parts["valid"]], ignore_index=True)
    print(
        f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads); "
        f"corpus {p['ingest'].source}: {len(pool)} documents in train ∪ valid, {pool['label'].nunique()} classes "
        f"(built in {time.perf_counter() - t0:.1f} s); {args.folds} folds by duplicate group"
    )
    if args.overrides:
        print("overrides:", " ".join(args.overrides))
    rows = []
    for k, (fit_i, held_i) in enumerate(GroupKFold(args.folds).split(pool, groups=pool["group_id"])):
        t0 = time.perf_counter()
        part, held = (
            pool.iloc[fit_i].reset_index(drop=True),
            pool.iloc[held_i].reset_index(drop=True),
        )
        inner = inner_holdout(part, args.inner, f"cv-inner-fold{k:03d}")
        fit_df, stop_df = part[~inner].reset_index(drop=True), part[inner].reset_index(drop=True)
        m, family = model_f1(fit_df, stop_df, held, p)
        refs = {} if args.model_only else references(fit_df, stop_df, held, p, args.fasttext_autotune_s)
        rows.append({"model": m, **{n: v for n, (v, _) in refs.items()}})
        print(
            f"fold {k + 1}: {len(fit_df)} train / {len(stop_df)} selection / {len(held)} held out — model ({family}) "
            f"{m:.4f}, "
            + ", ".join(f"{n} {v:.4f} ({how})" for n, (v, how) in refs.items())
            + f" ({time.perf_counter() - t0:.1f} s)",
            flush=True,
        )
    if args.model_only:
        scores = np.array([r["model"] for r in rows])
        print(
            f"cross-validation: model mean macro-F1 {scores.mean():.4f} (standard error "
            f"{scores.std(ddof=1) / np.sqrt(len(scores)):.4f}) over {len(rows)} folds"
        )
        return
    summarise(rows, f"cross-validation, mean macro-F1 over {len(rows)} folds")
    if args.test:
        t0 = time.perf_counter()
        m, family = model_f1(parts["train"], parts["valid"], parts["test"], p)
        refs = references(parts["train"], parts["valid"], parts["test"], p, args.fasttext_autotune_s)
        print(
            f"test split ({len(parts['test'])} documents; train {len(parts['train'])}, valid {len(parts['valid'])}): "
            f"model ({family}) {m:.4f}, "
            + ", ".join(f"{n} {v:.4f} ({how})" for n, (v, how) in refs.items())
            + f" ({time.perf_counter() - t0:.1f} s)"
        )
        best = max(v for v, _ in refs.values())
        print(
            f"  model − best reference {m - best:+.4f}: "
            f"{'non-inferior' if m - best >= -NON_INFERIORITY_MARGIN else 'BELOW the bar'}"
        )


if __name__ == "__main__":
    main()
