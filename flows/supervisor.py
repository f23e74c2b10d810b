"""The process that keeps the local Prefect server (flows.prefect_server starts it): `prefect
server start` in the foreground as its child, in a session of their own, logging to the file
the starter gave it, stopped when SIGTERM reaches the supervisor or when the PREFECT_HOME it was
started in is gone.

The supervisor is what Prefect's own tools see: its pid is in Prefect's `$PREFECT_HOME/server.pid`
(unless that names a live server already), so `prefect server stop` stops it. It is started as
a script (`python flows/supervisor.py --port N`, from any working directory); as a process it
imports only the standard library (psutil only in the functions flows.prefect_server calls).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

PREFECT_PID_NAME = "server.pid"  # Prefect's own record of its background server (prefect.cli._server_utils)
AUTH_NAME = "textclf-server.auth"  # the API secret the server was started with
HOME_ENV = "TEXTCLF_PREFECT_SERVER_HOME"  # set on the supervisor: the home it watches
WATCH_S = 2.0  # how often the supervisor looks for its home
SCRIPT = Path(__file__).resolve()


def command(port: int) -> list[str]:
    """How flows.prefect_server starts the supervisor."""
    return [sys.executable, str(SCRIPT), "--port", str(port)]


def is_supervisor(cmdline: list[str]) -> bool:
    """`python <a checkout>/flows/supervisor.py ...` (any checkout's: they share a PREFECT_HOME)."""
    return any(Path(part).name == SCRIPT.name and Path(part).parent.name == "flows" for part in cmdline[1:2])


def home_alive(home: Path) -> bool:
    """The home still holds what the server was started with (its secret)."""
    return home.is_dir() and (home / AUTH_NAME).is_file()


def claim_prefect_pid_file(home: Path, pid: int) -> None:
    """Prefect's record of its background server names `pid`, unless it names a live process
    already (a server the user started with `prefect server start --background`)."""
    path = home / PREFECT_PID_NAME
    try:
        other = int(path.read_text(encoding="utf-8").strip())
        os.kill(other, 0)
        return  # a live process: Prefect's own background server
    except PermissionError:
        return  # alive too, another user's
    except ValueError:
        return  # empty or half written: Prefect is starting one right now
    except (FileNotFoundError, ProcessLookupError):
        pass
    except OSError:
        return
    path.unlink(missing_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except OSError:
        return  # another start claimed it meanwhile
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(str(pid))


def release_prefect_pid_file(home: Path, pid: int) -> None:
    path = home / PREFECT_PID_NAME
    try:
        if int(path.read_text(encoding="utf-8").strip()) == pid:
            path.unlink()
    except (OSError, ValueError):
        pass


def group_alive(pgid: int) -> bool:
    """Whether a process of the group still runs (the leader, if this process started it and it
    has exited, is reaped first: a zombie would count as alive)."""
    try:
        os.waitpid(pgid, os.WNOHANG)
    except ChildProcessError:
        pass  # not our child: init reaps it
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def stop_group(pid: int, timeout_s: float) -> None:
    """SIGTERM to the supervisor (it passes it on to the server), then SIGKILL to the whole
    group if it is not gone in `timeout_s`."""
    for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig) if sig == signal.SIGTERM else os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_s
        while group_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not group_alive(pid):
            return


# what flows.prefect_server asks about a running supervisor (psutil: imported only for these)


def listens(pid: int, port: int) -> bool:
    """Whether the process `pid` or one of its descendants listens on `port`: a server counts as
    ours only then (another program answering /health on that port is not taken for it)."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return False
    for proc in procs:
        try:
            conns = (getattr(proc, "net_connections", None) or proc.connections)(kind="tcp")
        except psutil.Error:
            continue
        if any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port for c in conns):
            return True
    return False


def orphan_on(port: int) -> int | None:
    """A supervisor of ours whose home is gone and whose server still listens on `port` (it is
    stopping itself, or was started before supervisors watched their home)."""
    import psutil

    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if not is_supervisor(proc.info["cmdline"] or []):
                continue
            home = proc.environ().get(HOME_ENV)
        except psutil.Error:
            continue
        gone = home and Path(home).is_absolute() and not home_alive(Path(home))
        if gone and listens(proc.info["pid"], port):
            return proc.info["pid"]
    return None


def watched_home(pid: int) -> str | None:
    """The home a supervisor watches, from its environment (readable for our own processes)."""
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    key = HOME_ENV.encode() + b"="
    return next((e[len(key) :].decode(errors="replace") for e in env if e.startswith(key)), None)


def supervise(port: int, home: Path) -> int:
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        stdin=subprocess.DEVNULL,
    )
    signal.signal(signal.SIGTERM, lambda *_: server.terminate())
    while server.poll() is None:
        if not home_alive(home):
            print(f"supervisor: {home} is gone; stopping the Prefect server it started", file=sys.stderr, flush=True)
            server.terminate()
            try:
                server.wait(20)
            except subprocess.TimeoutExpired:
                server.kill()
            break
        time.sleep(WATCH_S)
    code = server.wait()
    release_prefect_pid_file(home, os.getpid())
    return 0 if code in (0, -signal.SIGTERM) else code  # stopped as asked is a clean exit


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="flows/supervisor.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, required=True, help="the server's port on 127.0.0.1")
    args = p.parse_args(argv)
    home = Path(os.environ.get(HOME_ENV) or os.environ.get("PREFECT_HOME") or Path.home() / ".prefect")
    return supervise(args.port, home.expanduser())


if __name__ == "__main__":
    sys.exit(main())
