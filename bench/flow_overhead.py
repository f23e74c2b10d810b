"""What running the pipeline as a Prefect flow costs over plain `dvc repro`, on the user's path.

Two fresh copies of the project (its params.yaml: the sample corpus), built from scratch:

1. `dvc repro` in copy A;
2. `python -m flows.pipeline` in copy B, as a newcomer runs it: a fresh PREFECT_HOME and no
   server running (Prefect starts its temporary server, creates its database);
3. the no-op right after, both ways;
4. with a running local server (`python -m flows.prefect_server start`): the no-op flow, and a
   from-scratch flow run in a third copy;
5. Prefect's own set-up, reported apart: a trivial flow on a fresh PREFECT_HOME, then again.

    .venv/bin/python bench/flow_overhead.py                     # every stage
    .venv/bin/python bench/flow_overhead.py --target vocab      # the data half only

Targets (2 cores): one-off flow / dvc repro <= 1.3 on the sample; a no-op flow run <= 10 s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROJECT = [
    "stages",
    "flows",
    "textclf",
    "dvc.yaml",
    "params.yaml",
    ".dvcignore",
    "pyproject.toml",
    "data/sample",
    "data/stopwords.txt",
    "data/labels/corrections.csv",
]
TRIVIAL = (
    "from prefect import flow\n\n@flow\ndef trivial():\n    return 1\n\nif __name__ == '__main__':\n    trivial()\n"
)


def env(prefect_home: Path, api_url: str | None) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    e["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{e.get('PATH', '')}"
    e.update(
        DVC_NO_ANALYTICS="1",
        PREFECT_HOME=str(prefect_home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
    )
    if api_url:
        e["PREFECT_API_URL"] = api_url
    return e


def timed(cmd: list[str], cwd: Path, e: dict[str, str], timeout: float) -> float:
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=e, capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return seconds


def copy_project(dest: Path, e: dict[str, str]) -> Path:
    dest.mkdir(parents=True)
    for name in PROJECT:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif src.exists():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    for cmd in (
        ["git", "init", "-q"],
        [sys.executable, "-m", "dvc", "init", "-q"],
        [sys.executable, "-m", "dvc", "config", "core.analytics", "false"],
        # a first commit, as in a clone (DVCLive in the train stage needs one)
        ["git", "add", "-A"],
        [
            "git",
            "-c",
            "user.name=bench",
            "-c",
            "user.email=bench@example.invalid",
            "commit",
            "-qm",
            "bench copy",
        ],
    ):
        subprocess.run(cmd, cwd=dest, env=e, check=True, capture_output=True, timeout=120)
    return dest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", help="a dvc.yaml stage (default: all stages)")
    p.add_argument("--timeout", type=float, default=3600, help="per command, seconds")
    p.add_argument("--port", type=int, default=4299, help="port of the local server this benchmark starts")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="textclf-flow-bench-") as tmp:
        tmp = Path(tmp)
        fresh = env(tmp / "prefect-home", None)
        target = [args.target] if args.target else []
        dvc = [sys.executable, "-m", "dvc", "repro", *target]
        flow = [
            sys.executable,
            "-m",
            "flows.pipeline",
            *(["--target", args.target] if args.target else []),
        ]
        a, b = copy_project(tmp / "a", fresh), copy_project(tmp / "b", fresh)
        print(
            f"{platform.machine()}, {os.cpu_count()} CPUs; target: {args.target or 'all'}",
            flush=True,
        )
        f = {}
        f["dvc_repro_scratch_s"] = timed(dvc, a, fresh, args.timeout)
        print(
            f"  dvc repro, from scratch (copy A)                     {f['dvc_repro_scratch_s']:7.1f} s",
            flush=True,
        )
        f["flow_first_scratch_s"] = timed(flow, b, fresh, args.timeout)
        print(
            f"  flows.pipeline, from scratch, new PREFECT_HOME, no server (copy B) "
            f"{f['flow_first_scratch_s']:7.1f} s = {f['flow_first_scratch_s'] / f['dvc_repro_scratch_s']:.2f}x",
            flush=True,
        )
        f["noop_dvc_s"] = timed(dvc, a, fresh, args.timeout)
        f["noop_flow_temporary_s"] = timed(flow, b, fresh, args.timeout)
        print(
            f"  no-op: dvc repro {f['noop_dvc_s']:.1f} s; flows.pipeline (temporary server) "
            f"{f['noop_flow_temporary_s']:.1f} s",
            flush=True,
        )
        server = subprocess.run(
            [sys.executable, "-m", "flows.prefect_server", "start", "--port", str(args.port)],
            cwd=ROOT,
            env=fresh,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if server.returncode != 0:
            raise SystemExit(f"could not start the local server: {server.stderr}")
        try:
            f["noop_flow_server_s"] = timed(flow, b, fresh, args.timeout)
            c = copy_project(tmp / "c", fresh)
            f["flow_server_scratch_s"] = timed(flow, c, fresh, args.timeout)
        finally:
            subprocess.run(
                [sys.executable, "-m", "flows.prefect_server", "stop"],
                cwd=ROOT,
                env=fresh,
                capture_output=True,
                timeout=60,
            )
        print(
            f"  with a running local server: no-op flow {f['noop_flow_server_s']:.1f} s; from scratch "
            f"{f['flow_server_scratch_s']:.1f} s = {f['flow_server_scratch_s'] / f['dvc_repro_scratch_s']:.2f}x "
            "dvc repro",
            flush=True,
        )
        (tmp / "trivial.py").write_text(TRIVIAL)
        setup = env(tmp / "prefect-home-2", None)
        f["prefect_trivial_first_s"] = timed([sys.executable, str(tmp / "trivial.py")], tmp, setup, args.timeout)
        f["prefect_trivial_again_s"] = timed([sys.executable, str(tmp / "trivial.py")], tmp, setup, args.timeout)
        print(
            f"  Prefect's own set-up: a trivial flow {f['prefect_trivial_first_s']:.1f} s on a new PREFECT_HOME, "
            f"{f['prefect_trivial_again_s']:.1f} s after that (its temporary server starts each time)",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps({"target": args.target or "all", "cpus": os.cpu_count(), **f}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
