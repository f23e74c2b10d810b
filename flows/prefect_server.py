"""A long-lived local Prefect server that the flows' command lines start once and reuse.

Without a server, every Prefect run starts Prefect's temporary server and stops it at the end
(about 15 s for a trivial flow on 2 cores, every run). So when PREFECT_API_URL is not set, the flows' command lines
(`flows.pipeline`, `flows.incoming`, `flows.serve`) use the local server this module started, and
start it first if none answers: on 127.0.0.1:4200 (or a free port if that one is taken), in the
background, logging to $PREFECT_HOME/textclf-server.log, kept for the next runs. They say so on
stderr. An explicit PREFECT_API_URL always wins; TEXTCLF_PREFECT_SERVER=temporary keeps Prefect's
per-run temporary server instead (nothing is left running).

    python -m flows.prefect_server start      # the same server, started by hand
    python -m flows.prefect_server status
    python -m flows.prefect_server stop       # or Prefect's own `prefect server stop`

Why not `prefect server start --background`: in Prefect 3.9.1 it gives the server's stdout and
stderr to pipes that only the starting command could read, and that command has exited, so
nothing the server logs (why it failed to start) is kept (tests/textclf/test_prefect_server.py
checks it); and the server stays in the starting command's process group, so a Ctrl-C on one
flow command would stop the server every flow uses. So the server runs in the foreground under a
small supervisor of ours (`flows/supervisor.py`), in a session of its own, logging to a file.
The supervisor is what Prefect's own tools see: its pid is in Prefect's
`$PREFECT_HOME/server.pid`, so `prefect server stop` stops it and `prefect server start
--background` does not start a second server beside it. It also stops the server when its
PREFECT_HOME is deleted (a temporary home, a removed clone): a later start then finds the
port free instead of starting a second server on a random port.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import secrets
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager, nullcontext
from pathlib import Path

from flows import supervisor

DEFAULT_PORT = 4200
STATE_NAME = "textclf-server.json"
MODE_ENV = "TEXTCLF_PREFECT_SERVER"
MODES = ("auto", "temporary")


def prefect_home() -> Path:
    """PREFECT_HOME, absolute (a relative one would name another folder from another directory)."""
    return Path(os.environ.get("PREFECT_HOME", Path.home() / ".prefect")).expanduser().absolute()


def state_file() -> Path:
    return prefect_home() / STATE_NAME


def auth_file() -> Path:
    return prefect_home() / supervisor.AUTH_NAME


def _new_secret() -> str:
    """A fresh API secret in $PREFECT_HOME/textclf-server.auth, readable by this user only
    (created 0600 with O_EXCL|O_NOFOLLOW after the old file is removed: never written through a
    link, never widened by a umask)."""
    path = auth_file()
    secret = secrets.token_urlsafe(32)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(secret)
    return secret


def _secret() -> str | None:
    """The local server's API secret, if the file is ours and private."""
    path = auth_file()
    try:
        st = path.lstat()
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
            return None
        return path.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never via a proxy


def healthy(url: str, timeout: float = 2.0) -> bool:
    if not isinstance(url, str) or not url.startswith("http://127.0.0.1:"):
        return False
    try:
        with _DIRECT.open(f"{url}/health", timeout=timeout) as r:
            return r.status == 200
    except Exception:  # noqa: BLE001 - refused, timed out, not HTTP: not (yet) our server
        return False


def _state() -> dict | None:
    try:
        state = json.loads(state_file().read_text(encoding="utf-8"))
        return state if isinstance(state, dict) and isinstance(state.get("pid"), int) else None
    except (OSError, ValueError):
        return None


def running() -> dict | None:
    """The server this module started, if its process is still ours, it answers on a socket its
    own process group listens on, and it requires our secret. One started by an older textclf
    without a secret is stopped (it left the API open), so the next start replaces it."""
    state = _state()
    if state is None or not _is_our_server(state["pid"]):
        return None
    if not state.get("auth") or _secret() is None:
        print("prefect_server: stopping the local Prefect server that runs without an API secret", file=sys.stderr)
        stop()
        return None
    url = state.get("api_url", "")
    return state if healthy(url) and supervisor.listens(state["pid"], _port(url)) else None


def _port(url: str) -> int:
    try:
        return int(url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
    except (IndexError, ValueError):
        return -1


def server_mode() -> str:
    mode = os.environ.get(MODE_ENV, "auto").strip().lower() or "auto"
    if mode not in MODES:
        raise ValueError(f"{MODE_ENV}={mode!r}: expected one of {', '.join(MODES)}")
    return mode


def local_server_settings():
    """A context for a flow command line: the local server as the API (started first if none
    answers), unless PREFECT_API_URL is set or TEXTCLF_PREFECT_SERVER=temporary; and no
    telemetry from any server we start (no network at run time)."""

    from prefect.settings import PREFECT_API_URL

    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if PREFECT_API_URL.value():
        return nullcontext()
    try:
        mode = server_mode()
    except ValueError as err:
        print(f"prefect_server: {err}; using Prefect's temporary server", file=sys.stderr)
        return nullcontext()
    if mode == "temporary":
        return nullcontext()
    state = running()
    if state is None:
        try:
            state = start()
        except RuntimeError as err:
            print(f"prefect_server: {err}; using Prefect's temporary server for this run", file=sys.stderr)
            return nullcontext()
        print(
            f"started a local Prefect server at {state['api_url']} (pid {state['pid']}, log {state['log']}); "
            f"it stays up for the next runs: python -m flows.prefect_server stop stops it, "
            f"{MODE_ENV}=temporary runs without it",
            file=sys.stderr,
        )
    else:
        print(
            f"using the Prefect server at {state['api_url']} (python -m flows.prefect_server stop to stop it)",
            file=sys.stderr,
        )
    return _api_url_settings(state["api_url"], _secret())


@contextmanager
def _api_url_settings(api_url: str, auth: str | None = None):
    """PREFECT_API_URL (and the local server's secret, PREFECT_API_AUTH_STRING) for this command
    line's run: in Prefect's settings context and in the environment, because Prefect's service
    threads (events, logs) that run without the caller's context read the environment, and would
    otherwise start a temporary server of their own."""
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    values = {"PREFECT_API_URL": api_url, **({"PREFECT_API_AUTH_STRING": auth} if auth else {})}
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    updates = {PREFECT_API_URL: api_url, **({PREFECT_API_AUTH_STRING: auth} if auth else {})}
    try:
        with temporary_settings(updates=updates):
            yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def port_taken(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(port: int | None = None, timeout_s: float = 120.0) -> dict:
    """Start the local server (or return the one that answers). `port=None`: DEFAULT_PORT, or a
    free port if something else listens there; an explicit port that is taken is an error.
    One start at a time per PREFECT_HOME (a file lock), so two flows started together share one."""
    home = prefect_home()
    home.mkdir(parents=True, exist_ok=True)
    with open(home / "textclf-server.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        state = _state()
        if state is not None and _is_our_server(state["pid"]) and state.get("auth") and _secret():
            # ours and alive (maybe still starting, or slow to answer on a loaded machine): wait
            # for it rather than start a second one beside it
            if _answers(state.get("api_url", ""), lambda: _is_our_server(state["pid"]), timeout_s, state["pid"]):
                return state
            if _is_our_server(state["pid"]):
                raise RuntimeError(f"the Prefect server (pid {state['pid']}) does not answer; see {state.get('log')}")
        if port is None:
            taken = port_taken(DEFAULT_PORT) and not _wait_for_orphan(DEFAULT_PORT)
            port = free_port() if taken else DEFAULT_PORT
        elif port_taken(port):
            raise RuntimeError(f"port {port} on 127.0.0.1 is in use by another program")
        return _spawn(home, port, timeout_s)


def _answers(url: str, alive, timeout_s: float, pid: int | None = None) -> bool:
    """Wait until the server at `url` answers (True) — on a socket that the process `pid` or its
    descendants listen on, when given — or `alive()` says its process is gone or `timeout_s`
    passes (False)."""
    deadline = time.monotonic() + timeout_s
    while not (healthy(url) and (pid is None or supervisor.listens(pid, _port(url)))):
        if not alive() or time.monotonic() > deadline:
            return False
        time.sleep(0.25)
    return True


def _spawn(home: Path, port: int, timeout_s: float) -> dict:
    log_path = home / "textclf-server.log"
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    # concurrency leases on disk ($PREFECT_HOME/concurrency_leases), not in memory: a slot held
    # when the server stops is still known, and expires, after it starts again
    env.setdefault("PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE", "prefect.server.concurrency.lease_storage.filesystem")
    # a run waiting for the repository's slot retries as the server's 423 Retry-After says: the
    # slot's average occupancy, capped at this (Prefect's default, 30 s, would let a waiting run
    # take a freed slot up to ~39 s late)
    env.setdefault("PREFECT_SERVER_CONCURRENCY_MAXIMUM_CONCURRENCY_SLOT_WAIT_SECONDS", "1")
    env.pop("PREFECT_API_URL", None)
    # the API needs a secret (the flow commands read it from the 0600 file); browsers may call it
    # only from the server's own origin, and with a CSRF token
    env["PREFECT_SERVER_API_AUTH_STRING"] = _new_secret()
    env["PREFECT_SERVER_API_CORS_ALLOWED_ORIGINS"] = f"http://127.0.0.1:{port}"
    env["PREFECT_SERVER_API_CSRF_PROTECTION_ENABLED"] = "true"
    env[supervisor.HOME_ENV] = str(home)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            supervisor.command(port),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}/api"
    if not _answers(url, lambda: proc.poll() is None, timeout_s, proc.pid):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(10)
        raise RuntimeError(f"the Prefect server did not start (see {log_path})")
    state = {"pid": proc.pid, "api_url": url, "log": str(log_path), "auth": True}
    state_file().write_text(json.dumps(state), encoding="utf-8")
    supervisor.claim_prefect_pid_file(home, proc.pid)
    return state


def _wait_for_orphan(port: int, timeout_s: float = 30.0) -> bool:
    """If an orphaned server of ours holds `port`, stop it and wait until the port is free."""
    pid = supervisor.orphan_on(port)
    if pid is None:
        return False
    print(f"prefect_server: the server on port {port} (pid {pid}) lost its PREFECT_HOME; stopping it", file=sys.stderr)
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + timeout_s
    while port_taken(port) and time.monotonic() < deadline:
        time.sleep(0.25)
    return not port_taken(port)


def _is_our_server(pid: int) -> bool:
    """The pid still runs our supervisor, or `prefect server start` as an older textclf ran it
    (not a process that reused the number)."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    parts = [c.decode(errors="replace") for c in cmd]
    if supervisor.is_supervisor(parts):  # and the one for this home (a reused pid runs another)
        return supervisor.watched_home(pid) == str(prefect_home())
    return b"prefect" in cmd and b"server" in cmd and b"start" in cmd


def stop(timeout_s: float = 20.0) -> bool:
    """Stop the server this module started, its whole process group, and wait until it is gone.
    False if none was running (a stale state file is removed)."""
    home = prefect_home()
    if not home.is_dir():
        return False
    with open(home / "textclf-server.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        state = _state()
        if state is None:
            return False
        pid = state["pid"]
        try:
            ours = _is_our_server(pid) and os.getpgid(pid) == pid
        except ProcessLookupError:
            ours = False
        if ours:
            supervisor.stop_group(pid, timeout_s)
            supervisor.release_prefect_pid_file(home, pid)
        state_file().unlink(missing_ok=True)
        return ours


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m flows.prefect_server", description=__doc__.split("\n\n")[0])
    p.add_argument("command", choices=("start", "stop", "status"), help="start, stop or show the local server")
    p.add_argument(
        "--port", type=int, default=None, help=f"port on 127.0.0.1 (default {DEFAULT_PORT}, or a free one if taken)"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "start":
        try:
            state = start(args.port)
        except RuntimeError as err:
            print(f"prefect_server: {err}", file=sys.stderr)
            return 1
        print(f"Prefect server at {state['api_url']} (pid {state['pid']}; UI {state['api_url'].removesuffix('/api')})")
    elif args.command == "stop":
        print("stopped" if stop() else "no server started by textclf is running")
    else:
        state = running()
        print(f"running at {state['api_url']} (pid {state['pid']})" if state else "not running")
        return 0 if state else 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
