"""The DVC pipeline as a Prefect flow: one task per dvc.yaml stage, in DVC's order.

    python -m flows.pipeline                                 # every stage (skips what is current)
    python -m flows.pipeline --target vocab --force          # vocab and what it depends on
    python -m flows.pipeline -S train.lr=0.05 -S train.epochs=3   # like dvc exp run --set-param
    python -m flows.pipeline --dask-address tcp://scheduler:8786  # tasks on a Dask cluster

Each task is `dvc repro --single-item <stage>`, so dvc.lock and the cache are updated and
unchanged stages are skipped exactly as `dvc repro` would. Transient failures are retried with
exponential backoff; a broken data contract or invalid params fail the run at once, with the
validation summary in the log. The whole run holds the repository lock (flows/dvcops.py).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from flows import dvcops, notify, repolock, report
from flows.prefect_server import local_server_settings
from flows.shell import run_logger
from textclf.errors import INTERNAL, ContractError, ParamsError, RunError, TextclfError, is_retryable

# Set by `python -m flows.serve` for the runs it executes: a served deployment runs in the
# repository it was served for, whatever `repo` a run's parameters name (any folder holding a
# dvc.yaml would otherwise have its stage commands run).
PINNED_REPO_ENV = "TEXTCLF_PINNED_REPO"
# A deployment setting, never a run parameter: a scheduler speaks pickle to whoever connects.
DASK_ENV = "DASK_SCHEDULER_ADDRESS"


def resolve_repo(repo: str | Path) -> Path:
    root = Path(repo).expanduser().resolve()
    pinned = os.environ.get(PINNED_REPO_ENV)
    if pinned and root != Path(pinned).resolve():
        raise ParamsError(f"repo: this deployment runs in {pinned} only (a run asked for {root})")
    if not (root / "dvc.yaml").exists():
        raise ParamsError(f"repo: {root} has no dvc.yaml (run from the project root or pass --repo)")
    return root


def _retry_unless_permanent(task, task_run, state) -> bool:
    """retry_condition_fn: retry everything except data-contract and params failures."""
    exc = state.data if isinstance(state.data, BaseException) else None
    if exc is None:
        try:
            state.result()
        except BaseException as err:  # noqa: BLE001 - we only classify it
            exc = err
    retry = is_retryable(exc)
    if not retry:
        run_logger().error("%s: not retried (%s)", task.name, type(exc).__name__)
    return retry


@task(name="check-params", task_run_name="check-params", cache_policy=NO_CACHE, persist_result=False)
def check_params(repo: str) -> list[str]:
    """Validate every params.yaml section (overrides applied) before any stage runs."""
    sections = dvcops.validate_params(Path(repo))
    run_logger().info("params.yaml: %s valid", ", ".join(sections))
    return sections


@task(
    name="stage",
    cache_policy=NO_CACHE,
    persist_result=False,
    retry_condition_fn=_retry_unless_permanent,
)
def run_stage(
    repo: str,
    stage: str,
    force: bool = False,
    timeout_s: float | None = None,
    dask_address: str | None = None,
    current: bool = False,
) -> dict:
    """Reproduce one stage through DVC; returns {stage, status: ran|skipped|restored, seconds}.
    With `dask_address`, stages with `engine: dask` use that cluster too (wherever the task runs).
    `current`: the run's one `dvc status` already said the stage and all it depends on are
    current, so no DVC process is started for it (it is reported skipped)."""
    logger = run_logger()
    if current:
        logger.info("%s: skipped (current, by dvc status)", stage)
        return dvcops.StageRun(stage, "skipped", 0.0).as_dict()
    if dask_address:
        os.environ["DASK_SCHEDULER_ADDRESS"] = dask_address

    def log(line: str) -> None:  # the stage's own output, live, in the run log
        if line.strip():
            logger.info("%s | %s", stage, line)

    try:
        result = dvcops.repro_stage(Path(repo), stage, force=force, timeout_s=timeout_s, on_line=log)
    except ContractError as err:
        logger.error(
            "%s: data contract failed (not retried):\n%s\nfailure cases: %s",
            err.stage,
            err.summary,
            err.report,
        )
        raise
    except ParamsError as err:
        logger.error("%s (not retried)", err)
        raise
    logger.info("%s: %s in %.1f s", stage, result.status, result.seconds)
    return result.as_dict()


@flow(
    name="textclf-pipeline",
    flow_run_name=notify.pipeline_run_name,
    on_failure=[notify.notify_failure],
    on_crashed=[notify.notify_failure],
)
def pipeline(
    target: str | None = None,
    force: bool = False,
    params: list[str] | None = None,
    keep_params: bool = False,
    repo: str = ".",
    retries: int = 2,
    retry_delay_s: float = 10.0,
    stage_timeout_s: float | None = None,
    lock_timeout_s: float = 600.0,
    metrics_file: str = report.METRICS_FILE,
    notify_block: str | None = None,
    experiment: str = "overrides",
) -> dict:
    """Run the DVC pipeline (or `target` and what it depends on) stage by stage.

    Args:
        target: a dvc.yaml stage; default all stages.
        force: rerun stages even if DVC says they are current (`dvc repro --force`).
        params: overrides, `section.key=value` as for `dvc exp run --set-param`.
        keep_params: keep the overrides in params.yaml afterwards (default: restore the file).
        repo: the project root (holds dvc.yaml).
        retries: attempts after the first for a transiently failing stage.
        retry_delay_s: first retry delay; doubles each retry.
        stage_timeout_s: kill a stage that runs longer (default: no limit).
        lock_timeout_s: how long to wait for another run on the same repository.
        metrics_file: the evaluate stage's metrics, for the report.
        (a dask.distributed scheduler is a deployment setting, $DASK_SCHEDULER_ADDRESS, not a
            run parameter: with it the stage tasks are submitted to the flow's task runner — run
            `with_dask_runner(pipeline, address)` to make that a DaskTaskRunner on this cluster;
            `--dask-address` does — and stages with `engine: dask` use it too.)
        notify_block: a Prefect notification block, "<type-slug>/<name>", told when the run
            fails or crashes (default: $TEXTCLF_NOTIFY_BLOCK; none: no notification).
        experiment: save the finished run as a DVC experiment (`dvc exp save`, named after the
            Prefect run, its id in the message): "overrides" (runs with `params`), "always" or
            "never".
    """
    logger = run_logger()
    root = resolve_repo(repo)
    dvcops.inside_repo(root, metrics_file, "metrics_file")
    dask_address = os.environ.get(DASK_ENV) or None
    overrides = list(params or [])
    stages_done: list[dict] = []
    planned: list[str] = []
    if experiment not in dvcops.EXPERIMENT_MODES:
        raise ParamsError(f"experiment={experiment!r}: expected one of {', '.join(dvcops.EXPERIMENT_MODES)}")
    saved: dict = {}
    with repolock.run_slot(root, lock_timeout_s, what=f"flow run {_flow_run_name()}"):
        with dvcops.params_overrides(root, overrides, keep=keep_params):
            check_params(str(root))
            planned = dvcops.stage_order(root, target)
            logger.info("stages: %s", " → ".join(planned))
            stage_task = run_stage.with_options(
                retries=retries,
                retry_delay_seconds=exponential_backoff(retry_delay_s)(retries) if retries > 0 else 0,
                retry_jitter_factor=0.2 if retry_delay_s > 0 else None,
            )
            failed: tuple[str, BaseException] | None = None
            # One `dvc status` for the whole plan: a stage it calls current is skipped without a
            # DVC process of its own — until some stage runs, after which DVC decides each one.
            changed = None if force else dvcops.changed_stages(root, target)
            try:
                _run_stages(root, planned, changed, stage_task, stages_done, force, stage_timeout_s, dask_address)
                if experiment == "always" or (experiment == "overrides" and overrides):
                    saved = _save_experiment(root, planned)
            except BaseException as err:
                if len(stages_done) < len(planned):  # the stage that was running
                    failed = (planned[len(stages_done)], err)
                raise
            finally:
                _report(root, target, overrides, keep_params, planned, stages_done, metrics_file, failed, saved)
    summary = ", ".join(f"{s['stage']} {s['status']}" for s in stages_done)
    logger.info("pipeline done: %s", summary)
    return {
        "repo": str(root),
        "target": target,
        "stages": stages_done,
        "metrics": report.read_metrics(root, metrics_file),
        "experiment": saved.get("name"),
    }


def _run_stages(root, planned, changed, stage_task, stages_done, force, timeout_s, dask_address) -> None:
    """Each planned stage as a task of its own, in DVC's order, one at a time (on the task
    runner when there is a Dask scheduler); each result is appended to `stages_done` as it ends."""
    for stage in planned:
        current = changed is not None and stage not in changed and all(s["status"] == "skipped" for s in stages_done)
        one = stage_task.with_options(name=stage, task_run_name=stage)
        options = {"force": force, "timeout_s": timeout_s, "current": current}
        if dask_address:
            stages_done.append(one.submit(str(root), stage, dask_address=dask_address, **options).result())
        else:
            stages_done.append(one(str(root), stage, **options))


def _save_experiment(root: Path, stages: list[str]) -> dict:
    """The finished run as a DVC experiment, params overrides still applied. A failure to save is
    reported (log, artifact) but does not fail a run whose stages all succeeded."""
    from prefect.runtime import flow_run

    name = dvcops.experiment_name(str(flow_run.name), str(flow_run.id))
    try:
        dvcops.save_experiment(root, name, f"Prefect flow run {flow_run.id} ({flow_run.name})", stages)
    except (RunError, OSError, subprocess.TimeoutExpired) as err:
        run_logger().warning("the run was not saved as a DVC experiment: %s", err)
        return {"error": str(err)}
    run_logger().info("saved as DVC experiment %s (dvc exp show; dvc exp apply %s)", name, name)
    return {"name": name}


def with_dask_runner(flow_fn, address: str | None):
    """The flow with prefect-dask's DaskTaskRunner on the scheduler at `address` (None: a
    temporary LocalCluster)."""
    from prefect_dask import DaskTaskRunner

    return flow_fn.with_options(task_runner=DaskTaskRunner(address=address))


def _flow_run_name() -> str:
    try:
        from prefect.runtime import flow_run

        return str(flow_run.name)
    except Exception:  # noqa: BLE001 - only a label for the lock owner file
        return "?"


def _labels_top(root: Path) -> int:
    """labels.top from the project's params.yaml (the default when it cannot be read: the run's
    own params check reports that)."""
    from textclf.errors import ParamsError
    from textclf.params import LabelsParams, load_params

    try:
        return load_params("labels", root / "params.yaml").top
    except ParamsError:
        return LabelsParams().top


def _report(
    root: Path,
    target: str | None,
    overrides: list[str],
    kept: bool,
    planned: list[str],
    done: list[dict],
    metrics_file: str,
    failed: tuple[str, BaseException] | None,
    saved: dict | None = None,
) -> None:
    current = report.read_metrics(root, metrics_file)
    rows = report.stage_rows(done, planned, failed[0] if failed else None)
    markdown = report.run_markdown(
        root=root,
        target=target,
        overrides=overrides,
        kept=kept,
        current=current,
        committed=report.committed_metrics(root, metrics_file),
        commit=report.head_commit(root),
        stages=rows,
        metrics_file=metrics_file,
        error=str(failed[1]) if failed else None,
        data_diff=report.data_diff_markdown(root),
        experiment=saved,
    )
    try:
        report.publish(
            markdown,
            report.per_class_rows(current),
            rows,
            description=f"textclf pipeline ({target or 'all stages'})",
            suspects=report.suspect_rows(root, _labels_top(root)),
            contract_failures=report.contract_failure_rows(root, failed[1] if failed else None),
        )
    except Exception as err:  # noqa: BLE001 - a report must not hide the run's own outcome
        run_logger().warning("could not create artifacts: %s", err)
        if failed is None:
            raise


# ---------------------------------------------------------------------------------------------
# command line


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m flows.pipeline", description=__doc__.split("\n\n")[0])
    p.add_argument("--repo", default=".", help="project root (default: .)")
    p.add_argument("--target", help="run this stage and what it depends on (default: all)")
    p.add_argument("--force", action="store_true", help="rerun stages even if unchanged")
    p.add_argument(
        "-S",
        "--set-param",
        dest="params",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="params override (repeatable), as dvc exp run",
    )
    p.add_argument("--keep-params", action="store_true", help="keep overrides in params.yaml")
    p.add_argument(
        "--retries", type=int, default=2, help="retries of a stage that failed in a retryable way (default 2)"
    )
    p.add_argument("--retry-delay", type=float, default=10.0, help="first retry delay, seconds")
    p.add_argument("--stage-timeout", type=float, default=None, help="seconds per stage")
    p.add_argument(
        "--lock-timeout",
        type=float,
        default=600.0,
        help="seconds to wait for another run on this repository (default 600)",
    )
    p.add_argument(
        "--metrics-file",
        default=report.METRICS_FILE,
        help=f"the metrics file the run's summary artifact reads (default {report.METRICS_FILE})",
    )
    p.add_argument(
        "--dask-address",
        default=None,
        metavar="tcp://HOST:8786",
        help="run the tasks with prefect-dask's DaskTaskRunner on this dask.distributed scheduler "
        "(stages with engine: dask use it too)",
    )
    p.add_argument(
        "--notify-block",
        default=None,
        metavar="TYPE/NAME",
        help="a Prefect notification block told when the run fails, e.g. custom-webhook/textclf-alerts "
        f"(default: ${notify.NOTIFY_ENV})",
    )
    p.add_argument(
        "--exp",
        choices=dvcops.EXPERIMENT_MODES,
        default="overrides",
        help="save the finished run as a DVC experiment named after the Prefect run: for runs with -S "
        "(default), always, or never",
    )
    return p


def main(argv: list[str] | None = None) -> int:

    args = build_parser().parse_args(argv)
    try:
        flow_fn = with_dask_runner(pipeline, args.dask_address) if args.dask_address else pipeline
        if args.dask_address:
            os.environ[DASK_ENV] = args.dask_address
        with local_server_settings():
            result = flow_fn(
                target=args.target,
                force=args.force,
                params=args.params or None,
                keep_params=args.keep_params,
                repo=args.repo,
                retries=args.retries,
                retry_delay_s=args.retry_delay,
                stage_timeout_s=args.stage_timeout,
                lock_timeout_s=args.lock_timeout,
                metrics_file=args.metrics_file,
                notify_block=args.notify_block,
                experiment=args.exp,
            )
    except TextclfError as err:
        print(f"pipeline failed: {err}", file=sys.stderr)
        # as the stages where the kind is known (3 bad params, 4 a broken contract, 5 unreadable
        # input, 75 temporary); 1 for a run that cannot go on (repository busy, gate refused)
        return err.exit_code if err.exit_code != INTERNAL else 1
    for s in result["stages"]:
        print(f"{s['stage']}: {s['status']} ({s['seconds']:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
