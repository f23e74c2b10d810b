"""Every artifact path of the pipeline, in one import-light module (only pathlib): the stages,
the flows, `textclf diff` and `textclf serve` name files through it, and a test checks each one
against dvc.yaml's outs and deps. Paths are relative to the project root (DVC's working dir)."""

from __future__ import annotations

from pathlib import Path

# ingest
CORRECTIONS = Path("data/labels/corrections.csv")  # reviewed labels (a tracked input, written by `textclf labels`)
DOCUMENTS = Path("data/interim/documents.parquet")
REJECTED_INGEST = Path("data/interim/rejected_ingest.parquet")
INGEST_STATS = Path("reports/data/ingest.json")
# clean
CLEAN = Path("data/interim/clean.parquet")
REJECTED_CLEAN = Path("data/interim/rejected_clean.parquet")
CLEAN_STATS = Path("reports/data/clean.json")
# split
PROCESSED = Path("data/processed")
TRAIN = PROCESSED / "train.parquet"
VALID = PROCESSED / "valid.parquet"
TEST = PROCESSED / "test.parquet"
SPLIT_STATS = Path("reports/data/split.json")
# vocab
VOCAB = PROCESSED / "vocab.json"
# baseline
BASELINE_PREDICTIONS = Path("reports/baseline/predictions.parquet")
RAW_BASELINE_PREDICTIONS = Path("reports/baseline/raw_predictions.parquet")
# labels
SUSPECTS = Path("reports/labels/suspects.parquet")
LABELS_METRICS = Path("reports/labels/metrics.json")
# train
BUNDLE = Path("models/classifier")
TRAIN_REPORTS = Path("reports/train")  # DVCLive's folder: metrics.json, plots/metrics/
AUTOTUNE_REPORT = TRAIN_REPORTS / "autotune.json"
TRIALS_PLOT = TRAIN_REPORTS / "autotune" / "trials.json"
CHECKPOINT = Path("models/checkpoint")  # not a DVC output: resume state (git-ignored)
RUN_METADATA = TRAIN_REPORTS / "run.json"  # not a DVC output: time, host, versions (git-ignored)
# the encoder family's embeddings, by (encoder, max_len, text): not a DVC output, a cache (git-ignored)
EMBEDDINGS = Path(".textclf/embeddings")
# evaluate
METRICS = Path("reports/metrics.json")
PREDICTIONS = Path("reports/predictions.parquet")
EVALUATE_REPORTS = Path("reports/evaluate")  # DVCLive's folder: plots/sklearn/<plot>.json
# export
ONNX_DIR = Path("models/onnx")
EXPORT_REPORT = Path("reports/export.json")
# contracts
VALIDATION_DIR = Path("reports/validation")  # reports/validation/<stage>.json on a broken contract

# What a copy of the project needs to run its pipeline: tracked code and config, no data, no venv.
# The tests' fixture repos and the benchmarks that run stages in a work folder copy exactly this.
PROJECT_FILES = (
    "stages",
    "flows",
    "textclf",
    "dvc.yaml",
    "params.yaml",
    ".dvcignore",
    ".gitignore",
    "pyproject.toml",
    "prefect.yaml",
    "data/stopwords.txt",
    "data/labels/corrections.csv",
    "models/pretrained/none",  # train.encoder.path's placeholder (a train dependency)
)


def copy_project(root: Path, dest: Path, extra: tuple[str, ...] = ()) -> Path:
    """Copy PROJECT_FILES (and `extra`, e.g. "data/sample") from the project at `root` into `dest`
    (created; a file the source lacks is left out). Returns `dest`."""
    import shutil

    dest.mkdir(parents=True, exist_ok=True)
    for name in (*PROJECT_FILES, *extra):
        src = root / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif src.exists():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest
