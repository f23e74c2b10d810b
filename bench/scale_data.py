"""The chunked data half (ingest → clean → split → vocab) on corpora larger than memory likes.

Builds N-document corpora with bench/data_stages.py's resampler (first half of one review + second
half of another with the same label, ~5% exact repeats), stored as one Parquet file (text, label),
and runs each stage's real `main()` as its own process (as `dvc repro` does) with
`<stage>.chunk_rows` set, timing it and reading its peak RSS from the kernel (wait4).

    .venv/bin/python bench/scale_data.py --docs 1000000 10000000 --chunk-rows 100000

Target (issue 7): 10M documents on a 2-core, 24 GB machine with peak RSS <= 6 GB.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from data_stages import build_corpus  # noqa: E402

from textclf.paths import copy_project  # noqa: E402

STAGES = ("ingest", "clean", "split", "vocab")


def build_parquet_corpus(path: Path, n: int, seed: int) -> dict[str, int]:
    """bench/data_stages.py's corpus, converted to Parquet (text, label) in 100k-row groups."""
    with tempfile.TemporaryDirectory(prefix="corpus-", dir=path.parent) as tmp:
        counts = build_corpus(Path(tmp), n, seed)
        writer = None
        for label in sorted(counts):
            with open(Path(tmp) / f"{label}.txt", encoding="utf-8") as f:
                while True:
                    lines = [line.rstrip("\n") for _, line in zip(range(100_000), f, strict=False)]
                    if not lines:
                        break
                    table = pa.table({"text": lines, "label": [label] * len(lines)})
                    writer = writer or pq.ParquetWriter(path, table.schema, compression="zstd")
                    writer.write_table(table)
        writer.close()
    return counts


def run_stage(workdir: Path, stage: str) -> tuple[float, float]:
    """Run `python -m stages.<stage>` in workdir: (seconds, peak RSS in GB) of that process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TEXTCLF_LOG_LEVEL": "WARNING"}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", f"stages.{stage}"], cwd=workdir, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{stage} failed with exit code {proc.returncode}")
    return seconds, usage.ru_maxrss / (1 << 20)  # KiB on Linux


def run(n: int, seed: int, chunk_rows: int, engine: str, base: Path) -> tuple[float, float]:
    # a copy of the project (params.yaml names files such as data/stopwords.txt relative to it)
    workdir = copy_project(ROOT, base / f"n{n}")
    corpus = workdir / "corpus.parquet"
    t = time.perf_counter()
    build_parquet_corpus(corpus, n, seed)
    print(
        f"corpus: {n:,} documents, {corpus.stat().st_size / 1e6:.0f} MB Parquet, built in "
        f"{time.perf_counter() - t:.0f} s",
        flush=True,
    )
    params = yaml.safe_load((workdir / "params.yaml").read_text(encoding="utf-8"))
    params["ingest"].update(source=str(corpus), format="parquet")
    for s in STAGES:
        params[s].update(chunk_rows=chunk_rows, engine=engine)
    (workdir / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=False), encoding="utf-8")
    total, peak = 0.0, 0.0
    for stage in STAGES:
        seconds, rss = run_stage(workdir, stage)
        total += seconds
        peak = max(peak, rss)
        print(
            f"  {stage:<7} {seconds:7.1f} s  {n / seconds:>10,.0f} docs/s  peak RSS {rss:5.2f} GB",
            flush=True,
        )
    print(
        f"data half, {n:>11,} docs: {total:7.1f} s  {n / total:>9,.0f} docs/s  peak RSS {peak:.2f} GB "
        f"(chunk_rows {chunk_rows:,}, engine {engine})",
        flush=True,
    )
    return total, peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--chunk-rows", type=int, default=100_000)
    ap.add_argument("--engine", choices=["local", "dask"], default="local")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="where corpora and outputs go (default: a temp dir)",
    )
    args = ap.parse_args()
    print(
        f"python {platform.python_version()}, {os.cpu_count()} CPUs, {platform.machine()}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="textclf-scale-", dir=args.workdir) as tmp:
        results = {n: run(n, args.seed, args.chunk_rows, args.engine, Path(tmp)) for n in args.docs}
    print("summary:")
    for n, (total, peak) in results.items():
        print(f"  {n:>11,} docs  {n / total:>9,.0f} docs/s  peak RSS {peak:.2f} GB")


if __name__ == "__main__":
    main()
