"""flows.prefect_server: which Prefect API a flow command line uses, and the local server's
start/stop rules. The real start (a `prefect server start` that flows.serve launches and
`flows.prefect_server stop` ends) is exercised in tests/flows/test_serve.py."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows import prefect_server as ps


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
