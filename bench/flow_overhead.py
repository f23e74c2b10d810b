"""What running the pipeline as a Prefect flow costs over plain `dvc repro`, on the user's path.

Two fresh copies of the project (its params.yaml: the sample corpus), built from scratch:

1. `dvc repro` in copy A;
2. `python -m flows.pipeline` in copy B, as a newcomer runs it: a fresh PREFECT_HOME and no
   server running, so the command starts the local Prefect server (flows.prefect_server) first
   and leaves it up;
3. the no-op right after, both ways (the flow reusing that server);
4. the flow from scratch in a third copy, the server already up: the one-off figure;
5. Prefect's own set-up, reported apart: `python -m flows.prefect_server start` on a new
   PREFECT_HOME; a trivial flow with Prefect's per-run temporary server on a new PREFECT_HOME,
   then again; and the no-op flow with TEXTCLF_PREFECT_SERVER=temporary.

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
sys.path.insert(0, str(ROOT))

from textclf.paths import copy_project  # noqa: E402

TRIVIAL = (
    "from prefect import flow\n\n@flow\ndef trivial():\n    return 1\n\nif __name__ == '__main__':\n    trivial()\n"
)


def env(prefect_home: Path, api_url: str | None) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_") and k != "TEXTCLF_PREFECT_SERVER"}
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


def committed_copy(dest: Path, e: dict[str, str], source: Path | None = None) -> Path:
    """A committed copy of the project; with `source`, that corpus (copied to data/raw/) as ingest.source."""
    copy_project(ROOT, dest, extra=() if source else ("data/sample",))
    if source:
        import yaml

        raw = dest / "data" / "raw" / source.name
        raw.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, raw)
        params = yaml.safe_load((dest / "params.yaml").read_text(encoding="utf-8"))
        params["ingest"]["source"] = f"data/raw/{source.name}"
        (dest / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=False), encoding="utf-8")
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
    p.add_argument("--json", type=Path, help="also write the figures here")
    p.add_argument(
        "--source", type=Path, help="another corpus (a text folder or file) as ingest.source (default: the sample)"
    )
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
        a, b = committed_copy(tmp / "a", fresh, args.source), committed_copy(tmp / "b", fresh, args.source)
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
        stop = [sys.executable, "-m", "flows.prefect_server", "stop"]
        try:
            f["flow_first_scratch_s"] = timed(flow, b, fresh, args.timeout)
            print(
                f"  flows.pipeline, from scratch, new PREFECT_HOME, no server: starts one (copy B) "
                f"{f['flow_first_scratch_s']:7.1f} s = {f['flow_first_scratch_s'] / f['dvc_repro_scratch_s']:.2f}x",
                flush=True,
            )
            f["noop_dvc_s"] = timed(dvc, a, fresh, args.timeout)
            f["noop_flow_server_s"] = timed(flow, b, fresh, args.timeout)
            temporary = {**fresh, "TEXTCLF_PREFECT_SERVER": "temporary"}
            f["noop_flow_temporary_s"] = timed(flow, b, temporary, args.timeout)
            print(
                f"  no-op: dvc repro {f['noop_dvc_s']:.1f} s; flows.pipeline {f['noop_flow_server_s']:.1f} s "
                f"(TEXTCLF_PREFECT_SERVER=temporary: {f['noop_flow_temporary_s']:.1f} s)",
                flush=True,
            )
            c = committed_copy(tmp / "c", fresh, args.source)
            f["flow_server_scratch_s"] = timed(flow, c, fresh, args.timeout)
            print(
                f"  flows.pipeline, from scratch, the server up (copy C)  {f['flow_server_scratch_s']:7.1f} s = "
                f"{f['flow_server_scratch_s'] / f['dvc_repro_scratch_s']:.2f}x dvc repro",
                flush=True,
            )
        finally:
            subprocess.run(stop, cwd=ROOT, env=fresh, capture_output=True, timeout=60)
        setup = env(tmp / "prefect-home-2", None)
        f["prefect_server_start_new_home_s"] = timed(
            [sys.executable, "-m", "flows.prefect_server", "start"], ROOT, setup, args.timeout
        )
        subprocess.run(stop, cwd=ROOT, env=setup, capture_output=True, timeout=60)
        (tmp / "trivial.py").write_text(TRIVIAL)
        setup = env(tmp / "prefect-home-3", None)
        f["prefect_trivial_first_s"] = timed([sys.executable, str(tmp / "trivial.py")], tmp, setup, args.timeout)
        f["prefect_trivial_again_s"] = timed([sys.executable, str(tmp / "trivial.py")], tmp, setup, args.timeout)
        print(
            f"  Prefect's own set-up: the local server starts in {f['prefect_server_start_new_home_s']:.1f} s on a "
            f"new PREFECT_HOME; a trivial flow with its temporary server {f['prefect_trivial_first_s']:.1f} s on a "
            f"new PREFECT_HOME, {f['prefect_trivial_again_s']:.1f} s after that",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps({"target": args.target or "all", "cpus": os.cpu_count(), **f}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
