"""The training loop: `fit()` is the pure core (tensors and params in, weights and history out).

The fast data path: each split is encoded once into a flat id tensor + offsets that stays on the
device; an epoch is a device-side permutation cut into index slices, and each batch is gathered
with tensor ops (no DataLoader, no per-document Python). On CUDA the forward pass runs under bf16
autocast. After every epoch a checkpoint (textclf.training.checkpoint) records everything needed
to continue, so a run killed mid-epoch ends exactly where an uninterrupted run would (per-epoch
seeds, no hidden RNG state). Nothing here imports DVC, DVCLive or Prefect, so benchmarks and GPU
checks call it directly."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from sklearn.metrics import f1_score
from torch import nn

from textclf.families.registry import family
from textclf.model import EncodingConfig, ModelConfig, encode, forward_batch, label_ids, predict_proba
from textclf.params import TrainParams
from textclf.training.checkpoint import TrainState, load_checkpoint, save_checkpoint
from textclf.training.distributed import World, all_sum, broadcast_flag, check_same_start, shard, wrap_ddp

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


def encode_split(
    tokens: pa.ListArray,
    labels: np.ndarray,
    vocab_tokens: pa.Array,
    enc: EncodingConfig,
    label_index: dict[str, int],
) -> Encoded:
    ids, offsets = encode(tokens, vocab_tokens, enc)
    return Encoded(
        torch.from_numpy(ids),
        torch.from_numpy(offsets),
        torch.from_numpy(label_ids(labels, list(label_index))),
    )


def tune_allocator() -> bool:
    """Keep large freed blocks in the process (glibc only; a no-op elsewhere).

    A training step allocates and frees tensors larger than glibc's mmap threshold (the sparse
    embedding gradient alone is tokens x dim floats): by default each is a fresh mmap, page-faulted
    and unmapped every step, which costs about half of a CPU step. M_MMAP_MAX=0 serves them from the
    heap and a maximal M_TRIM_THRESHOLD keeps freed memory for the next step. Process-wide: called
    by the train stage's main() (a process of its own), not by the library functions."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_max = -1, -4
        return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))
    except (OSError, AttributeError):
        return False


def resolve_device(name: str) -> torch.device:
    """`train.device` → a torch device: auto (the first visible CUDA GPU, else the CPU), cpu,
    cuda / cuda:N (the N-th GPU of those CUDA_VISIBLE_DEVICES exposes), mps (Apple GPUs).
    A device that is not there is a ValueError that says what is."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        where = f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else ""
        if not torch.cuda.is_available():
            raise ValueError(f"train.device={name} but no CUDA device is available{where} (use auto or cpu)")
        index = int(name.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise ValueError(
                f"train.device={name} but only {torch.cuda.device_count()} CUDA device(s) are visible{where}: "
                f"cuda:0 to cuda:{torch.cuda.device_count() - 1}"
            )
        return torch.device("cuda", index)
    if name == "mps" and not (torch.backends.mps.is_available()):
        raise ValueError("train.device=mps but this machine has no usable MPS (Apple GPU) device (use auto or cpu)")
    return torch.device(name)


def amp_dtype(device: torch.device, enabled: bool) -> torch.dtype | None:
    """What `train.amp` autocasts to on this device: bf16 on CUDA GPUs that support it (Ampere and
    later), fp16 on older ones (trained with a GradScaler, `grad_scaler`), nothing on CPU or MPS."""
    if not enabled or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def grad_scaler(dtype: torch.dtype | None) -> torch.amp.GradScaler | None:
    """A loss scaler for fp16 autocast (bf16 has fp32's range and needs none)."""
    return torch.amp.GradScaler("cuda") if dtype == torch.float16 else None


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


def class_weights(labels: torch.Tensor, k: int, mode: str) -> torch.Tensor | None:
    if mode == "none":
        return None
    counts = torch.bincount(labels.cpu(), minlength=k).float().clamp(min=1)
    return (counts.sum() / (k * counts)).to(labels.device)


def train_step(
    model,
    opt,
    batch_idx,
    data: Encoded,
    loss_fn,
    grad_clip: float,
    amp: torch.dtype | None,
    scale: float = 1.0,
    scaler: torch.amp.GradScaler | None = None,
) -> torch.Tensor:
    """One optimizer step; returns the (unscaled) batch loss as a 0-d tensor (no host sync).

    `scale` multiplies the loss before backward: DDP averages gradients over ranks, so a rank
    holding k of a global batch's n documents scales its mean loss by k * world / n to make the
    average the global batch mean. `amp`: the autocast dtype (`amp_dtype`), None for none;
    `scaler`: fp16's loss scaler (`grad_scaler`)."""
    model.train()
    with torch.autocast(device_type=data.ids.device.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
        logits = forward_batch(model, data.ids, data.offsets, batch_idx)
    loss = loss_fn(logits.float(), data.labels[batch_idx])
    opt.zero_grad(set_to_none=True)
    scaled = loss * scale if scale != 1.0 else loss
    if scaler is None:
        scaled.backward()
        if grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        return loss.detach()
    scaler.scale(scaled).backward()
    if grad_clip:
        scaler.unscale_(opt)  # clip the true gradients, not the scaled ones
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    scaler.step(opt)  # skipped when the scaled gradients overflowed
    scaler.update()
    return loss.detach()


@torch.no_grad()
def evaluate(model, data: Encoded, loss_fn, amp: torch.dtype | None) -> dict:
    with torch.autocast(device_type=data.ids.device.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
        probs = predict_proba(model, data.ids, data.offsets).to(data.labels.device)
    loss = float(nn.functional.nll_loss(torch.log(probs.clamp_min(1e-12)), data.labels))
    y, pred = data.labels.cpu().numpy(), probs.argmax(1).cpu().numpy()
    return {
        "loss": loss,
        "accuracy": float((y == pred).mean()),
        # over the classes that occur: an absent class must not count as F1 = 0
        "macro_f1": float(f1_score(y, pred, average="macro", labels=np.union1d(y, pred).tolist(), zero_division=0)),
    }


def batches(
    n: int,
    batch_size: int,
    generator: torch.Generator,
    device,
    lengths: torch.Tensor | None = None,
    bucket_batches: int = 50,
):
    """Index slices of one epoch's permutation. With `lengths` (cnn), documents of similar length
    share a batch: the permutation is cut into chunks of `bucket_batches` batches, each chunk is
    sorted by length, and the resulting batches are shuffled again."""
    perm = torch.randperm(n, generator=generator).to(device)
    if lengths is None:
        return [perm[s : s + batch_size] for s in range(0, n, batch_size)]
    out = []
    chunk = batch_size * bucket_batches
    for s in range(0, n, chunk):
        part = perm[s : s + chunk]
        part = part[torch.argsort(lengths[part], stable=True)]
        out += [part[b : b + batch_size] for b in range(0, len(part), batch_size)]
    order = torch.randperm(len(out), generator=generator).tolist()
    return [out[i] for i in order]


@dataclass
class FitResult:
    best_state: dict[str, torch.Tensor]
    state: TrainState
    tokens_per_s: float
    cut: bool = False  # stopped by a deadline (autotune's budget) before early stopping or max epochs


def fit(
    train: Encoded,
    valid: Encoded,
    cfg: ModelConfig,
    p: TrainParams,
    device: torch.device,
    checkpoint: Path | None = None,
    fingerprint: str = "",
    on_epoch: Callable[[dict], None] | None = None,
    progress: bool = False,
    world: World | None = None,
    deadline: float | None = None,
) -> FitResult:
    """Train an epoch family (textclf.families.base.EpochFamily: bag, cnn) with early stopping on
    validation macro-F1; return the best epoch's weights.

    `deadline` (a time.monotonic() value; one process only) ends training after the epoch in
    which it passes: autotune's budget.

    With `world` (a process group is up), this rank trains on its shard of every global batch;
    only the lead rank validates, calls `on_epoch`, checkpoints and returns meaningful weights."""
    lead = world is None or world.lead
    torch.manual_seed(p.seed)
    # Sparse gradients: gloo all-reduces them, NCCL cannot (dense there).
    fam = family(cfg.type)
    model = fam.build(cfg, sparse=fam.sparse_gradients(p) and (world is None or world.backend == "gloo"))
    fam.init(model, train.ids, train.offsets)
    model = model.to(device)
    opt = make_optimizer(model, p)
    state = TrainState()
    best = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if checkpoint is not None:
        resumed = load_checkpoint(checkpoint, fingerprint, model, opt)
        if resumed is not None:
            state, best = resumed
            log.info(
                "resuming after epoch %d (best macro-F1 %.4f at epoch %d)",
                state.epoch,
                state.best_f1,
                state.best_epoch,
            )
            for rec in state.history:  # replay the logged epochs, so the logs match a full run
                if on_epoch and lead:
                    on_epoch(rec)
        if world is not None:
            check_same_start(state.epoch, device)
    train = train.to(device)
    if lead:
        valid = valid.to(device)
    net = model if world is None else wrap_ddp(model, world, device)
    loss_fn = nn.CrossEntropyLoss(
        weight=class_weights(train.labels, cfg.num_classes, p.class_weight),
        label_smoothing=p.label_smoothing,
    )
    amp = amp_dtype(device, p.amp)
    scaler = grad_scaler(amp)
    steps_per_epoch = math.ceil(train.n / p.batch_size)
    total_steps = steps_per_epoch * p.epochs
    lengths = (train.offsets[1:] - train.offsets[:-1]) if fam.layout == "padded" else None
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
            losses.append(train_step(net, opt, local, train, loss_fn, p.grad_clip, amp, scale, scaler) * scale)
            state.step += 1
        if world is None:
            train_loss = float(torch.stack(losses).mean()) if losses else float("nan")
        else:  # sum over ranks of scale * batch mean = world * global batch mean
            total, count = all_sum(
                [
                    float(torch.stack(losses).sum()) if losses else 0.0,
                    float(len(losses) * world.size),
                ],
                device,
            )
            train_loss = total / count if count else float("nan")
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds += time.perf_counter() - t0
        tokens_seen += train.tokens
        state.epoch = epoch + 1
        if not lead:  # the lead rank validates and decides; the others wait for its word
            state.done = broadcast_flag(False, device)
            continue
        val = evaluate(model, valid, loss_fn, amp)
        rec = {
            "epoch": epoch + 1,
            "train_loss": train_loss,
            "valid_loss": val["loss"],
            "valid_accuracy": val["accuracy"],
            "valid_macro_f1": val["macro_f1"],
            "lr": opt.param_groups[0]["lr"],
        }
        state.history.append(rec)
        if val["macro_f1"] > state.best_f1:
            state.best_f1, state.best_epoch, state.bad_epochs = val["macro_f1"], epoch + 1, 0
            best = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            state.bad_epochs += 1
            if state.bad_epochs >= p.patience:
                state.done = True
        log.info(
            "epoch %d: train loss %.4f, valid loss %.4f, acc %.4f, macro-F1 %.4f",
            epoch + 1,
            rec["train_loss"],
            rec["valid_loss"],
            rec["valid_accuracy"],
            rec["valid_macro_f1"],
        )
        if on_epoch:
            on_epoch(rec)
        if checkpoint is not None:
            save_checkpoint(checkpoint, fingerprint, model, opt, state, best)
        if world is not None:
            broadcast_flag(state.done, device)
        elif deadline is not None and not state.done and state.epoch < p.epochs and time.monotonic() >= deadline:
            return FitResult(best, state, tokens_seen / seconds if seconds else 0.0, cut=True)
    return FitResult(best, state, tokens_seen / seconds if seconds else 0.0)


def _progress(it, enabled: bool, epoch: int):
    if not enabled:
        return it
    from tqdm import tqdm

    return tqdm(it, desc=f"epoch {epoch + 1}", leave=False, disable=not sys.stderr.isatty())
