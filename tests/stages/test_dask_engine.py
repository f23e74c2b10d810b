"""engine: dask runs the data stages' batch steps and reductions on a dask.distributed cluster
and writes exactly what the local engine writes."""

from __future__ import annotations

import pytest

from tests.pipelines import assert_same, corpus_rows, run_pipeline, write_parquet_source

distributed = pytest.importorskip("dask.distributed")


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as c:
        yield c


def test_dask_engine_matches_local(tmp_path, monkeypatch, cluster):
    source = write_parquet_source(tmp_path / "corpus.parquet", corpus_rows())
    local = run_pipeline(tmp_path / "local", source, 0, split_column="split")
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", cluster.scheduler_address)
    on_dask = run_pipeline(tmp_path / "dask", source, 41, engine="dask", split_column="split")
    assert_same(local, on_dask)
    with distributed.Client(cluster) as client:
        ran = client.run_on_scheduler(lambda dask_scheduler: sorted(dask_scheduler.task_prefixes))
    # the batch steps and the reductions ran on the cluster
    for name in (
        "prepare_table",
        "decide",
        "clean_part",
        "split_keys",
        "split_decide",
        "split_part",
        "count_row_group",
        "merge_counts",
    ):
        assert any(p.startswith(name) for p in ran), (name, ran)
