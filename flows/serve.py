"""Serve the pipeline (and new-data) flows on schedules, from one long-running process.

    python -m flows.serve                                  # schedules from prefect.yaml; without
                                                           # PREFECT_API_URL it starts (or reuses) the
                                                           # local server, flows/prefect_server.py
    python -m flows.serve --cron "0 */6 * * *"             # retrain every 6 hours instead
    python -m flows.serve --interval 3600 --no-incoming    # hourly, no new-data polling

The defaults (nightly pipeline, new data polled every 10 minutes) are the `schedules` of the two
deployments in prefect.yaml, the same file `prefect deploy` reads, so there is one place to
change them. Both deployments have a concurrency limit of 1 (further runs wait in the queue), and
every run also takes the repository lock (flows/repolock.py), so a
pipeline run and a new-data run never touch the workspace at the same time either. Stop with
Ctrl-C: schedules are paused.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import timedelta
from pathlib import Path

import yaml

from flows.incoming.flow import incoming
from flows.pipeline import PINNED_REPO_ENV, pipeline
from flows.prefect_server import local_server_settings

CONFIG = Path(__file__).resolve().parents[1] / "prefect.yaml"
ENTRYPOINTS = {"pipeline": "flows/pipeline.py:pipeline", "incoming": "flows/incoming/flow.py:incoming"}
FALLBACK = {
    "pipeline": {"name": "scheduled", "schedules": [{"cron": "0 3 * * *"}]},
    "incoming": {"name": "new-data", "schedules": [{"interval": 600}]},
}


def deployment_config(kind: str, config: Path = CONFIG) -> dict:
    """The prefect.yaml deployment whose entrypoint is this flow (FALLBACK without the file)."""
    if not config.exists():
        return dict(FALLBACK[kind])
    data = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
    for dep in data.get("deployments") or []:
        if dep.get("entrypoint") == ENTRYPOINTS[kind]:
            return dep
    raise SystemExit(f"{config}: no deployment with entrypoint {ENTRYPOINTS[kind]}")


def schedule(dep: dict, cron: str | None = None, interval: float | None = None):
    """The deployment's schedule: the command line wins over the config's first schedule."""
    from prefect.schedules import Cron, Interval

    if cron:
        return Cron(cron)
    if interval:
        return Interval(timedelta(seconds=interval))
    sched = (dep.get("schedules") or [{}])[0]
    if sched.get("cron"):
        return Cron(sched["cron"], timezone=sched.get("timezone"))
    if sched.get("interval"):
        return Interval(timedelta(seconds=float(sched["interval"])), timezone=sched.get("timezone"))
    raise SystemExit(f"deployment {dep.get('name')!r}: give --cron or --interval (prefect.yaml has no schedule)")


def _deployment(flow_fn, name, default_name, args, repo, limit, cron, interval, overrides=None):
    """One flow's deployment: prefect.yaml's entry `name`, with the command line's schedule."""
    dep = deployment_config(name, args.config)
    return flow_fn.to_deployment(
        name=dep.get("name", default_name),
        parameters={**(dep.get("parameters") or {}), "repo": repo, **(overrides or {})},
        concurrency_limit=limit,
        tags=dep.get("tags") or ["textclf"],
        description=dep.get("description"),
        schedules=[schedule(dep, cron, interval)],
    )


def build_deployments(args: argparse.Namespace) -> list:
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy

    # one run at a time per deployment; a run due while another runs waits in the queue
    limit = ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE)
    repo = str(Path(args.repo).resolve())
    target = {"target": args.target} if args.target else {}
    deployments = [_deployment(pipeline, "pipeline", "scheduled", args, repo, limit, args.cron, args.interval, target)]
    if not args.no_incoming:
        deployments.append(
            _deployment(incoming, "incoming", "new-data", args, repo, limit, args.incoming_cron, args.incoming_interval)
        )
    return deployments


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m flows.serve", description=__doc__.split("\n\n")[0])
    when = p.add_mutually_exclusive_group()
    when.add_argument("--cron", help="pipeline schedule, a cron expression (default: prefect.yaml)")
    when.add_argument("--interval", type=float, help="pipeline schedule, every N seconds")
    new = p.add_mutually_exclusive_group()
    new.add_argument("--incoming-cron", help="new-data schedule, a cron expression")
    new.add_argument("--incoming-interval", type=float, help="new-data schedule, every N seconds")
    new.add_argument("--no-incoming", action="store_true", help="serve the pipeline only")
    p.add_argument("--repo", default=".", help="project root the flows run in (default: .)")
    p.add_argument("--target", help="pipeline target stage (default: all)")
    p.add_argument("--config", type=Path, default=CONFIG, help="prefect.yaml with the defaults")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.interval is not None and args.interval <= 0:
        raise SystemExit("--interval must be > 0 seconds")
    from prefect import serve

    # the runs this process executes stay in this repository, whatever their `repo` parameter says
    os.environ[PINNED_REPO_ENV] = str(Path(args.repo).resolve())
    with local_server_settings():
        serve(*build_deployments(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
