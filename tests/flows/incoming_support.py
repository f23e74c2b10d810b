"""What the new-data flow's tests share (test_incoming, test_incoming_faults): the stand-in
metric and model stages the gate reads, and small helpers over a temp repo.

The gate needs a test metric that new data can move either way without training a model, so the
repo gets one extra DVC stage, `score`, whose "macro_f1" is the share of `pos` documents: more
positive documents raise it, a batch of negative ones lowers it."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

from tests.fixtures import run
from tests.flows.conftest import commit_all

SCORE = """\
import json
from pathlib import Path

import pyarrow.parquet as pq

labels = pq.read_table("data/interim/documents.parquet", columns=["label"]).column("label").to_pylist()
share = labels.count("pos") / len(labels)
Path("reports").mkdir(exist_ok=True)
Path("reports/score.json").write_text(json.dumps({
    "test": {"accuracy": share, "macro_f1": share},
    "baseline": {"accuracy": 0.5, "macro_f1": 0.5}}))
"""
GATE = {"metrics_file": "reports/score.json", "target": "score", "min_age_s": 0, "retry_delay_s": 0}

# A stand-in model whose test predictions the new data can spoil while its metrics file stays
# the same: only the same-documents gate can see the difference. Test documents: doc_id mod 4.
PREDICT = """\
import json
from pathlib import Path

import pandas as pd

docs = pd.read_parquet("data/interim/documents.parquet", columns=["doc_id", "label", "text"])
poisoned = docs["text"].str.contains("差评风暴", regex=False).any()
test = docs[docs["doc_id"].map(lambda d: int(d, 16) % 4 == 0)]
predicted = test["label"].map({"pos": "neg", "neg": "pos"}) if poisoned else test["label"]
Path("reports/standin").mkdir(parents=True, exist_ok=True)
pd.DataFrame({"doc_id": test["doc_id"], "label": test["label"], "predicted": predicted}).to_parquet(
    "reports/standin/predictions.parquet")
Path("reports/score.json").write_text(json.dumps({"test": {"accuracy": 0.9, "macro_f1": 0.9}}))
"""


def with_stage(built_template: Path, parent: Path, name: str, script: str, outs: list[str] | None = None) -> Path:
    """A copy of the built template repo with one more DVC stage (`python <name>.py`, reading the
    ingested documents, writing reports/score.json as metrics), run and committed."""
    repo = parent / "repo"
    shutil.copytree(built_template, repo, symlinks=True)
    (repo / f"{name}.py").write_text(script)
    spec = yaml.safe_load((repo / "dvc.yaml").read_text())
    spec["stages"][name] = {
        "cmd": f"python {name}.py",
        "deps": [f"{name}.py", "data/interim/documents.parquet"],
        **({"outs": outs} if outs else {}),
        "metrics": [{"reports/score.json": {"cache": False}}],
    }
    (repo / "dvc.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    run(["dvc", "repro", name], repo, timeout=300)
    commit_all(repo, f"{name} stage")
    return repo


def drop(repo: Path, name: str, data: bytes) -> Path:
    path = repo / "data" / "incoming" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def lines(prefix: str, words: str, n: int) -> bytes:
    return "".join(f"{prefix}{i}号{words}\n" for i in range(n)).encode("utf-8")


def head(repo: Path) -> str:
    return run(["git", "rev-parse", "HEAD"], repo).stdout.strip()


def tracked_changes(repo: Path) -> str:
    return run(["git", "status", "--porcelain", "--untracked-files=no"], repo).stdout


def incoming_artifact(state) -> str:
    with get_client(sync_client=True) as client:
        (art,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key={"any_": ["textclf-incoming"]},
                flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id]),
            )
        )
    return art.data
