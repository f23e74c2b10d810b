"""The pipeline flow on a Dask cluster: stage tasks through prefect-dask's DaskTaskRunner, and a
stage with `engine: dask` sends its batches to the same scheduler."""

from __future__ import annotations

import distributed

from flows.pipeline import pipeline, with_dask_runner
from tests.flows.conftest import commit_all, set_param


def test_flow_tasks_and_dask_engine_share_one_cluster(fresh_repo, monkeypatch):
    set_param(fresh_repo, "clean.engine", "dask")
    commit_all(fresh_repo, "clean on dask")
    # threads in this process (the Prefect test API is reachable from them), a TCP scheduler the
    # stage subprocesses can connect to
    with distributed.LocalCluster(
        n_workers=1,
        threads_per_worker=2,
        processes=False,
        protocol="tcp://",
        dashboard_address=None,
    ) as cluster:
        flow_fn = with_dask_runner(pipeline, cluster.scheduler_address)
        # the scheduler is a deployment setting (the environment), not a run parameter
        monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", cluster.scheduler_address)
        state = flow_fn(target="clean", repo=str(fresh_repo), return_state=True)
        assert state.is_completed()
        result = state.result()
        assert {s["stage"]: s["status"] for s in result["stages"]} == {
            "ingest": "ran",
            "clean": "ran",
        }
        with distributed.Client(cluster) as client:
            ran = client.run_on_scheduler(lambda dask_scheduler: sorted(dask_scheduler.task_prefixes))
    assert any(p.startswith("clean_part") for p in ran), ran  # the clean stage's batches
    assert any("stage" in p or "run_stage" in p or "ingest" in p for p in ran), ran  # the flow's tasks
