"""A long-lived local Prefect server that the flows' command lines reuse.

Without PREFECT_API_URL every `python -m flows.pipeline` starts Prefect's temporary server and
stops it at the end (about 8 s on 2 cores, every run). Start one server once instead:

    python -m flows.prefect_server start      # 127.0.0.1:4200, in the background, logs in $PREFECT_HOME
    python -m flows.prefect_server status
    python -m flows.prefect_server stop

While it runs, the flows' command lines (`flows.pipeline`, `flows.incoming`, `flows.serve`) use it
when PREFECT_API_URL is not set, and say so. An explicit PREFECT_API_URL always wins.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from contextlib import nullcontext
from pathlib import Path

DEFAULT_PORT = 4200
STATE_NAME = "textclf-server.json"


def prefect_home() -> Path:
    return Path(os.environ.get("PREFECT_HOME", Path.home() / ".prefect")).expanduser()


def state_file() -> Path:
    return prefect_home() / STATE_NAME


def healthy(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as r:  # noqa: S310 - loopback only
            return r.status == 200
    except OSError:
        return False


def running() -> dict | None:
    """The server this module started, if it still answers."""
    try:
        state = json.loads(state_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) and healthy(state.get("api_url", "")) else None


def local_server_settings(log=None):
    """A context for a flow command line: the running local server as the API (unless
    PREFECT_API_URL is set), and no telemetry from a temporary server (no network at run time)."""

    from prefect.settings import PREFECT_API_URL, temporary_settings

    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if PREFECT_API_URL.value():
        return nullcontext()
    state = running()
    if state is None:
        return nullcontext()
    print(
        f"using the Prefect server at {state['api_url']} (python -m flows.prefect_server stop to stop it)",
        file=sys.stderr,
    )
    return temporary_settings(updates={PREFECT_API_URL: state["api_url"]})


def start(port: int = DEFAULT_PORT, timeout_s: float = 120.0) -> dict:
    state = running()
    if state is not None:
        return state
    home = prefect_home()
    home.mkdir(parents=True, exist_ok=True)
    log_path = home / "textclf-server.log"
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "prefect",
                "server",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + timeout_s
    while not healthy(url):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"the Prefect server did not start (see {log_path})")
        time.sleep(0.5)
    state = {"pid": proc.pid, "api_url": url, "log": str(log_path)}
    state_file().write_text(json.dumps(state), encoding="utf-8")
    return state


def stop() -> bool:
    try:
        state = json.loads(state_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    try:
        os.killpg(int(state["pid"]), signal.SIGTERM)
    except (ProcessLookupError, KeyError, ValueError):
        pass
    state_file().unlink(missing_ok=True)
    return True


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m flows.prefect_server", description=__doc__.split("\n\n")[0])
    p.add_argument("command", choices=("start", "stop", "status"), help="start, stop or show the local server")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port on 127.0.0.1 (default {DEFAULT_PORT})")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "start":
        try:
            state = start(args.port)
        except RuntimeError as err:
            print(f"prefect_server: {err}", file=sys.stderr)
            return 1
        print(f"Prefect server at {state['api_url']} (pid {state['pid']}; UI http://127.0.0.1:{args.port})")
    elif args.command == "stop":
        print("stopped" if stop() else "no server started by textclf")
    else:
        state = running()
        print(f"running at {state['api_url']} (pid {state['pid']})" if state else "not running")
        return 0 if state else 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
