"""Schedules: the served deployments, prefect.yaml, and a real `prefect server start`."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate

from flows.serve import CONFIG, build_deployments, build_parser
from tests.fixtures import env, run
from tests.flows.conftest import set_param


def test_schedules_and_concurrency_limits_come_from_prefect_yaml(tmp_path):
    pipeline, incoming = build_deployments(build_parser().parse_args(["--repo", str(tmp_path)]))
    config = {d["entrypoint"]: d for d in yaml.safe_load(CONFIG.read_text())["deployments"]}
    assert pipeline.schedules[0].schedule.cron == config["flows/pipeline.py:pipeline"]["schedules"][0]["cron"]
    assert (
        incoming.schedules[0].schedule.interval.total_seconds()
        == config["flows/incoming/flow.py:incoming"]["schedules"][0]["interval"]
    )
    for dep in (pipeline, incoming):
        assert dep.concurrency_limit == 1 and dep.concurrency_options.collision_strategy.value == "ENQUEUE"
        assert dep.parameters["repo"] == str(tmp_path.resolve())

    (only,) = build_deployments(
        build_parser().parse_args(["--cron", "*/5 * * * *", "--no-incoming", "--target", "vocab"])
    )
    assert only.schedules[0].schedule.cron == "*/5 * * * *" and only.parameters["target"] == "vocab"
    (only,) = build_deployments(build_parser().parse_args(["--interval", "90", "--no-incoming"]))
    assert only.schedules[0].schedule.interval.total_seconds() == 90
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--cron", "* * * * *", "--interval", "5"])


def test_prefect_deploy_registers_both_deployments_from_prefect_yaml(fresh_repo, prefect_api):
    shutil.copy2(CONFIG, fresh_repo / "prefect.yaml")
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name="textclf", type="process"))
    e = {**env(), "PREFECT_API_URL": prefect_api}
    proc = subprocess.run(
        [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"],
        cwd=fresh_repo,
        env=e,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with get_client(sync_client=True) as client:
        deps = {d.name: d for d in client.read_deployments()}
    assert deps["scheduled"].schedules[0].schedule.cron == "0 3 * * *"
    assert deps["new-data"].schedules[0].schedule.interval.total_seconds() == 600
    for d in (deps["scheduled"], deps["new-data"]):
        assert d.global_concurrency_limit.limit == 1
        assert d.work_pool_name == "textclf"
        assert d.pull_steps[0]["prefect.deployments.steps.set_working_directory"]["directory"] == str(fresh_repo)


# ---------------------------------------------------------------------------------------------
# a real server


def start(cmd: list[str], e: dict, log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:  # the child keeps its own handle
        return subprocess.Popen(cmd, env=e, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def stop(proc: subprocess.Popen, sig: int, timeout: float = 60, kill: bool = True) -> bool:
    """Signal the process group; True if it and everything it started ended in time (else, with
    `kill`, SIGKILL whatever is left: a test never leaves processes behind)."""
    family = [
        proc,
        *(psutil.Process(proc.pid).children(recursive=True) if proc.poll() is None else []),
    ]
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass
    deadline = time.monotonic() + timeout
    while group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    clean = proc.poll() is not None and not group_alive(proc.pid)
    if not clean and kill:  # never leave anything behind, even when the test fails
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for p in family:
            try:
                if not isinstance(p, subprocess.Popen):
                    p.kill()
            except psutil.NoSuchProcess:
                pass
        proc.wait(10)
    return clean


def wait_for(check, timeout: float, what: str, procs: list[subprocess.Popen], logs: list[Path]):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p, log in zip(procs, logs, strict=True):
            if p.poll() is not None:
                raise AssertionError(
                    f"{log.name} exited ({p.returncode}) while waiting for {what}:\n"
                    + log.read_text(errors="replace")[-4000:]
                )
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(
        f"no {what} within {timeout:g} s:\n" + "\n".join(log.read_text(errors="replace")[-3000:] for log in logs)
    )


def api_client(api: str, home: Path) -> httpx.Client:
    """An HTTP client for the local server as the flow commands' Prefect client talks to it: the
    secret from $PREFECT_HOME/textclf-server.auth (Basic auth) and a CSRF token for POSTs."""
    import base64
    import uuid

    secret = (home / "textclf-server.auth").read_text().strip()
    auth = {"Authorization": "Basic " + base64.b64encode(secret.encode()).decode()}
    client_id = str(uuid.uuid4())
    token = httpx.get(f"{api}/csrf-token?client={client_id}", headers=auth, timeout=10).json()["token"]
    return httpx.Client(headers={**auth, "Prefect-Csrf-Token": token, "Prefect-Csrf-Client": client_id}, timeout=10)


@pytest.mark.serial  # timing: a real server, a 6 s schedule and Ctrl-C
def test_a_served_schedule_runs_to_completion_on_a_real_server(built_repo, tmp_path):
    # something for the scheduled run to do: only vocab has to rerun
    set_param(built_repo, "vocab.min_freq", 7)
    home = tmp_path / "prefect-home"
    base = {k: v for k, v in env().items() if not k.startswith("PREFECT_") and k != "TEXTCLF_PREFECT_SERVER"}
    base.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_UI_ENABLED="false")
    server_log, serve_log = home / "textclf-server.log", tmp_path / "serve.log"
    # No PREFECT_API_URL: flows.serve starts the local server itself (flows.prefect_server) and
    # leaves it running for the next command; `python -m flows.prefect_server stop` ends it.
    serve = start(
        [
            sys.executable,
            "-m",
            "flows.serve",
            "--interval",
            "6",
            "--repo",
            str(built_repo),
            "--target",
            "vocab",
            "--no-incoming",
        ],
        {**base, "PREFECT_RUNNER_POLL_FREQUENCY": "1"},
        serve_log,
    )
    server_pid = None
    try:

        def server_state():
            try:
                state = json.loads((home / "textclf-server.json").read_text())
                return state if httpx.get(f"{state['api_url']}/health", timeout=2).status_code == 200 else None
            except (OSError, ValueError, KeyError, httpx.HTTPError):
                return None

        state = wait_for(server_state, 120, "the local server flows.serve starts", [serve], [serve_log])
        api, server_pid = state["api_url"], state["pid"]
        assert "started a local Prefect server" in serve_log.read_text(errors="replace")
        assert httpx.post(f"{api}/flow_runs/filter", json={}, timeout=10).status_code in (401, 403)  # no secret
        http = api_client(api, home)

        def completed_run():
            r = http.post(
                f"{api}/flow_runs/filter",
                json={"flow_runs": {"state": {"type": {"any_": ["COMPLETED", "FAILED", "CRASHED"]}}}},
            )
            runs = r.json() if r.status_code == 200 else []
            return runs[0] if runs else None

        run_ = wait_for(completed_run, 150, "finished scheduled run", [serve], [serve_log])
        assert run_["state_type"] == "COMPLETED", (
            serve_log.read_text(errors="replace")[-4000:] + server_log.read_text(errors="replace")[-2000:]
        )
        assert run_["auto_scheduled"] and run_["deployment_id"]
        assert run_["parameters"]["target"] == "vocab"
        dep = http.get(f"{api}/deployments/{run_['deployment_id']}").json()
        assert dep["name"] == "scheduled" and dep["global_concurrency_limit"]["limit"] == 1
        assert (
            yaml.safe_load((built_repo / "dvc.lock").read_text())["stages"]["vocab"]["params"]["params.yaml"][
                "vocab.min_freq"
            ]
            == 7
        )  # the scheduled run reproduced vocab through DVC
        # Pause the schedule (Prefect deletes its pending auto-scheduled runs) and let the runs in
        # flight end, so that Ctrl-C meets an idle runner: a run that is starting up when Ctrl-C
        # arrives can outlive the runner on a loaded machine (README, Known gaps).
        r = http.post(f"{api}/deployments/{run_['deployment_id']}/pause_deployment")
        assert r.status_code < 300, r.text

        def idle():
            r = http.post(
                f"{api}/flow_runs/filter",
                json={"flow_runs": {"state": {"type": {"any_": ["SCHEDULED", "PENDING", "RUNNING"]}}}},
            )
            return r.status_code == 200 and not r.json()

        wait_for(idle, 180, "no run in flight", [serve], [serve_log])
        time.sleep(3)  # the runner's next poll (PREFECT_RUNNER_POLL_FREQUENCY=1) finds nothing to start
    finally:
        # Ctrl-C, then (as a process manager would) SIGTERM if the runner is still up after 10 s
        serve_clean = True
        if serve is not None:
            serve_clean = stop(serve, signal.SIGINT, timeout=10, kill=False) or stop(serve, signal.SIGTERM)
        stopped = subprocess.run(
            [sys.executable, "-m", "flows.prefect_server", "stop"], env=base, capture_output=True, text=True, timeout=60
        )
        server_clean = server_pid is None or not group_alive(server_pid)
        if server_pid is not None and not server_clean:  # never leave anything behind
            os.killpg(server_pid, signal.SIGKILL)
    assert stopped.stdout.strip() == "stopped", stopped.stdout + stopped.stderr
    assert serve_clean, "flows.serve left processes behind:\n" + serve_log.read_text(errors="replace")[-3000:]
    assert server_clean, "prefect server left processes behind"
    assert "up to date" in run(["dvc", "status", "vocab"], built_repo).stdout
