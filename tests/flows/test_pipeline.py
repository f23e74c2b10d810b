"""The pipeline flow on real temp repos against the session's Prefect test server.

Flow tests stay on the data half (`target="vocab"`) so they finish quickly whatever stages
dvc.yaml has grown since."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pandas as pd
import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterId,
)
from prefect.exceptions import ObjectAlreadyExists

from flows import dvcops, repolock
from flows.pipeline import pipeline
from tests.fixtures import env, run
from tests.flows.conftest import another_run_holds_the_lock, commit_all
from textclf.artifacts import write_parquet
from textclf.errors import ContractError, ParamsError

DATA_HALF = ["ingest", "clean", "split", "vocab"]


def task_runs(state) -> dict[str, list]:
    """Task runs of the flow run behind `state`, by task run name."""
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
        )
    out: dict[str, list] = {}
    for r in runs:
        out.setdefault(r.name, []).append(r)
    return out


def artifacts(state) -> dict[str, object]:
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id]))
        )
    # table artifacts come back as JSON text
    return {a.key: json.loads(a.data) if a.type == "table" else a.data for a in found}


def statuses(result: dict) -> dict[str, str]:
    return {s["stage"]: s["status"] for s in result["stages"]}


def dvc_up_to_date(repo) -> bool:
    return "up to date" in run(["dvc", "status", *DATA_HALF], repo).stdout


def test_every_stage_runs_then_a_second_run_skips_all(fresh_repo):
    state = pipeline(target="vocab", repo=str(fresh_repo), return_state=True)
    assert state.is_completed()
    first = state.result()
    assert statuses(first) == dict.fromkeys(DATA_HALF, "ran")
    assert all(s["seconds"] > 0 for s in first["stages"])
    assert set(task_runs(state)) == {"check-params", *DATA_HALF}

    second = pipeline(target="vocab", repo=str(fresh_repo))
    assert statuses(second) == dict.fromkeys(DATA_HALF, "skipped")
    assert dvc_up_to_date(fresh_repo)
    lock = yaml.safe_load((fresh_repo / "dvc.lock").read_text())
    assert set(DATA_HALF) <= set(lock["stages"])

    # no evaluate output in this repo: the report says so instead of failing
    arts = artifacts(state)
    assert "Metrics not available yet" in arts["textclf-metrics"]
    assert "HOOK" not in arts["textclf-metrics"] and "textclf diff" in arts["textclf-metrics"]
    assert [row["status"] for row in arts["textclf-stages"]] == ["ran"] * 4


def test_a_broken_data_contract_fails_at_once_without_retries(built_repo):
    # A stricter Documents contract in this copy of the project: the real ingest stage, under
    # real pandera, now produces output that breaks it ("neg" is not an allowed label).
    schemas = built_repo / "textclf" / "schemas.py"
    schemas.write_text(
        schemas.read_text()
        + (
            "\n\n# test: only 'pos' allowed\n"
            "Documents = Documents.update_columns({'label': {'checks': [pa.Check.isin(['pos'])]}})\n"
        )
    )
    state = pipeline(target="vocab", repo=str(built_repo), retries=3, retry_delay_s=0, return_state=True)
    assert state.is_failed()
    with pytest.raises(ContractError, match=r"(?s)ingest: output violates.*column label: check isin") as err:
        state.result()
    assert err.value.report.as_posix() == "reports/validation/ingest.json"
    runs = task_runs(state)
    assert len(runs["ingest"]) == 1 and runs["ingest"][0].run_count == 1  # not retried
    assert runs["ingest"][0].state.is_failed()
    assert "clean" not in runs  # nothing after it ran
    report = json.loads((built_repo / "reports/validation/ingest.json").read_text())
    assert report["failure_cases"]
    arts = artifacts(state)
    cases = arts["textclf-contract-failures"]
    assert cases and {(c["stage"], c["column"], c["check"]) for c in cases} == {("ingest", "label", "isin(['pos'])")}
    assert {c["failure_case"] for c in cases} == {"neg"}
    stages = arts["textclf-stages"]
    assert [(r["stage"], r["status"]) for r in stages] == [
        ("ingest", "failed"),
        ("clean", "not run"),
        ("split", "not run"),
        ("vocab", "not run"),
    ]


def test_a_transient_fault_is_retried_and_the_run_succeeds(built_repo, monkeypatch):
    """The first attempt finds DVC's own repository lock held (a user's `dvc` in a terminal, say):
    real `dvc repro` fails with its LockError; the retry gets through."""
    import zc.lockfile

    real = dvcops.repro_stage
    attempts = []

    def flaky(root, stage, **kw):
        attempts.append(stage)
        if len(attempts) > 1:
            return real(root, stage, **kw)
        held = zc.lockfile.LockFile(str(root / ".dvc" / "tmp" / "lock"))
        try:
            return real(root, stage, **kw)
        finally:
            held.close()

    monkeypatch.setattr(dvcops, "repro_stage", flaky)
    state = pipeline(
        target="ingest",
        force=True,
        repo=str(built_repo),
        retries=2,
        retry_delay_s=0,
        return_state=True,
    )
    assert state.is_completed()
    assert attempts == ["ingest", "ingest"]
    (ingest,) = task_runs(state)["ingest"]
    assert ingest.run_count == 2 and ingest.state.is_completed()
    assert statuses(state.result()) == {"ingest": "ran"}


def test_params_overrides_reach_the_stage_and_params_yaml_is_kept(built_repo):
    params = built_repo / "params.yaml"
    before = params.read_bytes()
    result = pipeline(target="vocab", params=["vocab.min_freq=50"], repo=str(built_repo))
    assert statuses(result) == {
        "ingest": "skipped",
        "clean": "skipped",
        "split": "skipped",
        "vocab": "ran",
    }
    vocab = json.loads((built_repo / "data/processed/vocab.json").read_text())
    assert vocab["min_freq"] == 50 and all(c >= 50 for c in vocab["counts"][2:])
    lock = yaml.safe_load((built_repo / "dvc.lock").read_text())
    assert lock["stages"]["vocab"]["params"]["params.yaml"]["vocab.min_freq"] == 50
    assert params.read_bytes() == before  # not a permanent edit

    # the run is a DVC experiment, named after the Prefect run, with its overrides and run id
    name = result["experiment"]
    assert name and name.startswith("pipeline-vocab-S-vocab.min_freq-50-")
    shown = json.loads(run(["dvc", "exp", "show", "--json"], built_repo).stdout)
    (exp,) = [e for row in shown for e in (row.get("experiments") or []) if e["name"] == name]
    (rev,) = exp["revs"]
    assert rev["data"]["params"]["params.yaml"]["data"]["vocab"]["min_freq"] == 50
    refs = run(["git", "for-each-ref", "refs/exps", "--format=%(refname) %(contents:subject)"], built_repo).stdout
    (line,) = [ln for ln in refs.splitlines() if ln.split()[0].endswith("/" + name)]
    run_id = line.split("Prefect flow run ", 1)[1].split()[0]
    assert len(run_id) == 36 and run_id[:8].replace("-", "") in name

    result = pipeline(target="vocab", params=["vocab.min_freq=50"], keep_params=True, repo=str(built_repo))
    assert statuses(result)["vocab"] == "skipped"  # same value as the last run: nothing to do
    assert yaml.safe_load(params.read_text())["vocab"]["min_freq"] == 50  # asked to keep it


@pytest.mark.parametrize(
    ("run_name", "expected"),
    [
        ("pipeline all -S train.lr=0.01", "pipeline-all-S-train.lr-0.01-1a2b3c4d"),
        ("pipeline train --force -S a.b=x/y..z", "pipeline-train-force-S-a.b-x-y.z-1a2b3c4d"),
        ("  ", "flow-run-1a2b3c4d"),
        ("x" * 100, "x" * 60 + "-1a2b3c4d"),
    ],
)
def test_experiment_names_are_git_ref_safe(run_name, expected):
    name = dvcops.experiment_name(run_name, "1a2b3c4d-0000-4000-8000-000000000000")
    assert name == expected
    assert run(["git", "check-ref-format", f"refs/exps/{name}"], Path.cwd()).returncode == 0


def test_invalid_params_fail_before_any_stage_runs(built_repo):
    before = (built_repo / "params.yaml").read_bytes()
    state = pipeline(
        target="vocab",
        params=["vocab.min_freq=0"],
        repo=str(built_repo),
        retries=3,
        return_state=True,
    )
    assert state.is_failed()
    with pytest.raises(ParamsError, match=r"params\.yaml: vocab\.min_freq: .*greater than or equal to 1"):
        state.result()
    assert set(task_runs(state)) == {"check-params"}
    assert (built_repo / "params.yaml").read_bytes() == before


def test_a_missing_source_stops_the_command_with_its_key_and_exit_3(built_repo, capsys):
    """`python -m flows.pipeline` on an ingest.source that does not exist: one message naming the
    key, the params' exit code, no stage run and no retries."""
    from flows import pipeline as module

    rc = module.main(
        ["--target", "vocab", "--repo", str(built_repo), "-S", "ingest.source=data/no-such-corpus", "--retries", "2"]
    )
    err = capsys.readouterr().err
    assert rc == 3
    assert "params.yaml: ingest.source: data/no-such-corpus not found" in err
    assert "Traceback" not in err


def test_metrics_report_compares_with_the_last_commit(built_repo):
    metrics = built_repo / "reports" / "metrics.json"

    def write(acc, f1, per_class, **extra):
        metrics.write_text(
            json.dumps(
                {
                    "test": {"accuracy": acc, "macro_f1": f1, "per_class": per_class},
                    "baseline": {"accuracy": 0.80, "macro_f1": 0.79},
                    **extra,
                }
            )
        )

    write(0.85, 0.84, {"neg": {"precision": 0.8, "recall": 0.9, "f1": 0.85, "support": 30}})
    commit_all(built_repo, "metrics")
    write(
        0.90,
        0.88,
        {
            "pos": {"precision": 0.9, "recall": 0.86, "f1": 0.88, "support": 27},
            "neg": {"precision": 0.87, "recall": 0.91, "f1": 0.89, "support": 30},
        },
        comparison={
            "delta_macro_f1": 0.09,
            "ci95_low": -0.01,
            "ci95_high": 0.2,
            "bootstrap": 1000,
            "model_only_correct": 7,
            "baseline_only_correct": 3,
            "mcnemar_p": 0.34,
            "references": {
                "best": "baseline_raw",
                "best_macro_f1": 0.8830,
                "margin": -0.0030,
                "tolerance": 0.005,
                "non_inferior": True,
            },
        },
        baseline_raw={"accuracy": 0.89, "macro_f1": 0.8830},
    )
    queue = pd.DataFrame(
        {
            "rank": [1, 2],
            "doc_id": ["0123456789abcdef", "fedcba9876543210"],
            "split": ["train", "test"],
            "label": ["neg", "pos"],
            "suggested": ["pos", "neg"],
            "self_confidence": [0.0123456, 0.05],
            "text": ["这本书真得很不错", "x" * 300],
        }
    )
    write_parquet(queue, built_repo / "reports/labels/suspects.parquet")
    state = pipeline(target="ingest", repo=str(built_repo), return_state=True)
    arts = artifacts(state)
    sus = arts["textclf-suspect-labels"]
    assert [r["doc_id"] for r in sus] == queue["doc_id"].tolist()
    assert sus[0]["self_confidence"] == 0.0123 and len(sus[1]["text"]) == 120
    md = arts["textclf-metrics"]
    assert "| macro_f1 | 0.8800 | 0.7900 | +0.0900 | 0.8400 | +0.0400 |" in md
    assert "| accuracy | 0.9000 | 0.8000 | +0.1000 | 0.8500 | +0.0500 |" in md
    assert (
        "Model − baseline macro-F1: +0.0900, 95% paired bootstrap interval [-0.0100, +0.2000]: within the "
        "test split's noise. McNemar p = 0.34 (7 documents only the model gets right, 3 only the baseline)."
    ) in md
    assert (
        "Best reference: `baseline_raw` (macro-F1 0.8830; TF-IDF + LR on the raw text 0.8830). "
        "Model margin -0.0030: **non-inferior**."
    ) in md
    assert [r["label"] for r in arts["textclf-per-class"]] == ["neg", "pos"]
    assert arts["textclf-per-class"][1]["f1"] == 0.88


def test_a_second_run_waits_for_the_lock_or_gives_up_with_a_clear_message(built_repo):
    with another_run_holds_the_lock(built_repo, "flow run other-run") as release:
        state = pipeline(target="ingest", repo=str(built_repo), lock_timeout_s=0.5, return_state=True)
        assert state.is_failed()
        with pytest.raises(
            repolock.RepoBusy,
            match=r"(?s)is busy: .*other-run.*gave up after 0\.5 s.*Nothing was changed",
        ):
            state.result()
        assert task_runs(state) == {}  # it touched nothing
        threading.Timer(1.0, release.set).start()
        assert pipeline(target="ingest", repo=str(built_repo), lock_timeout_s=30, return_state=True).is_completed()


def active_slots(name: str) -> int:
    with get_client(sync_client=True) as client:
        return client.read_global_concurrency_limit_by_name(name).active_slots


def test_a_run_holds_the_repositorys_prefect_slot_and_a_second_run_waits_for_it(built_repo, caplog):
    from prefect.concurrency.sync import concurrency

    name = repolock.slot_name(built_repo)
    assert pipeline(target="ingest", repo=str(built_repo), return_state=True).is_completed()
    with get_client(sync_client=True) as client:
        assert client.read_global_concurrency_limit_by_name(name).limit == 1  # created by the run,
    assert active_slots(name) == 0  # and given back after it
    assert not (built_repo / repolock.SLOT_FILE).exists()
    with concurrency(name, occupy=1):  # another flow run, anywhere on this Prefect server, holds it
        state = pipeline(target="ingest", repo=str(built_repo), lock_timeout_s=1, return_state=True)
        assert state.is_failed()
        with pytest.raises(repolock.RepoBusy, match=rf"holds the Prefect concurrency limit {name}.*gave up after 1 s"):
            state.result()
        assert not (built_repo / repolock.OWNER_FILE).exists()  # the file lock was never taken
        assert "waiting for the repository's Prefect concurrency slot" in caplog.text
    # a run that waits gets the slot when its holder lets go (the holder lets go once the run
    # has logged that it waits, so the test does not race the run's start-up)
    holding, released = threading.Event(), []

    def other_run():
        with concurrency(name, occupy=1):
            holding.set()
            deadline = time.monotonic() + 60
            while "waiting for the repository's Prefect concurrency slot" not in caplog.text:
                assert time.monotonic() < deadline
                time.sleep(0.1)
            time.sleep(1.0)
            released.append(time.monotonic())

    caplog.clear()  # before the holder starts looking for the run's waiting message
    other = threading.Thread(target=other_run)
    other.start()
    assert holding.wait(30)
    assert pipeline(target="ingest", repo=str(built_repo), lock_timeout_s=30, return_state=True).is_completed()
    done = time.monotonic()
    other.join()
    assert "waiting for the repository's Prefect concurrency slot" in caplog.text  # it did wait,
    assert released and done >= released[0]  # until the other run let go


def test_a_killed_holders_slot_is_released_at_once_not_after_its_lease(built_repo, prefect_api):
    """SIGKILL a process holding the slot: the next run finds the recorded holder dead on this host
    and releases its lease at once (the lease itself would hold the slot for SLOT_LEASE_S)."""
    victim = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from flows import repolock\n"
        "with repolock.run_slot(Path(sys.argv[1]), 10, 'victim'):\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    e = {**env(), "PREFECT_API_URL": prefect_api, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    killed = subprocess.run([sys.executable, "-c", victim, str(built_repo)], env=e, capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr[-2000:]
    name = repolock.slot_name(built_repo)
    assert active_slots(name) == 1  # still held
    record = json.loads((built_repo / repolock.SLOT_FILE).read_text())
    assert record["what"] == "victim" and record["lease_id"]
    assert repolock.SLOT_LEASE_S > 5  # so getting the slot within 5 s is not the lease expiring
    with repolock.run_slot(built_repo, 5, "next"):
        assert active_slots(name) == 1  # ours now
        assert json.loads((built_repo / repolock.SLOT_FILE).read_text())["what"] == "next"
    assert active_slots(name) == 0


def test_a_free_slot_is_taken_even_without_waiting(built_repo, prefect_api):
    """lock_timeout_s=0 means "do not wait", not "do not even ask": a free slot is taken."""
    with repolock.run_slot(built_repo, 0, "now"):
        assert json.loads((built_repo / repolock.SLOT_FILE).read_text())["what"] == "now"
    assert not (built_repo / repolock.SLOT_FILE).exists()


def test_a_slot_whose_lease_the_server_lost_is_given_back_too(built_repo, prefect_api, caplog):
    """The server counts a slot but no longer knows its lease (restarted with leases in memory, or
    granted by another temporary server) and its recorded holder is dead: the next run decrements
    it and goes on, rather than waiting out lock_timeout_s."""
    name = repolock.slot_name(built_repo)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    record = {"pid": int(dead.stdout), "host": socket.gethostname(), "what": "lost", "since": "then"}
    record |= {"lease_id": str(uuid.uuid4()), "limit": name}
    with get_client(sync_client=True) as client:
        try:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
        except ObjectAlreadyExists:
            pass
        client.increment_concurrency_slots(names=[name], slots=1, mode="concurrency")  # a slot, no lease
    assert active_slots(name) == 1
    (built_repo / repolock.SLOT_FILE).write_text(json.dumps(record))
    with repolock.run_slot(built_repo, 5, "next"):
        assert json.loads((built_repo / repolock.SLOT_FILE).read_text())["what"] == "next"
    assert "the server had lost its lease" in caplog.text
    assert active_slots(name) == 0


def test_the_lease_is_renewed_in_the_callers_context(built_repo, monkeypatch):
    """The lease is renewed by a thread (Prefect's, inside `concurrency()`): without the
    caller's context (Prefect's settings of this run) Prefect would not see the run's API URL
    there and would start a temporary server for it (found in the no-op flow run: 16.7 s instead
    of 8.5 s). The API URL here is in the settings context only, not in the environment."""
    from prefect.server.api import server

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    started = []
    monkeypatch.setattr(server.SubprocessASGIServer, "start", lambda self, *a, **k: started.append(self))
    renewed = threading.Event()
    from prefect.client.orchestration import SyncPrefectClient

    renew = SyncPrefectClient.renew_concurrency_lease

    def counting(self, *args, **kwargs):
        renewed.set()
        return renew(self, *args, **kwargs)

    monkeypatch.setattr(SyncPrefectClient, "renew_concurrency_lease", counting)
    with repolock.run_slot(built_repo, 5, "ctx"):
        assert renewed.wait(30), "the lease was never renewed"
    assert started == []  # no temporary server was started for the renewal thread


def test_an_unusable_prefect_api_leaves_the_file_lock_in_charge(built_repo, monkeypatch, caplog):
    def refused(*_args, **_kwargs):
        raise httpx.ConnectError("connection refused")

    monkeypatch.setattr(repolock, "_take_slot", refused)
    with repolock.run_slot(built_repo, 5, "no api"):
        assert repolock.lock_holder(built_repo)["what"] == "no api"  # the file lock is held
        assert not (built_repo / repolock.SLOT_FILE).exists()
    assert "the file lock alone applies" in caplog.text


def test_two_concurrent_runs_on_one_repo_both_end_and_dvc_lock_stays_valid(fresh_repo, prefect_api):
    """Two real processes (as two scheduled runs would be) on one repo: one runs the stages, the
    other waits for the lock and then finds nothing to do."""
    e = {**env(), "PREFECT_API_URL": prefect_api}
    cmd = [
        sys.executable,
        "-m",
        "flows.pipeline",
        "--repo",
        str(fresh_repo),
        "--target",
        "vocab",
        "--retry-delay",
        "1",
        "--lock-timeout",
        "240",
    ]
    procs = [subprocess.Popen(cmd, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        outs.append((p.returncode, out, err))
    for rc, _out, err in outs:
        assert rc == 0, err[-3000:]
    ran = [line.split(":")[0] for _, out, _ in outs for line in out.splitlines() if ": ran" in line]
    skipped = [line.split(":")[0] for _, out, _ in outs for line in out.splitlines() if ": skipped" in line]
    assert sorted(ran) == sorted(DATA_HALF) and sorted(skipped) == sorted(DATA_HALF)  # each stage once
    lock = yaml.safe_load((fresh_repo / "dvc.lock").read_text())
    assert lock["schema"] == "2.0" and set(DATA_HALF) <= set(lock["stages"])
    assert dvc_up_to_date(fresh_repo)


@contextmanager
def webhook_receiver():
    """A real HTTP endpoint on 127.0.0.1 that records the JSON bodies POSTed to it."""
    got: list[dict] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            got.append(json.loads(body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", got
    finally:
        server.shutdown()
        server.server_close()


def test_a_failed_run_notifies_the_configured_block_once_and_runs_are_named(built_repo):
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    with webhook_receiver() as (url, got):
        CustomWebhookNotificationBlock(
            name="textclf-tests", url=url, json_data={"subject": "{{subject}}", "body": "{{body}}"}
        ).save("textclf-test-alerts", overwrite=True)
        slug = "custom-webhook/textclf-test-alerts"
        state = pipeline(
            target="vocab", params=["vocab.min_freq=0"], repo=str(built_repo), notify_block=slug, return_state=True
        )
        assert state.is_failed()
        with get_client(sync_client=True) as client:
            run_name = client.read_flow_run(state.state_details.flow_run_id).name
        assert run_name == "pipeline vocab -S vocab.min_freq=0"
        assert len(got) == 1, got
        assert got[0]["subject"] == f"textclf-pipeline: run {run_name} Failed"
        assert "vocab.min_freq" in got[0]["body"] and str(state.state_details.flow_run_id) in got[0]["body"]
        # a run that succeeds tells no one
        assert pipeline(target="ingest", repo=str(built_repo), notify_block=slug, return_state=True).is_completed()
        assert len(got) == 1
