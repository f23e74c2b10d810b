"""Distributed training: torchrun + DistributedDataParallel, imported and set up only when asked for.

`train.distributed.nproc` > 1 or `nnodes` > 1: `python -m stages.train` re-executes itself under
`torchrun`, or a user launches `torchrun ... -m stages.train` directly. Every rank holds the whole
encoded train split and cuts the SAME per-epoch permutation; each global batch of
`train.batch_size` documents is split across the ranks and DistributedDataParallel averages the
gradients, so an epoch takes the same optimizer steps as one process would. Rank 0 alone
validates, logs, checkpoints and writes the bundle; the early-stopping decision is broadcast.
With nproc = nnodes = 1 and no torchrun environment nothing distributed is set up."""

from __future__ import annotations

import ctypes
import inspect
import logging
import os
import signal
import sys
from dataclasses import dataclass

import torch
from torch import nn

from textclf.params import DistributedParams

log = logging.getLogger("textclf.train")


# ---------------------------------------------------------------------------------------------
# distributed: torchrun + DistributedDataParallel (imported and set up only when asked for)


@dataclass(frozen=True)
class World:
    """This process's place in a torch.distributed job; `fit(world=None)` is one process."""

    rank: int
    size: int
    local_rank: int
    backend: str

    @property
    def lead(self) -> bool:
        return self.rank == 0


def is_torchrun_worker() -> bool:
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))


def wants_distributed(d: DistributedParams) -> bool:
    return d.nproc > 1 or d.nnodes > 1


def torchrun_command(d: DistributedParams) -> list[str]:
    """`python -m torch.distributed.run ... -m stages.train` for these params (this node's part)."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc-per-node={d.nproc}",
        f"--nnodes={d.nnodes}",
    ]
    if d.rdzv_endpoint:
        cmd += ["--rdzv-backend=c10d", f"--rdzv-endpoint={d.rdzv_endpoint}"]
    elif d.nnodes > 1:
        raise ValueError("train.distributed.rdzv_endpoint (host:port) is required when nnodes > 1")
    else:
        cmd.append("--standalone")  # single node: a free local port, no rendezvous server to run
    return cmd + ["-m", "stages.train"]


def init_world(d: DistributedParams, device: torch.device) -> tuple[World, torch.device]:
    """Join the process group torchrun described in the environment; pick this rank's device."""
    import torch.distributed as dist

    die_with_launcher()
    local_rank = int(os.environ["LOCAL_RANK"])
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    backend = d.backend if d.backend != "auto" else ("nccl" if device.type == "cuda" else "gloo")
    if backend == "nccl" and device.type != "cuda":
        raise ValueError("train.distributed.backend=nccl needs CUDA devices (use gloo or auto on CPU)")
    dist.init_process_group(backend=backend)
    return World(dist.get_rank(), dist.get_world_size(), local_rank, backend), device


def die_with_launcher() -> None:
    """torchrun starts each worker in a session of its own, so killing `dvc repro` (or torchrun)
    would leave the ranks training on and writing models/checkpoint/ under the next run. On
    Linux, ask the kernel to SIGKILL this worker when its launcher dies."""
    if not sys.platform.startswith("linux"):
        return

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except OSError as err:
        log.debug("PR_SET_PDEATHSIG unavailable: %s", err)
        return
    if os.getppid() == 1:  # the launcher died before the request took effect
        os.kill(os.getpid(), signal.SIGKILL)


def shard(idx: torch.Tensor, world: World) -> tuple[torch.Tensor, float]:
    """This rank's part of one global batch and its loss scale (see `train_step`). A rank left
    without documents (a last batch smaller than the world) still runs a step on one document
    with scale 0: every rank must join every gradient all-reduce."""
    local = idx.tensor_split(world.size)[world.rank]
    if len(local) == 0:
        return idx[:1], 0.0
    return local, len(local) * world.size / len(idx)


def wrap_ddp(model: nn.Module, world: World, device: torch.device) -> nn.Module:

    from torch.nn.parallel import DistributedDataParallel

    # The only buffer (idf) is computed from the whole train split on every rank: syncing it
    # before every forward would be wasted traffic.
    sig = inspect.signature(DistributedDataParallel.__init__).parameters
    sync = {"forward_sync_buffers": False} if "forward_sync_buffers" in sig else {"broadcast_buffers": False}
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None, **sync)


def all_sum(values: list[float], device: torch.device) -> list[float]:
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def broadcast_flag(flag: bool, device: torch.device) -> bool:
    import torch.distributed as dist

    t = torch.tensor([int(flag)], device=device)
    dist.broadcast(t, src=0)
    return bool(t.item())


def check_same_start(epoch: int, device: torch.device) -> None:
    """Every rank must resume from the same epoch (one checkpoint, seen by all: on several
    nodes models/checkpoint/ must be shared storage, or absent everywhere)."""
    lo, hi = min_max(epoch, device)
    if lo != hi:
        raise RuntimeError(
            f"ranks found different checkpoints (epochs {lo}..{hi}): models/checkpoint/ must be the same for every rank"
        )


def min_max(value: int, device: torch.device) -> tuple[int, int]:
    import torch.distributed as dist

    t = torch.tensor([-value, value], dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return -int(t[0]), int(t[1])
