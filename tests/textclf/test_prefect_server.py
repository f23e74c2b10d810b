"""flows.prefect_server: which Prefect API a flow command line uses, and the local server's
start/stop rules. The real start (a `prefect server start` that flows.serve launches and
`flows.prefect_server stop` ends) is exercised in tests/flows/test_serve.py."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows import prefect_server as ps
from flows import supervisor


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.delenv(ps.MODE_ENV, raising=False)
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        yield tmp_path / "home"


def fake_server(monkeypatch, running=None, start_error=None):
    calls = []

    def start(port=None, timeout_s=120.0):
        calls.append(port)
        if start_error:
            raise RuntimeError(start_error)
        return {"pid": 4242, "api_url": "http://127.0.0.1:4299/api", "log": "/x/textclf-server.log"}

    monkeypatch.setattr(ps, "running", lambda: running)
    monkeypatch.setattr(ps, "start", start)
    return calls


def test_no_api_url_and_no_server_starts_one_and_uses_it(home, monkeypatch, capsys):
    calls = fake_server(monkeypatch)
    with ps.local_server_settings():
        assert PREFECT_API_URL.value() == "http://127.0.0.1:4299/api"
        # Prefect's service threads that run without this context read the environment
        assert os.environ["PREFECT_API_URL"] == "http://127.0.0.1:4299/api"
    assert "PREFECT_API_URL" not in os.environ
    assert calls == [None]
    err = capsys.readouterr().err
    assert "started a local Prefect server at http://127.0.0.1:4299/api" in err
    assert "flows.prefect_server stop" in err and "TEXTCLF_PREFECT_SERVER=temporary" in err
    assert PREFECT_API_URL.value() is None  # only for the command line's run


def test_a_running_server_is_reused_not_restarted(home, monkeypatch, capsys):
    calls = fake_server(monkeypatch, running={"pid": 1, "api_url": "http://127.0.0.1:4200/api"})
    with ps.local_server_settings():
        assert PREFECT_API_URL.value() == "http://127.0.0.1:4200/api"
    assert calls == [] and "using the Prefect server at http://127.0.0.1:4200/api" in capsys.readouterr().err


def test_an_explicit_api_url_wins(home, monkeypatch):
    calls = fake_server(monkeypatch)
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:1/api"}):
        with ps.local_server_settings():
            assert PREFECT_API_URL.value() == "http://127.0.0.1:1/api"
    assert calls == []


@pytest.mark.parametrize("mode", ["temporary", "Temporary "])
def test_temporary_mode_starts_nothing(home, monkeypatch, mode):
    calls = fake_server(monkeypatch)
    monkeypatch.setenv(ps.MODE_ENV, mode)
    with ps.local_server_settings():
        assert PREFECT_API_URL.value() is None
    assert calls == []


def test_a_failed_start_or_a_bad_mode_falls_back_to_the_temporary_server_and_says_why(home, monkeypatch, capsys):
    fake_server(monkeypatch, start_error="the Prefect server did not start (see log)")
    with ps.local_server_settings():
        assert PREFECT_API_URL.value() is None
    assert "did not start (see log); using Prefect's temporary server" in capsys.readouterr().err
    calls = fake_server(monkeypatch)
    monkeypatch.setenv(ps.MODE_ENV, "always")
    with ps.local_server_settings():
        assert PREFECT_API_URL.value() is None
    assert calls == [] and "TEXTCLF_PREFECT_SERVER='always': expected one of auto, temporary" in capsys.readouterr().err


def test_start_takes_the_default_port_or_a_free_one_and_refuses_a_taken_explicit_one(home, monkeypatch):
    spawned = []
    monkeypatch.setattr(ps, "running", lambda: None)
    monkeypatch.setattr(ps, "_spawn", lambda h, port, t: spawned.append(port) or {"port": port})
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        monkeypatch.setattr(ps, "DEFAULT_PORT", taken)
        ps.start()
        assert spawned[-1] != taken and spawned[-1] > 0
        with pytest.raises(RuntimeError, match=f"port {taken} on 127.0.0.1 is in use"):
            ps.start(taken)
    monkeypatch.setattr(ps, "DEFAULT_PORT", ps.free_port())
    ps.start()
    assert spawned[-1] == ps.DEFAULT_PORT
    assert (home / "textclf-server.lock").exists()


def test_stop_never_signals_a_process_that_is_not_our_server(home):
    # the state file names a live process that is not a Prefect server (a reused pid)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], start_new_session=True)
    try:
        home.mkdir(parents=True)
        ps.state_file().write_text(json.dumps({"pid": other.pid, "api_url": "http://127.0.0.1:9/api"}))
        assert ps.running() is None  # not our server (and nothing answers there)
        assert ps.stop() is False  # nothing of ours was running: the stale record goes, nothing is signalled
        assert other.poll() is None and not ps.state_file().exists()
        ps.state_file().write_text("{}")  # a damaged record is no server either
        assert ps.running() is None and ps.stop() is False
    finally:
        os.killpg(other.pid, 9)
        other.wait()
    assert ps.stop() is False  # nothing recorded


def test_the_local_server_requires_its_secret_and_only_its_own_origin(home):
    """A real `prefect server start` through flows.prefect_server: the API refuses requests
    without the secret (a web page or another local user cannot start flow runs), CORS allows
    only the server's own origin, the secret file is private, and the flow commands' client
    (the settings local_server_settings gives) gets in."""
    import base64
    import stat
    import urllib.error
    import urllib.request
    import uuid

    state = ps.start()
    try:
        url = state["api_url"]
        assert state["auth"] and ps.running() == state
        mode = stat.S_IMODE(ps.auth_file().stat().st_mode)
        assert mode == 0o600, oct(mode)
        secret = ps.auth_file().read_text()

        def call(path, method="POST", headers=None, body=b"{}"):
            req = urllib.request.Request(f"{url}{path}", data=body if method == "POST" else None, method=method)
            req.add_header("Content-Type", "application/json")
            for k, v in (headers or {}).items():
                req.add_header(k, v)
            try:
                with ps._DIRECT.open(req, timeout=10) as r:
                    return r.status, dict(r.headers)
            except urllib.error.HTTPError as err:
                return err.code, dict(err.headers)

        assert call("/health", "GET")[0] == 200  # probes stay open
        # the attack: start a run of any deployment with chosen parameters, without the secret
        # (401: no secret; 403: no CSRF token, checked first for state-changing requests)
        assert call(f"/deployments/{uuid.uuid4()}/create_flow_run")[0] in (401, 403)
        assert call("/flows/filter")[0] in (401, 403)
        wrong = base64.b64encode(b"guess").decode()
        assert call("/csrf-token?client=x", "GET", {"Authorization": f"Basic {wrong}"})[0] == 401
        assert call("/csrf-token?client=x", "GET")[0] == 401
        right = base64.b64encode(secret.encode()).decode()
        assert call("/csrf-token?client=x", "GET", {"Authorization": f"Basic {right}"})[0] == 200
        # a browser preflight from another origin gets no CORS grant
        _, headers = call(
            "/flows/filter",
            "OPTIONS",
            {"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"},
        )
        assert headers.get("access-control-allow-origin") not in ("*", "http://evil.example")
        # the flow commands' own client is let in
        with ps.local_server_settings():
            from prefect.client.orchestration import get_client

            with get_client(sync_client=True) as client:
                assert client.read_flows() is not None
                assert os.environ["PREFECT_API_AUTH_STRING"] == secret
        assert "PREFECT_API_AUTH_STRING" not in os.environ
    finally:
        assert ps.stop() is True


def test_a_server_that_is_not_ours_on_the_port_is_not_taken(home, monkeypatch):
    """Something else answering /health on the recorded port is not our server (the listening
    socket must belong to the recorded process's group)."""
    import http.server
    import threading

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = http.server.HTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    other = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(30)", "prefect", "server", "start"], start_new_session=True
    )
    try:
        home.mkdir(parents=True)
        ps._new_secret()
        url = f"http://127.0.0.1:{srv.server_port}/api"
        ps.state_file().write_text(json.dumps({"pid": other.pid, "api_url": url, "auth": True}))
        assert ps.healthy(url)  # it answers /health ...
        assert ps.running() is None  # ... but its socket is not the recorded process's
    finally:
        srv.shutdown()
        os.killpg(other.pid, 9)
        other.wait()


def _group_gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not supervisor.group_alive(pid):
            return True
        time.sleep(0.2)
    return False


def _holders(target: str) -> set[int]:
    """The processes that have a file descriptor open on `target` (e.g. "pipe:[1234]")."""
    found = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) == target for fd in (proc / "fd").iterdir()):
                found.add(int(proc.name))
        except OSError:
            continue
    return found


def test_prefects_own_background_server_logs_to_pipes_nobody_reads(home):
    """Why flows.prefect_server supervises its own server: `prefect server start --background`
    (Prefect 3.9.1) gives the server's stdout and stderr to pipes that only the starting command
    could read, and that command has exited: whatever the server logs (why it failed to start, a
    database error) is lost. Our server logs to $PREFECT_HOME/textclf-server.log. If this test
    fails, Prefect keeps the background server's log: start it through `--background`."""
    home.mkdir(parents=True)
    port = ps.free_port()
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    cmd = [sys.executable, "-m", "prefect", "server", "start", "--background", "--host", "127.0.0.1"]
    started = subprocess.run([*cmd, "--port", str(port)], env=env, capture_output=True, text=True, timeout=120)
    assert started.returncode == 0, started.stdout + started.stderr
    pid = int((home / supervisor.PREFECT_PID_NAME).read_text())
    try:
        for fd in (1, 2):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            assert target.startswith("pipe:"), target  # not a log file
            # only the server itself holds the pipe: it has no reader left
            assert _holders(target) <= {pid} | {c.pid for c in psutil.Process(pid).children(recursive=True)}
    finally:
        subprocess.run([sys.executable, "-m", "prefect", "server", "stop"], env=env, capture_output=True, timeout=60)
        try:
            psutil.Process(pid).wait(20)  # it shares this process's group: never signal the group
        except psutil.NoSuchProcess:
            pass
        except psutil.TimeoutExpired:
            os.kill(pid, 9)


def test_no_server_outlives_its_home_and_prefects_stop_stops_ours(home, monkeypatch, tmp_path):
    """A server started in a home that is then deleted stops by itself, and the next start, in
    another home, gets the default port instead of starting a second server on a random one.
    Prefect's own `prefect server stop` stops our server (its pid file names our supervisor)."""
    import shutil

    port = ps.free_port()
    monkeypatch.setattr(ps, "DEFAULT_PORT", port)
    first = ps.start()
    assert first["api_url"] == f"http://127.0.0.1:{port}/api"
    assert int((home / supervisor.PREFECT_PID_NAME).read_text()) == first["pid"]
    shutil.rmtree(home)  # a temporary PREFECT_HOME, or a deleted clone's
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "second"))
    second = ps.start()
    try:
        assert _group_gone(first["pid"], 30), "the server outlived its PREFECT_HOME"
        assert second["api_url"] == f"http://127.0.0.1:{port}/api"  # the default port, not a random one
        assert ps.running() == second
        stopped = subprocess.run(
            [sys.executable, "-m", "prefect", "server", "stop"], capture_output=True, text=True, timeout=60
        )
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert _group_gone(second["pid"], 30), "`prefect server stop` did not stop it"
        assert ps.running() is None
    finally:
        ps.stop()


def test_a_relative_prefect_home_is_made_absolute(home, monkeypatch, tmp_path):
    """The supervisor records its home for later starts run from other directories."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PREFECT_HOME", "rel/home")
    assert ps.prefect_home() == tmp_path / "rel" / "home"


def test_a_supervisor_for_another_home_is_not_ours(home, tmp_path):
    """A pid in the state file that now runs some checkout's supervisor for another home (a
    reused pid) is not stopped: the supervisor must watch this home."""
    fake = tmp_path / "other" / "flows" / "supervisor.py"
    fake.parent.mkdir(parents=True)
    fake.write_text("import time\ntime.sleep(30)\n")
    for watched, ours in ((tmp_path / "elsewhere", False), (ps.prefect_home(), True)):
        env = {**os.environ, supervisor.HOME_ENV: str(watched)}
        proc = subprocess.Popen([sys.executable, str(fake), "--port", "1"], env=env, start_new_session=True)
        try:
            time.sleep(0.3)
            assert ps._is_our_server(proc.pid) is ours
        finally:
            os.killpg(proc.pid, 9)
            proc.wait()
