"""The pipeline run in-process, as tests share it (no test module imports another):

- `build_pipeline`: the stage cores, building a bundle for the tests that need one (never the
  repository's models/): ingest → clean → split → vocab → train → the bundle, on a small corpus
  of *raw* lines full of what ingest and clean rewrite — HTML, URLs, e-mails, full-width
  characters, odd whitespace, zero-width characters, BOMs;
- `run_pipeline`: the four data stages' mains in a work folder, chunked or not, every output
  read back (`assert_same` compares two runs);
- `serving`: uvicorn serving an app on 127.0.0.1 in a thread (real HTTP on loopback)."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import uvicorn
import yaml

from stages import clean as clean_stage
from stages import ingest as ingest_stage
from stages import split as split_stage
from stages import vocab as vocab_stage
from tests.fixtures import make_docs, project_params, write_text_dir
from textclf.artifacts import arrow_values, read_parquet
from textclf.bundle import save_bundle
from textclf.data.clean import clean
from textclf.data.ingest import ingest
from textclf.data.split import split
from textclf.data.vocab import build_vocab, count_tokens
from textclf.params import CleanParams, IngestParams, SplitParams, TrainParams, VocabParams
from textclf.serve import Limits, server_config
from textclf.sources import read_records
from textclf.text import hash64, load_stopwords, normalize, to_hex
from textclf.training.run import Prepared, bundle_config, train_config

FULLWIDTH = str.maketrans({c: chr(ord(c) + 0xFEE0) for c in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ!"})


def noisy_docs(n: int = 360, seed: int = 0) -> list[tuple[str, str]]:
    """make_docs' corpus, with the raw-text noise real sources have (one kind per document)."""
    out = []
    for i, (label, text) in enumerate(make_docs(n, seed)):
        kind = i % 8
        if kind == 1:
            text = f"<p>{text}<br/><script>var x = 1;</script></p> &amp; 更多"
        elif kind == 2:
            text = f"{text} 见http://shop.example.cn/item?id={i}很好 or www.example.com/x"
        elif kind == 3:
            text = text.translate(FULLWIDTH) + " ＡＢＣ１２３"
        elif kind == 4:
            text = f"\ufeff  {text}\t\t mail me: user{i}@example.com  "
        elif kind == 5:
            text = text.replace(" ", "\u200b  ").upper()
        elif kind == 6:
            text = f"{text} 2024年12月 ¥99.50 ！！！"
        out.append((label, text))
    return out


@dataclass
class Pipeline:
    root: Path
    bundle: Path
    raw: pd.DataFrame  # the records as read from the raw files (text before normalisation)
    parts: dict[str, pd.DataFrame]  # train/valid/test as the split stage makes them

    def raw_texts(self, split_name: str = "test") -> list[str]:
        """The raw line each document of a split came from (via its doc_id)."""
        by_id = dict(zip(to_hex(hash64(normalize(self.raw["text"].tolist()))), self.raw["text"], strict=True))
        return [by_id[d] for d in self.parts[split_name]["doc_id"]]

    def tokens(self, split_name: str = "test") -> pa.ListArray:
        return arrow_values(self.parts[split_name]["tokens"])


def build_pipeline(
    root: Path, docs: list[tuple[str, str]] | None = None, clean_params: dict | None = None, **train
) -> Pipeline:
    """The stage cores in-process on `docs` (default: noisy_docs()); the bundle at root/bundle."""
    raw_dir = write_text_dir(root / "raw", docs if docs is not None else noisy_docs())
    ip = IngestParams(source=str(raw_dir), format="text_dir")
    records = read_records(ip)
    documents = ingest(records, ip).documents
    cp = CleanParams(**(clean_params or {}))
    cleaned = clean(documents, cp, load_stopwords(cp)).clean
    parts, _ = split(cleaned, SplitParams(seed=1, train=0.6, valid=0.2, test=0.2))
    vocab = build_vocab(count_tokens(arrow_values(parts["train"]["tokens"]), 1), VocabParams())
    tp = TrainParams(
        **{
            "model": "bag",
            "device": "cpu",
            "hash_buckets": 256,
            "batch_size": 32,
            "epochs": 4,
            "lr": 0.05,
            "bigrams": "hashed",
            "optimizer": "adam",
            "bag": {"embed_dim": 16, "dropout": 0.0},
            "cnn": {"embed_dim": 16, "dropout": 0.0, "num_filters": 8, "kernel_sizes": (2, 3)},
            "weight_decay": 0.0,
            "label_smoothing": 0.0,
            **train,
        }
    )
    out = train_config(Prepared(parts["train"], parts["valid"], vocab), tp, torch.device("cpu"))
    config = bundle_config(out.cfg, out.enc, out.labels, vocab, cp, tp, out.result, "cpu")
    bundle = save_bundle(root / "bundle", out.result.best_state, config, vocab)
    return Pipeline(root, bundle, records, parts)


def jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


STAGES = (ingest_stage, clean_stage, split_stage, vocab_stage)
PARQUETS = [
    "data/interim/documents.parquet",
    "data/interim/rejected_ingest.parquet",
    "data/interim/clean.parquet",
    "data/interim/rejected_clean.parquet",
    "data/processed/train.parquet",
    "data/processed/valid.parquet",
    "data/processed/test.parquet",
]
JSONS = [
    "reports/data/ingest.json",
    "reports/data/clean.json",
    "reports/data/split.json",
    "data/processed/vocab.json",
]


def corpus_rows(n: int = 500) -> list[tuple[str, str, str | None]]:
    """(label, text, predefined split): duplicates far apart, a label conflict, blank and marker
    lines, documents empty after cleaning, one text in two predefined splits."""
    rows = [(label, text, None) for label, text in make_docs(n, seed=3)]
    rows += [(label, text, None) for label, text in make_docs(n, seed=3)[:60]]  # exact duplicates
    rows += [
        ("neg", rows[5][1], None),
        ("pos", "   ", None),
        ("pos", "<停止词> x", None),
        ("neg", "!!! 123", None),
        ("pos", "", None),
    ]
    rows += [
        ("pos", rows[10][1], "test"),
        ("pos", rows[11][1], "valid"),
        ("neg", "独特的测试文本", "train"),
    ]
    return rows


def write_parquet_source(path: Path, rows) -> Path:
    pq.write_table(
        pa.table(
            {
                "text": [r[1] for r in rows],
                "label": [r[0] for r in rows],
                "split": [r[2] for r in rows],
            }
        ),
        path,
        row_group_size=97,
    )
    return path


def write_text_source(root: Path, rows) -> Path:
    for label in ("pos", "neg"):
        (root / f"{label}.txt").parent.mkdir(parents=True, exist_ok=True)
        (root / f"{label}.txt").write_text("\n".join(r[1] for r in rows if r[0] == label) + "\n", encoding="utf-8")
    return root


def run_pipeline(
    workdir: Path,
    source: Path,
    chunk_rows: int,
    engine: str = "local",
    clean: dict | None = None,
    **ingest_extra,
) -> dict:
    """Run the four stage mains in `workdir`; return every output, read back."""
    workdir.mkdir(parents=True, exist_ok=True)
    params = project_params()
    params["ingest"].update(source=str(source), **ingest_extra)
    params["clean"].update(clean or {})
    for s in ("ingest", "clean", "split", "vocab"):
        params[s].update(chunk_rows=chunk_rows, engine=engine)
    params["vocab"]["min_freq"] = 1
    (workdir / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True), encoding="utf-8")
    old = os.getcwd()
    os.chdir(workdir)
    try:
        for stage in STAGES:
            stage.main()
    finally:
        os.chdir(old)
    out = {p: read_parquet(workdir / p) for p in PARQUETS}
    out.update({p: json.loads((workdir / p).read_text(encoding="utf-8")) for p in JSONS})
    leftovers = [p for p in workdir.rglob(".*") if p.is_file() or p.is_dir() and p.name.startswith(".ingest-")]
    assert not leftovers, leftovers  # no temp files or spill folders left behind
    return out


def assert_same(a: dict, b: dict) -> None:
    for key in PARQUETS:
        pd.testing.assert_frame_equal(a[key], b[key], check_dtype=False, obj=key)
        for col in a[key].columns:  # values, not just dtype-tolerant equality
            if col == "tokens":
                assert [list(t) for t in a[key][col]] == [list(t) for t in b[key][col]], key
            else:
                assert (
                    a[key][col].astype(object).where(a[key][col].notna(), None).tolist()
                    == b[key][col].astype(object).where(b[key][col].notna(), None).tolist()
                ), (key, col)
    for key in JSONS:
        assert a[key] == b[key], key


LIMITS = Limits(max_body_bytes=4096, max_texts=8, max_chars=200)


@contextmanager
def serving(app, timeout: float = 20.0):
    """uvicorn serving `app` on 127.0.0.1 in a thread; stopped (and joined) on exit."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(server_config(app, "127.0.0.1", port, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + timeout
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()
        assert not thread.is_alive(), "the test server did not stop"
