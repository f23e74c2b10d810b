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
With nproc = nnodes = 1 and no torchrun environment nothing distributed is set up."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

from textclf import kernels

kernels.pin_for_stage()  # before torch loads: train.cpu_kernels (textclf.kernels)

import torch

from textclf.artifacts import read_parquet, run_main, sha256_file, write_json
from textclf.bundle import run_metadata, save_bundle
from textclf.data.vocab import load_vocab
from textclf.errors import ParamsError
from textclf.params import DistributedParams, TrainParams, load_params
from textclf.paths import (
    AUTOTUNE_REPORT,
    BUNDLE,
    CHECKPOINT,
    RUN_METADATA,
    TRAIN,
    TRIALS_PLOT,
    VALID,
    VOCAB,
)
from textclf.paths import TRAIN_REPORTS as LIVE_DIR
from textclf.training import autotune as at
from textclf.training.checkpoint import fingerprint_of
from textclf.training.distributed import World, init_world, is_torchrun_worker, torchrun_command, wants_distributed
from textclf.training.loop import resolve_device, tune_allocator
from textclf.training.run import (
    Prepared,
    autotune,
    bundle_config,
    checkpoint_files,
    log,
    train_config,
    warn_small_classes,
)


def main() -> None:

    run_main("train", _main)


def _main() -> None:

    tune_allocator()
    kernels.apply_threads()
    p = load_params("train")
    clean_params = load_params("clean")
    try:
        device = resolve_device(p.device)
    except ValueError as err:
        raise ParamsError(f"params.yaml: train.device: {err}") from None
    distributed = is_torchrun_worker() or wants_distributed(p.distributed)
    if distributed and p.autotune.budget_s > 0:
        raise ParamsError(
            "params.yaml: train.autotune runs in one process: set train.autotune.budget_s: 0 to "
            "train with train.distributed (or tune first, then copy the chosen params)"
        )
    if distributed and p.model == "encoder":
        raise ParamsError(
            "params.yaml: train.distributed: the encoder family trains in one process (DDP for it is not "
            "built yet): set train.distributed.nproc: 1 and train.distributed.nnodes: 1"
        )
    world = None
    if is_torchrun_worker():
        try:
            world, device = init_world(p.distributed, device)
        except ValueError as err:
            raise ParamsError(f"params.yaml: {err}") from None
    elif wants_distributed(p.distributed):
        _relaunch_under_torchrun(p.distributed)
    try:
        train_on(p, clean_params, device, world)
    finally:
        if world is not None:
            import torch.distributed as dist

            dist.destroy_process_group()


def train_on(p: TrainParams, clean_params, device: torch.device, world: World | None) -> None:

    lead = world is None or world.lead
    if not lead:  # one voice in the log: rank 0's
        log.setLevel(logging.WARNING)
    vocab = load_vocab(VOCAB)
    data = Prepared(read_parquet(TRAIN), read_parquet(VALID), vocab, html=clean_params.html)
    if lead:
        warn_small_classes(data.train_df["label"])
    # a checkpoint is only resumed by a job of the same size (its dropout streams differ)
    uses_encoder = p.model == "encoder" or (p.autotune.budget_s > 0 and "encoder" in p.autotune.families)
    fp = fingerprint_of(
        p.model_dump(),
        # the encoder folder's content, not only its path (a checkpoint of another encoder is not resumed)
        *([data.embedder(p).source.digest] if uses_encoder else []),
        vocab["hash"],
        _file_digest(TRAIN),
        _file_digest(VALID),
        *([world.size] if world else []),
    )
    tuned = p.autotune.budget_s > 0
    log.info(
        "training %s on %s: %d train / %d valid documents%s%s",
        "(autotune)" if tuned else p.model,
        device,
        len(data.train_df),
        len(data.valid_df),
        f" ({world.size} processes, {world.backend})" if world else "",
        f"; autotune: up to {p.autotune.trials} trials in {p.autotune.budget_s:g} s" if tuned else "",
    )
    if not lead:
        train_config(data, p, device, checkpoint=CHECKPOINT, fingerprint=fp, world=world)
        return
    from dvclive import Live

    search = None
    with Live(dir=str(LIVE_DIR), dvcyaml=None, save_dvc_exp=False, report=None) as live:

        def on_epoch(rec):
            for k in ("train_loss", "valid_loss", "valid_accuracy", "valid_macro_f1"):
                live.log_metric(k.replace("_", "/", 1), round(rec[k], 6), plot=True)  # see rounded()
            live.next_step()

        if tuned:
            search = autotune(data, p, device, fp)
            out = search.result
            for rec in out.result.state.history:  # the chosen trial's curves
                on_epoch(rec)
        else:
            out = train_config(
                data,
                p,
                device,
                checkpoint=CHECKPOINT,
                fingerprint=fp,
                on_epoch=on_epoch,
                progress=True,
                world=world,
            )
        result = out.result
        # only deterministic values here: the same params must give the same DVC metrics
        live.summary = {
            "model": out.cfg.type,
            "best_epoch": result.state.best_epoch,
            "best_valid_macro_f1": round(result.state.best_f1, 6),
            "epochs": result.state.epoch,
        }
    if search is not None:
        write_json(at.summary(search), AUTOTUNE_REPORT)
        write_json(at.trial_rows(search), TRIALS_PLOT)
        _finish_search_log()
        log.info(
            "autotune: %d trials (%s) in %.1f s, stopped by %s; chosen trial %d: %s, valid macro-F1 %.4f",
            len(search.trials),
            ", ".join(f"{k} {v}" for k, v in at.summary(search).items() if k in ("complete", "pruned")),
            search.seconds,
            search.stopped_by,
            search.best.number,
            at._describe(search.best.params),
            search.best.value,
        )
        if search.stopped_by == "budget":
            log.warning(
                "autotune stopped by its budget (train.autotune.budget_s: %s) after %d of %d trials: "
                "another machine, or a busier one, runs another number of trials and may choose another "
                "model. For a search that reproduces, raise budget_s until it stops by trials "
                "(reports/train/autotune.json: stopped_by)",
                p.autotune.budget_s,
                len(search.trials),
                p.autotune.trials,
            )
    else:
        write_json({"trials": 0, "chosen": {"model": out.cfg.type}}, AUTOTUNE_REPORT)
        write_json([], TRIALS_PLOT)
    log.info("training throughput: %.0f tokens/s on %s", result.tokens_per_s, device)
    config = bundle_config(
        out.cfg,
        out.enc,
        out.labels,
        vocab,
        clean_params,
        out.params,
        result,
        str(device),
        processes=world.size if world else 1,
    )
    if search is not None:
        config["autotune"] = {
            "trials": len(search.trials),
            "best_trial": search.best.number,
            "stopped_by": search.stopped_by,
        }
    files = None
    if out.encoder is not None:  # the encoder family: its record, tokenizer and licence
        config["encoder"] = out.encoder["meta"]
        files = data.embedder(out.params).source.bundle_files()
    save_bundle(BUNDLE, result.best_state, config, vocab, files)

    extra = {"tokens_per_s": round(result.tokens_per_s), "kernels": kernels.state()}
    if search is not None:
        extra["autotune_seconds"] = round(search.seconds, 1)
    write_json(run_metadata(str(device), world.size if world else 1, **extra), RUN_METADATA)
    log.info(
        "%s: best epoch %d, valid macro-F1 %.4f; bundle written to %s",
        out.cfg.type,
        result.state.best_epoch,
        result.state.best_f1,
        BUNDLE,
    )


def _finish_search_log() -> None:
    """A finished search is not resumed: `dvc repro -f` searches again (as a finished fit trains again)."""

    for name in (at.LOG_FILE, *checkpoint_files("best"), *checkpoint_files("first")):
        (CHECKPOINT / name).unlink(missing_ok=True)


def _relaunch_under_torchrun(d: DistributedParams) -> None:
    """Replace this process by torchrun running `-m stages.train` on d.nproc workers (POSIX:
    exec, so DVC waits on and signals torchrun itself)."""

    try:
        cmd = torchrun_command(d)
    except ValueError as err:
        raise ParamsError(f"params.yaml: {err}") from None
    log.info("relaunching under torchrun: %s", " ".join(cmd[1:]))
    for h in logging.getLogger().handlers:
        h.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    if os.name == "posix":
        os.execv(sys.executable, cmd)

    sys.exit(subprocess.call(cmd))


def _file_digest(path: Path) -> str:

    return sha256_file(path)


if __name__ == "__main__":
    main()
