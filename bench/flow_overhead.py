"""What running the pipeline as a Prefect flow costs over plain `dvc repro`.

On a temp copy of the project (its params.yaml, so the embedded sample corpus by default):

1. build once with `dvc repro` (warm-up: caches, imports, page cache);
2. `dvc repro --force` vs `python -m flows.pipeline --force`, alternating, `--repeats` times;
3. a no-op: both again with everything current (the flow's figure includes Prefect start-up).

The flow runs as a user runs it: a fresh process, no PREFECT_API_URL (Prefect starts its
temporary local server), a PREFECT_HOME whose database was created by one untimed run.
`--api-url` times it against a running server instead.

    .venv/bin/python bench/flow_overhead.py                     # every stage
    .venv/bin/python bench/flow_overhead.py --target vocab      # the data half only

Targets (2 cores): flow / dvc repro <= 1.3 on the sample; a no-op flow run <= 20 s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROJECT = ["stages", "flows", "textclf", "dvc.yaml", "params.yaml", ".dvcignore", "pyproject.toml"]


def env(prefect_home: Path, api_url: str | None) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    e["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{e.get('PATH', '')}"
    e.update(DVC_NO_ANALYTICS="1", PREFECT_HOME=str(prefect_home), PREFECT_SERVER_ANALYTICS_ENABLED="false")
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
            shutil.copy2(src, dest / name)
    # data/raw is a dep of ingest even when ingest.source is the embedded sample; git does not
    # keep an empty folder, so a checkout may lack it
    (dest / "data" / "raw").mkdir(parents=True, exist_ok=True)
    for cmd in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"],
                [sys.executable, "-m", "dvc", "config", "core.analytics", "false"],
                # a first commit, as in a clone (DVCLive in the train stage needs one)
                ["git", "add", "-A"],
                ["git", "-c", "user.name=bench", "-c", "user.email=bench@example.invalid",
                 "commit", "-qm", "bench copy"]):
        subprocess.run(cmd, cwd=dest, env=e, check=True, capture_output=True, timeout=120)
    return dest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", help="a dvc.yaml stage (default: all stages)")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--api-url", help="time the flow against this running Prefect server")
    p.add_argument("--timeout", type=float, default=3600, help="per command, seconds")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="textclf-flow-bench-") as tmp:
        tmp = Path(tmp)
        e = env(tmp / "prefect-home", args.api_url)
        repo = copy_project(tmp / "repo", e)
        target = [args.target] if args.target else []
        dvc = [sys.executable, "-m", "dvc", "repro", *target]
        flow = [sys.executable, "-m", "flows.pipeline", *(["--target", args.target] if args.target else [])]

        print(f"repo copy: {repo} ({platform.machine()}, {os.cpu_count()} CPUs); target: {args.target or 'all'}")
        build = timed(dvc, repo, e, args.timeout)
        print(f"  warm-up build (dvc repro)      {build:7.1f} s")
        first = timed(flow, repo, e, args.timeout)  # creates the Prefect database; untimed below
        print(f"  first flow run (untimed)       {first:7.1f} s (no-op; with a new PREFECT_HOME: creates its database)")

        t_dvc, t_flow = [], []
        for _ in range(args.repeats):
            t_dvc.append(timed([*dvc, "--force"], repo, e, args.timeout))
            t_flow.append(timed([*flow, "--force"], repo, e, args.timeout))
        noop_dvc = timed(dvc, repo, e, args.timeout)
        noop_flow = timed(flow, repo, e, args.timeout)

    d, f = statistics.median(t_dvc), statistics.median(t_flow)
    print(f"  dvc repro --force              {d:7.1f} s")
    print(f"  flows.pipeline --force         {f:7.1f} s   ratio {f / d:.2f}x (target <= 1.3)")
    print(f"  no-op dvc repro                {noop_dvc:7.1f} s")
    print(f"  no-op flows.pipeline           {noop_flow:7.1f} s   (target <= 20 s, Prefect start-up included)")
    figures = {"target": args.target or "all", "cpus": os.cpu_count(), "api": args.api_url or "temporary",
               "dvc_repro_force_s": t_dvc, "flow_force_s": t_flow, "ratio": f / d,
               "noop_dvc_s": noop_dvc, "noop_flow_s": noop_flow, "first_flow_s": first}
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
