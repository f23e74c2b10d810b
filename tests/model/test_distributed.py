"""Distributed training (torch DDP): 2 CPU processes on gloo against 1 process, resume after SIGKILL.

The equivalence test spawns the ranks with torch.multiprocessing and calls the core (`fit`) on
them; the resume test runs the real command, `python -m stages.train`, which re-launches itself
under torchrun, in a temp directory holding the split/vocab artifacts and a params.yaml.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import psutil
import pyarrow as pa
import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file
from sklearn.metrics import f1_score

from tests.fixtures import ROOT, env, project_params, wait_while_running
from textclf.artifacts import arrow_values, write_json, write_parquet
from textclf.model import build_model, predict_proba
from textclf.params import DistributedParams
from textclf.training.distributed import init_world, shard, torchrun_command
from textclf.training.loop import encode_split, fit

WORLD = 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, port: int, tr, va, cfg, p, out: str) -> None:
    """One spawned rank: join a gloo group on 127.0.0.1, train, rank 0 saves the best weights."""
    import torch.distributed as dist

    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(WORLD),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)  # what torchrun does: one thread per process on a shared CPU
    world, device = init_world(DistributedParams(nproc=WORLD), torch.device("cpu"))
    try:
        assert world.backend == "gloo" and world.size == WORLD
        result = fit(tr, va, cfg, p, device, world=world)
        if world.lead:
            save_file(result.best_state, out)
            with open(out + ".json", "w", encoding="utf-8") as f:
                json.dump(result.state.history, f)
    finally:
        dist.destroy_process_group()


def run_two_ranks(fit_args, tmp_path):
    """(best weights, history) of a 2-process run of `fit`."""
    out = str(tmp_path / "best.safetensors")
    torch.multiprocessing.spawn(_rank, args=(free_port(), *fit_args, out), nprocs=WORLD, join=True)
    with open(out + ".json", encoding="utf-8") as f:
        return load_file(out), json.load(f)


def macro_f1_on(state, cfg, test_enc) -> float:
    model = build_model(cfg)
    model.load_state_dict(state)
    pred = predict_proba(model, test_enc.ids, test_enc.offsets).argmax(1).numpy()
    return float(f1_score(test_enc.labels.numpy(), pred, average="macro"))


@pytest.fixture()
def test_split(fixture_split, fixture_vocab, prepared):
    _, _, cfg, enc, labels = prepared
    test = fixture_split[2]
    return encode_split(
        arrow_values(test["tokens"]),
        test["label"].to_numpy(dtype=object),
        pa.array(fixture_vocab["tokens"], pa.string()),
        enc,
        {c: i for i, c in enumerate(labels)},
    )


def test_shards_cover_each_global_batch_once():
    from textclf.training.distributed import World

    idx = torch.randperm(37)
    for n in (37, 5, 1):
        parts = [shard(idx[:n], World(r, 3, r, "gloo")) for r in range(3)]
        real = [p for p, scale in parts if scale > 0]
        assert torch.equal(torch.sort(torch.cat(real)).values, torch.sort(idx[:n]).values)
        # the scales make the all-reduced mean of the rank losses the global batch mean
        assert sum(len(p) * 1.0 for p, s in parts if s > 0) == n
        assert sum(s for _, s in parts) == pytest.approx(3.0)


def test_torchrun_command_from_params():
    single = torchrun_command(DistributedParams(nproc=4))
    assert single[1:4] == ["-m", "torch.distributed.run", "--nproc-per-node=4"]
    assert "--standalone" in single and single[-2:] == ["-m", "stages.train"]
    multi = torchrun_command(DistributedParams(nproc=8, nnodes=2, rdzv_endpoint="node0:29400"))
    assert "--nnodes=2" in multi and "--rdzv-endpoint=node0:29400" in multi and "--standalone" not in multi
    with pytest.raises(ValueError, match="rdzv_endpoint"):
        torchrun_command(DistributedParams(nproc=8, nnodes=2))


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])  # sgd: sparse embedding gradients through gloo
def test_two_gloo_processes_match_one_process(prepared, small_params, test_split, tmp_path, optimizer):
    tr, va, cfg, _, _ = prepared
    p = small_params.model_copy(update={"optimizer": optimizer, "lr": 0.02 if optimizer == "adam" else 5.0})
    one = fit(tr, va, cfg, p, torch.device("cpu"))
    state, history = run_two_ranks((tr, va, cfg, p), tmp_path)
    f1_one, f1_two = (
        macro_f1_on(one.best_state, cfg, test_split),
        macro_f1_on(state, cfg, test_split),
    )
    print(f"{optimizer}: test macro-F1 1 process {f1_one:.4f}, 2 processes {f1_two:.4f}")
    assert abs(f1_one - f1_two) <= 0.01
    assert f1_two > 0.8
    # the same number of optimizer steps per epoch, and curves that track each other
    assert len(history) == len(one.state.history)
    for a, b in zip(history, one.state.history, strict=True):
        assert abs(a["valid_macro_f1"] - b["valid_macro_f1"]) <= 0.05


# ---------------------------------------------------------------------------------------------
# the real command: python -m stages.train → torchrun → 2 ranks


def _workdir(path, fixture_split, fixture_vocab, train: dict):
    path.mkdir(parents=True)
    train_df, valid_df, _ = fixture_split
    write_parquet(train_df, path / "data/processed/train.parquet")
    write_parquet(valid_df, path / "data/processed/valid.parquet")
    write_json(fixture_vocab, path / "data/processed/vocab.json")
    params = project_params()
    # the params as written, one family: autotune runs in one process
    params["train"].update({"model": "bag", "autotune": {**params["train"]["autotune"], "budget_s": 0}}, **train)
    (path / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def _env():
    e = env()
    e["PYTHONPATH"] = str(ROOT) + os.pathsep + e.get("PYTHONPATH", "")
    return e


def _train(cwd, timeout=300):
    proc = subprocess.run(
        [sys.executable, "-m", "stages.train"],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def _outputs(cwd):
    """DVCLive metrics, the bundle's training record (plus where and on how many processes it
    ran, from reports/train/run.json: not in the hashed bundle), the weights."""
    metrics = json.loads((cwd / "reports/train/metrics.json").read_text(encoding="utf-8"))
    config = json.loads((cwd / "models/classifier/config.json").read_text(encoding="utf-8"))
    run = json.loads((cwd / "reports/train/run.json").read_text(encoding="utf-8"))
    training = {**config["training"], "processes": run["processes"], "device": run["device"]}
    return metrics, training, load_file(str(cwd / "models/classifier/model.safetensors"))


@pytest.mark.slow
def test_killed_two_process_run_resumes_to_the_same_result(fixture_split, fixture_vocab, tmp_path):
    train = {
        "device": "cpu",
        "epochs": 4,
        "batch_size": 8,
        "patience": 10,
        "bag": {"dropout": 0.3},
        "distributed": {"nproc": WORLD, "nnodes": 1, "rdzv_endpoint": None, "backend": "auto"},
    }
    ref = _workdir(tmp_path / "ref", fixture_split, fixture_vocab, train)
    log = _train(ref)
    assert "relaunching under torchrun" in log and f"({WORLD} processes, gloo)" in log
    ref_metrics, ref_training, ref_weights = _outputs(ref)
    assert ref_training["processes"] == WORLD and ref_training["epochs_run"] == 4

    cwd = _workdir(tmp_path / "run", fixture_split, fixture_vocab, train)
    state = cwd / "models/checkpoint/state.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "stages.train"],
        cwd=cwd,
        env=_env(),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ready = lambda: json.loads(state.read_text(encoding="utf-8"))["state"]["epoch"] >= 2  # noqa: E731
    wait_while_running(proc, ready, "training", poll_s=0.005)
    ranks = psutil.Process(proc.pid).children(recursive=True)
    assert len(ranks) >= WORLD
    # what killing `dvc repro` does: SIGKILL to the group of `python -m stages.train`, which is
    # torchrun by now; the ranks (each in a session of its own) must die with it
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    _, alive = psutil.wait_procs(ranks, timeout=30)
    assert not alive, "ranks outlived their launcher"
    killed_at = json.loads(state.read_text(encoding="utf-8"))["state"]["epoch"]
    assert 2 <= killed_at < 4
    assert not (cwd / "models/classifier").exists()

    log = _train(cwd)
    assert f"resuming after epoch {killed_at}" in log, log
    metrics, training, weights = _outputs(cwd)
    assert metrics == ref_metrics
    assert training["history"] == ref_training["history"]
    assert weights.keys() == ref_weights.keys()
    for k in weights:
        assert torch.equal(weights[k], ref_weights[k]), k


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_nccl_one_process_under_torchrun(fixture_split, fixture_vocab, tmp_path):
    train = {
        "device": "cuda",
        "epochs": 3,
        "batch_size": 32,
        "distributed": {"nproc": 1, "nnodes": 1, "rdzv_endpoint": None, "backend": "nccl"},
    }
    cwd = _workdir(tmp_path / "gpu", fixture_split, fixture_vocab, train)
    cmd = torchrun_command(DistributedParams(nproc=1))
    proc = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log
    assert "(1 processes, nccl)" in log
    _, training, _ = _outputs(cwd)
    assert training["processes"] == 1 and training["device"] == "cuda:0"
    assert training["best_valid_macro_f1"] > 0.8
    print(next(line for line in log.splitlines() if "tokens/s" in line))
