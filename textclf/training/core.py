"""train: train/valid splits + vocab → models/classifier/ (the bundle), reports/train/ (DVCLive).

The fast data path: each split is encoded once into a flat id tensor + offsets that stays on the
device; an epoch is a device-side permutation cut into index slices, and each batch is gathered
with tensor ops (no DataLoader, no per-document Python). On CUDA the forward pass runs under bf16
autocast. After every epoch a checkpoint (models/checkpoint/, a `persist: true` DVC out) records
everything needed to continue — a run killed mid-epoch resumes from the last completed epoch
and ends exactly where an uninterrupted run would (per-epoch seeds, no hidden RNG state).

`fit()` is the pure core (tensors and params in, weights and history out); it imports nothing
from DVC, DVCLive or Prefect, so benchmarks and GPU checks can call it directly.

Distributed (`train.distributed.nproc` > 1 or `nnodes` > 1): `python -m stages.train` re-executes
itself under `torchrun`, or a user launches `torchrun ... -m stages.train` directly. Every rank
holds the whole encoded train split and cuts the SAME per-epoch permutation; each global batch
of `train.batch_size` documents is split across the ranks and DistributedDataParallel averages
the gradients, so an epoch takes the same optimizer steps as one process would. Rank 0 alone
validates, logs, checkpoints and writes the bundle; the early-stopping decision is broadcast.
With nproc = nnodes = 1 and no torchrun environment nothing distributed is set up.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from sklearn.metrics import f1_score
from torch import nn

from textclf.model import (
    EncodingConfig,
    ModelConfig,
    build_model,
    encode,
    forward_batch,
    idf_weights,
    label_ids,
    predict_proba,
)
from textclf.params import DistributedParams, TrainParams
from textclf.paths import CHECKPOINT
from textclf.stats import rounded
from textclf.training.linear import fit_linear

log = logging.getLogger("textclf.train")



@dataclass
class Encoded:
    """One split, encoded and resident on a device."""

    ids: torch.Tensor
    offsets: torch.Tensor
    labels: torch.Tensor

    @property
    def n(self) -> int:
        return len(self.labels)

    @property
    def tokens(self) -> int:
        return int(self.offsets[-1])

    def to(self, device: torch.device) -> Encoded:
        return Encoded(self.ids.to(device), self.offsets.to(device), self.labels.to(device))


def encode_split(tokens: pa.ListArray, labels: np.ndarray, vocab_tokens: pa.Array, enc: EncodingConfig,
                 label_index: dict[str, int]) -> Encoded:
    ids, offsets = encode(tokens, vocab_tokens, enc)
    return Encoded(torch.from_numpy(ids), torch.from_numpy(offsets), torch.from_numpy(label_ids(labels, list(label_index))))


def tune_allocator() -> bool:
    """Keep large freed blocks in the process (glibc only; a no-op elsewhere).

    A training step allocates and frees tensors larger than glibc's mmap threshold (the sparse
    embedding gradient alone is tokens x dim floats): by default each is a fresh mmap, page-faulted
    and unmapped every step, which costs about half of a CPU step. M_MMAP_MAX=0 serves them from the
    heap and a maximal M_TRIM_THRESHOLD keeps freed memory for the next step. Process-wide: called
    by the train stage's main() (a process of its own), not by the library functions."""
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_max = -1, -4
        return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))
    except (OSError, AttributeError):
        return False


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device=cuda but no CUDA device is available (use auto or cpu)")
    return torch.device(name)


def lr_at(step: int, total: int, base: float, schedule: str, warmup: int) -> float:
    """Pure LR schedule: linear warm-up, then constant / cosine / linear decay to 0."""
    if warmup and step < warmup:
        return base * (step + 1) / warmup
    if schedule == "none" or total <= warmup:
        return base
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == "cosine":
        return base * 0.5 * (1.0 + math.cos(math.pi * progress))
    return base * (1.0 - progress)


def make_optimizer(model: nn.Module, p: TrainParams) -> torch.optim.Optimizer:
    params = [q for q in model.parameters() if q.requires_grad]
    if p.optimizer == "sgd":
        return torch.optim.SGD(params, lr=p.lr, momentum=p.momentum, weight_decay=p.weight_decay)
    if p.optimizer == "adam":
        return torch.optim.Adam(params, lr=p.lr, weight_decay=p.weight_decay, fused=True)
    return torch.optim.AdamW(params, lr=p.lr, weight_decay=p.weight_decay, fused=True)


def use_sparse(p: TrainParams) -> bool:
    # Sparse embedding gradients make plain SGD updates touch only the rows a batch used — the
    # difference between ~1 and ~10 M tokens/s on CPU for large vocabularies. Adam(W), momentum,
    # weight decay and clipping need dense gradients.
    return p.model == "bag" and p.optimizer == "sgd" and p.momentum == 0 and p.weight_decay == 0 \
        and p.grad_clip == 0


def class_weights(labels: torch.Tensor, k: int, mode: str) -> torch.Tensor | None:
    if mode == "none":
        return None
    counts = torch.bincount(labels.cpu(), minlength=k).float().clamp(min=1)
    return (counts.sum() / (k * counts)).to(labels.device)


def train_step(model, opt, batch_idx, data: Encoded, loss_fn, grad_clip: float, amp: bool,
               scale: float = 1.0) -> torch.Tensor:
    """One optimizer step; returns the (unscaled) batch loss as a 0-d tensor (no host sync). `scale` multiplies the loss before
    backward: DDP averages gradients over ranks, so a rank holding k of a global batch's n
    documents scales its mean loss by k * world / n to make the average the global batch mean."""
    model.train()
    with torch.autocast(device_type=data.ids.device.type, dtype=torch.bfloat16,
                        enabled=amp and data.ids.device.type == "cuda"):
        logits = forward_batch(model, data.ids, data.offsets, batch_idx)
    loss = loss_fn(logits.float(), data.labels[batch_idx])
    opt.zero_grad(set_to_none=True)
    (loss * scale if scale != 1.0 else loss).backward()
    if grad_clip:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    return loss.detach()


@torch.no_grad()
def evaluate(model, data: Encoded, loss_fn, amp: bool) -> dict:
    with torch.autocast(device_type=data.ids.device.type, dtype=torch.bfloat16,
                        enabled=amp and data.ids.device.type == "cuda"):
        probs = predict_proba(model, data.ids, data.offsets).to(data.labels.device)
    loss = float(nn.functional.nll_loss(torch.log(probs.clamp_min(1e-12)), data.labels))
    y, pred = data.labels.cpu().numpy(), probs.argmax(1).cpu().numpy()
    return {"loss": loss, "accuracy": float((y == pred).mean()),
            # over the classes that occur: an absent class must not count as F1 = 0
            "macro_f1": float(f1_score(y, pred, average="macro", labels=np.union1d(y, pred).tolist(),
                                       zero_division=0))}


def batches(n: int, batch_size: int, generator: torch.Generator, device, lengths: torch.Tensor | None = None,
            bucket_batches: int = 50):
    """Index slices of one epoch's permutation. With `lengths` (cnn), documents of similar length
    share a batch: the permutation is cut into chunks of `bucket_batches` batches, each chunk is
    sorted by length, and the resulting batches are shuffled again."""
    perm = torch.randperm(n, generator=generator).to(device)
    if lengths is None:
        return [perm[s:s + batch_size] for s in range(0, n, batch_size)]
    out = []
    chunk = batch_size * bucket_batches
    for s in range(0, n, chunk):
        part = perm[s:s + chunk]
        part = part[torch.argsort(lengths[part], stable=True)]
        out += [part[b:b + batch_size] for b in range(0, len(part), batch_size)]
    order = torch.randperm(len(out), generator=generator).tolist()
    return [out[i] for i in order]


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
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={d.nproc}", f"--nnodes={d.nnodes}"]
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

    _die_with_launcher()
    local_rank = int(os.environ["LOCAL_RANK"])
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    backend = d.backend if d.backend != "auto" else ("nccl" if device.type == "cuda" else "gloo")
    if backend == "nccl" and device.type != "cuda":
        raise ValueError("train.distributed.backend=nccl needs CUDA devices (use gloo or auto on CPU)")
    dist.init_process_group(backend=backend)
    return World(dist.get_rank(), dist.get_world_size(), local_rank, backend), device


def _die_with_launcher() -> None:
    """torchrun starts each worker in a session of its own, so killing `dvc repro` (or torchrun)
    would leave the ranks training on and writing models/checkpoint/ under the next run. On
    Linux, ask the kernel to SIGKILL this worker when its launcher dies."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

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


def _wrap_ddp(model: nn.Module, world: World, device: torch.device) -> nn.Module:
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    # The only buffer (idf) is computed from the whole train split on every rank: syncing it
    # before every forward would be wasted traffic.
    sig = inspect.signature(DistributedDataParallel.__init__).parameters
    sync = {"forward_sync_buffers": False} if "forward_sync_buffers" in sig else {"broadcast_buffers": False}
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None, **sync)


def _all_sum(values: list[float], device: torch.device) -> list[float]:
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def _broadcast_flag(flag: bool, device: torch.device) -> bool:
    import torch.distributed as dist

    t = torch.tensor([int(flag)], device=device)
    dist.broadcast(t, src=0)
    return bool(t.item())


def _check_same_start(epoch: int, device: torch.device) -> None:
    """Every rank must resume from the same epoch (one checkpoint, seen by all: on several
    nodes models/checkpoint/ must be shared storage, or absent everywhere)."""
    lo, hi = _min_max(epoch, device)
    if lo != hi:
        raise RuntimeError(f"ranks found different checkpoints (epochs {lo}..{hi}): models/checkpoint/ "
                           "must be the same for every rank")


def _min_max(value: int, device: torch.device) -> tuple[int, int]:
    import torch.distributed as dist

    t = torch.tensor([-value, value], dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return -int(t[0]), int(t[1])


@dataclass
class TrainState:
    """Everything an interrupted run needs to continue (saved after every epoch)."""

    epoch: int = 0  # epochs completed
    step: int = 0
    best_f1: float = -1.0
    best_epoch: int = 0
    bad_epochs: int = 0
    history: list[dict] = field(default_factory=list)
    done: bool = False


@dataclass
class FitResult:
    best_state: dict[str, torch.Tensor]
    state: TrainState
    tokens_per_s: float
    cut: bool = False  # stopped by a deadline (autotune's budget) before early stopping or max epochs


def fit(train: Encoded, valid: Encoded, cfg: ModelConfig, p: TrainParams, device: torch.device,
        checkpoint: Path | None = None, fingerprint: str = "",
        on_epoch: Callable[[dict], None] | None = None, progress: bool = False,
        world: World | None = None, deadline: float | None = None) -> FitResult:
    """Train with early stopping on validation macro-F1; return the best epoch's weights.

    `deadline` (a time.monotonic() value; one process only) ends training after the epoch in
    which it passes: autotune's budget.

    With `world` (a process group is up), this rank trains on its shard of every global batch;
    only the lead rank validates, calls `on_epoch`, checkpoints and returns meaningful weights."""
    lead = world is None or world.lead
    torch.manual_seed(p.seed)
    # Sparse gradients: gloo all-reduces them, NCCL cannot (dense there).
    model = build_model(cfg, sparse=use_sparse(p) and (world is None or world.backend == "gloo"))
    if cfg.weighting == "idf":
        model.idf.copy_(idf_weights(train.ids, train.offsets, cfg.num_embeddings))
    model = model.to(device)
    opt = make_optimizer(model, p)
    state = TrainState()
    best = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if checkpoint is not None:
        resumed = load_checkpoint(checkpoint, fingerprint, model, opt)
        if resumed is not None:
            state, best = resumed
            log.info("resuming after epoch %d (best macro-F1 %.4f at epoch %d)", state.epoch,
                     state.best_f1, state.best_epoch)
            for rec in state.history:  # replay the logged epochs, so the logs match a full run
                if on_epoch and lead:
                    on_epoch(rec)
        if world is not None:
            _check_same_start(state.epoch, device)
    train = train.to(device)
    if lead:
        valid = valid.to(device)
    net = model if world is None else _wrap_ddp(model, world, device)
    loss_fn = nn.CrossEntropyLoss(weight=class_weights(train.labels, cfg.num_classes, p.class_weight),
                                  label_smoothing=p.label_smoothing)
    steps_per_epoch = math.ceil(train.n / p.batch_size)
    total_steps = steps_per_epoch * p.epochs
    lengths = (train.offsets[1:] - train.offsets[:-1]) if cfg.type == "cnn" else None
    tokens_seen, seconds = 0, 0.0
    while not state.done and state.epoch < p.epochs:
        epoch = state.epoch
        # Per-epoch seeds: the permutation and dropout masks of epoch e are the same whether or
        # not the run was interrupted before it.
        # (Ranks draw different dropout masks; the permutation is the same everywhere.)
        torch.manual_seed(p.seed * 1_000_003 + epoch + (world.rank * 7_919 if world else 0))
        gen = torch.Generator().manual_seed(p.seed * 1_000_003 + epoch)
        t0 = time.perf_counter()
        losses = []
        for idx in _progress(batches(train.n, p.batch_size, gen, device, lengths), progress and lead, epoch):
            for g in opt.param_groups:
                g["lr"] = lr_at(state.step, total_steps, p.lr, p.schedule, p.warmup_steps)
            local, scale = (idx, 1.0) if world is None else shard(idx, world)
            losses.append(train_step(net, opt, local, train, loss_fn, p.grad_clip, p.amp, scale) * scale)
            state.step += 1
        if world is None:
            train_loss = float(torch.stack(losses).mean()) if losses else float("nan")
        else:  # sum over ranks of scale * batch mean = world * global batch mean
            total, count = _all_sum([float(torch.stack(losses).sum()) if losses else 0.0,
                                     float(len(losses) * world.size)], device)
            train_loss = total / count if count else float("nan")
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds += time.perf_counter() - t0
        tokens_seen += train.tokens
        state.epoch = epoch + 1
        if not lead:  # the lead rank validates and decides; the others wait for its word
            state.done = _broadcast_flag(False, device)
            continue
        val = evaluate(model, valid, loss_fn, p.amp)
        rec = {"epoch": epoch + 1, "train_loss": train_loss,
               "valid_loss": val["loss"], "valid_accuracy": val["accuracy"], "valid_macro_f1": val["macro_f1"],
               "lr": opt.param_groups[0]["lr"]}
        state.history.append(rec)
        if val["macro_f1"] > state.best_f1:
            state.best_f1, state.best_epoch, state.bad_epochs = val["macro_f1"], epoch + 1, 0
            best = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            state.bad_epochs += 1
            if state.bad_epochs >= p.patience:
                state.done = True
        log.info("epoch %d: train loss %.4f, valid loss %.4f, acc %.4f, macro-F1 %.4f", epoch + 1,
                 rec["train_loss"], rec["valid_loss"], rec["valid_accuracy"], rec["valid_macro_f1"])
        if on_epoch:
            on_epoch(rec)
        if checkpoint is not None:
            save_checkpoint(checkpoint, fingerprint, model, opt, state, best)
        if world is not None:
            _broadcast_flag(state.done, device)
        elif deadline is not None and not state.done and state.epoch < p.epochs and time.monotonic() >= deadline:
            return FitResult(best, state, tokens_seen / seconds if seconds else 0.0, cut=True)
    return FitResult(best, state, tokens_seen / seconds if seconds else 0.0)


def fit_linear_family(train: Encoded, valid: Encoded, cfg: ModelConfig, p: TrainParams, device: torch.device,
                      on_epoch: Callable[[dict], None] | None = None, deadline: float | None = None) -> FitResult:
    """The `linear` family: one convex fit (textclf.training.linear), no epochs; its one record is logged
    as epoch 1 so the logs, checkpoints and bundle look like every other family's."""
    tr = train.to(device)
    fitted = fit_linear(tr.ids, tr.offsets, tr.labels, cfg, p.linear.C, p.class_weight, p.linear.nb_alpha,
                        p.linear.max_iter, deadline)
    model = build_model(cfg).to(device)
    model.load_state_dict(fitted.state_dict)
    val = evaluate(model, valid.to(device), None, amp=False)
    rec = {"epoch": 1, "train_loss": fitted.train_loss, "valid_loss": val["loss"], "valid_accuracy": val["accuracy"],
           "valid_macro_f1": val["macro_f1"], "lr": 0.0}
    log.info("linear: %d L-BFGS iterations%s in %.1f s; valid loss %.4f, acc %.4f, macro-F1 %.4f",
             fitted.iterations, "" if fitted.converged else " (not converged)", fitted.seconds, val["loss"],
             val["accuracy"], val["macro_f1"])
    if on_epoch:
        on_epoch(rec)
    state = TrainState(epoch=1, step=fitted.iterations, best_f1=val["macro_f1"], best_epoch=1, history=[rec], done=True)
    best = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    cut = not fitted.converged and deadline is not None and time.monotonic() >= deadline
    return FitResult(best, state, train.tokens / fitted.seconds if fitted.seconds else 0.0, cut=cut)


def _progress(it, enabled: bool, epoch: int):
    if not enabled:
        return it
    from tqdm import tqdm

    return tqdm(it, desc=f"epoch {epoch + 1}", leave=False, disable=not sys.stderr.isatty())


# ---------------------------------------------------------------------------------------------
# checkpoint: safetensors (tensors) + JSON (everything else); no pickle

def save_checkpoint(path: Path, fingerprint: str, model: nn.Module, opt: torch.optim.Optimizer,
                    state: TrainState, best: dict[str, torch.Tensor]) -> None:
    path.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors |= {f"best.{k}": v.detach().cpu().contiguous() for k, v in best.items()}
    osd = opt.state_dict()
    opt_meta: dict = {"param_groups": osd["param_groups"], "state": {}}
    for pid, st in osd["state"].items():
        opt_meta["state"][str(pid)] = {}
        for name, val in st.items():
            if isinstance(val, torch.Tensor):
                tensors[f"opt.{pid}.{name}"] = val.detach().cpu().contiguous()
                opt_meta["state"][str(pid)][name] = "tensor"
            else:
                opt_meta["state"][str(pid)][name] = val
    meta = {"fingerprint": fingerprint, "state": state.__dict__, "optimizer": opt_meta}
    tmp_t, tmp_m = path / ".state.safetensors.tmp", path / ".state.json.tmp"
    # the tensors carry the epoch they belong to: a kill between the two renames below leaves a
    # pair that disagrees, which load_checkpoint detects instead of mixing epochs
    # one metadata key (safetensors writes its metadata map in no fixed order)
    save_file(tensors, str(tmp_t), metadata={"tag": json.dumps({"epoch": state.epoch, "step": state.step})})
    tmp_m.write_text(json.dumps(meta, sort_keys=True), encoding="utf-8")
    # tensors first, JSON last: a JSON whose tensors are missing never exists
    from textclf.artifacts import fsync_path

    for tmp, final in ((tmp_t, "state.safetensors"), (tmp_m, "state.json")):
        fsync_path(tmp)
        os.replace(tmp, path / final)
        fsync_path(path)


def load_checkpoint(path: Path, fingerprint: str, model: nn.Module, opt: torch.optim.Optimizer
                    ) -> tuple[TrainState, dict[str, torch.Tensor]] | None:
    meta_path, tensor_path = path / "state.json", path / "state.safetensors"
    if not meta_path.exists() or not tensor_path.exists():
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        tensors = load_file(str(tensor_path))
        with safe_open(str(tensor_path), framework="pt") as f:
            tagged = f.metadata() or {}
    except Exception as err:  # noqa: BLE001 - a broken checkpoint means: start over, loudly
        log.warning("ignoring unreadable checkpoint %s: %s", path, err)
        return None
    try:
        state = TrainState(**meta["state"])
        tag = json.loads(tagged.get("tag", "{}"))
    except (TypeError, KeyError, ValueError) as err:
        log.warning("checkpoint %s was written by another version of textclf (%s): starting from scratch", path, err)
        return None
    if tag.get("epoch") != state.epoch or tag.get("step") != state.step:
        log.warning("checkpoint %s: tensors (epoch %s) and state (epoch %d) disagree — interrupted while "
                    "saving; starting from scratch", path, tag.get("epoch"), state.epoch)
        return None
    if meta.get("fingerprint") != fingerprint:
        log.info("checkpoint is for other data or params: starting from scratch")
        return None
    if state.done or not state.history:
        return None  # a finished run: a rerun (e.g. `dvc repro -f`) trains again from scratch
    model_state = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        osd: dict = {"param_groups": meta["optimizer"]["param_groups"], "state": {}}
        for pid, st in meta["optimizer"]["state"].items():
            osd["state"][int(pid)] = {name: (tensors[f"opt.{pid}.{name}"] if val == "tensor" else val)
                                      for name, val in st.items()}
        opt.load_state_dict(osd)
    except (RuntimeError, KeyError, ValueError, TypeError) as err:
        # same params and data, but weights or optimizer state of another shape: older code
        model.load_state_dict(model_state)
        log.warning("checkpoint %s does not fit this model (written by another version of textclf?): %s; "
                    "starting from scratch", path, str(err).splitlines()[0])
        return None
    best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
    return state, best


def fingerprint_of(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


# ---------------------------------------------------------------------------------------------

def prepare(train_df, valid_df, vocab: dict, p: TrainParams) -> tuple[Encoded, Encoded, ModelConfig,
                                                                     EncodingConfig, list[str]]:
    labels = sorted(set(train_df["label"].tolist()))
    index = {c: i for i, c in enumerate(labels)}
    if len(train_df) == 0 or len(valid_df) == 0:
        from textclf.artifacts import InputError

        raise InputError(f"the {'train' if len(train_df) == 0 else 'valid'} split is empty: early stopping and "
                         "model selection need both (more data, or other split ratios)")
    unknown = sorted(set(valid_df["label"].tolist()) - set(labels))
    if unknown:
        from textclf.artifacts import InputError

        raise InputError(f"valid split has labels the train split lacks: {unknown}")
    bigrams = p.bigrams if p.model in ("bag", "linear") else "none"
    if bigrams == "vocab" and vocab.get("ngrams", 1) < 2:
        from textclf.artifacts import InputError

        raise InputError("train.bigrams=vocab needs vocab.ngrams: 2")
    enc = EncodingConfig(vocab_size=len(vocab["tokens"]), bigrams=bigrams,
                         hash_buckets=p.hash_buckets if bigrams == "hashed" else 0)
    vt = pa.array(vocab["tokens"], pa.string())

    def tok(df):
        return df["tokens"].array._pa_array.combine_chunks()

    tr = encode_split(tok(train_df), train_df["label"].to_numpy(dtype=object), vt, enc, index)
    va = encode_split(tok(valid_df), valid_df["label"].to_numpy(dtype=object), vt, enc, index)
    return tr, va, model_config(p, enc.num_embeddings, len(labels)), enc, labels


def model_config(p: TrainParams, num_embeddings: int, num_classes: int) -> ModelConfig:
    return ModelConfig(type=p.model, num_embeddings=num_embeddings, embed_dim=p.embed_dim,
                       num_classes=num_classes, hidden_dim=p.hidden_dim if p.model == "bag" else 0,
                       dropout=p.dropout, kernel_sizes=p.kernel_sizes, num_filters=p.num_filters,
                       max_len=p.max_len, weighting=p.weighting if p.model == "bag" else "none",
                       nb_mix=p.linear.nb_mix if p.model == "linear" else 0.5,
                       sublinear_tf=p.linear.sublinear_tf)


def extra_stopwords(clean_params) -> list[str]:
    """The words of clean.stopwords_file as the clean stage applied them (normalised), sorted."""
    from textclf.text import load_stopwords

    if not clean_params.stopwords_file:
        return []
    builtin = load_stopwords(clean_params.model_copy(update={"stopwords_file": None}))
    return sorted(load_stopwords(clean_params) - builtin)


def bundle_config(cfg: ModelConfig, enc: EncodingConfig, labels: list[str], vocab: dict, clean_params,
                  p: TrainParams, result: FitResult, device: str, processes: int = 1) -> dict:
    """What the bundle's config.json records about a training run (textclf.bundle adds the format;
    time, device and versions go to reports/train/run.json instead: see textclf.bundle.run_metadata)."""
    return {
        "model": cfg.to_dict(),
        "encoding": {"vocab_size": enc.vocab_size, "bigrams": enc.bigrams, "hash_buckets": enc.hash_buckets},
        "labels": labels,
        "vocab_hash": vocab["hash"],
        # prediction must clean text exactly as the clean stage did: the user's extra stopwords go
        # in by content (sorted), so prediction never reads the file the path names
        "text": {"clean": clean_params.model_dump(mode="json"), "normalize": "nfkc-v1",
                 "stopwords_extra": extra_stopwords(clean_params)},
        "params": p.model_dump(mode="json"),
        "training": {"best_epoch": result.state.best_epoch, "best_valid_macro_f1": result.state.best_f1,
                     "epochs_run": result.state.epoch, "history": rounded(result.state.history)},
    }


# ---------------------------------------------------------------------------------------------
# one configuration, start to finish (a plain run, or one autotune trial)

@dataclass
class Outcome:
    """A trained configuration: its fit, model config, encoding and labels."""

    result: FitResult
    cfg: ModelConfig
    enc: EncodingConfig
    labels: list[str]
    params: TrainParams


class Prepared:
    """The train/valid splits encoded once per encoding (autotune trials share them)."""

    def __init__(self, train_df, valid_df, vocab: dict):
        self.train_df, self.valid_df, self.vocab = train_df, valid_df, vocab
        self._cache: dict = {}

    def get(self, p: TrainParams) -> tuple[Encoded, Encoded, ModelConfig, EncodingConfig, list[str]]:
        key = (p.bigrams if p.model in ("bag", "linear") else "none", p.hash_buckets)
        if key not in self._cache:
            self._cache[key] = prepare(self.train_df, self.valid_df, self.vocab, p)
        tr, va, cfg, enc, labels = self._cache[key]
        return tr, va, model_config(p, cfg.num_embeddings, cfg.num_classes), enc, labels


def train_model(data: Prepared, p: TrainParams, device: torch.device) -> Outcome:
    """What the train stage does with these params, in memory: the autotune search when
    `autotune.budget_s` > 0, else one run of the params as written (no checkpoint, no logs)."""
    if p.autotune.budget_s > 0:
        return autotune(data, p, device, checkpoint=None).result
    return train_config(data, p, device)


def train_config(data: Prepared, p: TrainParams, device: torch.device, *, checkpoint: Path | None = None,
                 fingerprint: str = "", on_epoch: Callable[[dict], None] | None = None,
                 deadline: float | None = None, progress: bool = False, world: World | None = None) -> Outcome:
    tr, va, cfg, enc, labels = data.get(p)
    if cfg.type == "linear":
        result = fit_linear_family(tr, va, cfg, p, device, on_epoch=on_epoch, deadline=deadline)
    else:
        result = fit(tr, va, cfg, p, device, checkpoint=checkpoint, fingerprint=fingerprint, on_epoch=on_epoch,
                     progress=progress, world=world, deadline=deadline)
    return Outcome(result, cfg, enc, labels, p)


def autotune(data: Prepared, p: TrainParams, device: torch.device, fingerprint: str = "",
             checkpoint: Path | None = CHECKPOINT):
    """The Optuna search (textclf.training.autotune) over `train_config` runs (resumable in `checkpoint`)."""
    from textclf.training import autotune as at

    def run_trial(params: TrainParams, report, deadline: float):
        # a linear fit reports once, when it has finished: nothing left to prune
        final = params.model == "linear"
        out = train_config(data, params, device, deadline=deadline,
                           on_epoch=lambda rec: report(rec["epoch"], rec["valid_macro_f1"], final=final))
        return out, out.result.cut

    def prefer(first: Outcome, best: Outcome) -> tuple[bool, dict]:
        return prefer_best(data, first, best, p.autotune.seed)

    return at.search(p, run_trial, score=lambda out: out.result.state.best_f1, checkpoint=checkpoint,
                     fingerprint=fingerprint, restore=restore_outcome, save=save_outcome, prefer=prefer)


def valid_predictions(data: Prepared, out: Outcome, device: torch.device | str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """(truth, predicted) class indices of a trial's model on the valid split."""
    _, va, _, _, _ = data.get(out.params)
    model = build_model(out.cfg)
    model.load_state_dict(out.result.best_state)
    model = model.to(device)
    pred = predict_proba(model, va.ids.to(device), va.offsets.to(device)).argmax(1).numpy()
    return va.labels.cpu().numpy(), pred


def prefer_best(data: Prepared, first: Outcome, best: Outcome, seed: int, n_boot: int = 1000) -> tuple[bool, dict]:
    """The one-standard-error rule: the best trial replaces trial 0 only when its valid macro-F1
    gain is larger than the paired bootstrap standard error of that gain (seeded: same choice
    every run)."""
    from textclf.stats import paired_macro_f1_deltas

    y, pred_best = valid_predictions(data, best)
    _, pred_first = valid_predictions(data, first)
    delta, deltas = paired_macro_f1_deltas(y, pred_best, pred_first, len(best.labels), n_boot, seed)
    se = float(deltas.std(ddof=1))
    return delta > se, {"delta": delta, "se": se}


def _files(name: str) -> tuple[str, str]:
    return f"{name}.safetensors", f"{name}.json"


def save_outcome(folder: Path, out: Outcome, name: str = "best") -> None:
    """An autotune trial's result (trial 0's, the best's), kept beside the search log."""
    from textclf.artifacts import fsync_path, write_bytes

    tensors_file, meta_file = _files(name)
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"cfg": out.cfg.to_dict(), "enc": out.enc.__dict__, "labels": out.labels, "params": out.params.model_dump(mode="json"),
            "state": out.result.state.__dict__, "tokens_per_s": out.result.tokens_per_s, "cut": out.result.cut}
    tmp = folder / f".{tensors_file}.tmp"
    # one metadata key: safetensors writes its metadata map in no fixed order
    save_file({k: v.detach().cpu().contiguous() for k, v in out.result.best_state.items()}, str(tmp),
              metadata={"meta": json.dumps(meta, sort_keys=True)})
    fsync_path(tmp)
    os.replace(tmp, folder / tensors_file)
    write_bytes(folder / meta_file, json.dumps(meta, sort_keys=True).encode("utf-8"))


def restore_outcome(folder: Path, name: str = "best") -> Outcome | None:
    tensors_file, meta_file = _files(name)
    try:
        meta = json.loads((folder / meta_file).read_text(encoding="utf-8"))
        with safe_open(str(folder / tensors_file), framework="pt") as f:
            if json.loads((f.metadata() or {}).get("meta", "null")) != meta:
                return None  # interrupted between the two writes
        tensors = load_file(str(folder / tensors_file))
        result = FitResult(tensors, TrainState(**meta["state"]), meta["tokens_per_s"], meta["cut"])
        return Outcome(result, ModelConfig.from_dict(meta["cfg"]), EncodingConfig(**meta["enc"]), meta["labels"],
                       TrainParams.model_validate(meta["params"]))
    except (OSError, ValueError, KeyError, TypeError) as err:
        log.warning("ignoring the unreadable best trial in %s: %s", folder, err)
        return None


def warn_small_classes(labels, minimum: int = 50) -> list[str]:
    """Classes with fewer than `minimum` training documents: their F1 is noisy and easily 0."""
    counts = pd.Series(labels).value_counts()
    small = sorted(counts[counts < minimum].index.tolist())
    for c in small:
        log.warning("class %r has only %d training documents (< %d): expect a noisy or zero F1 for it; "
                    "class_weight: balanced and more examples help", c, counts[c], minimum)
    return small


# ---------------------------------------------------------------------------------------------
# the stage



