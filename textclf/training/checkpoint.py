"""Training checkpoints: safetensors (tensors) + JSON (everything else), no pickle.

`TrainState` is everything an interrupted run needs to continue; it is saved after every epoch and a
run killed mid-epoch resumes from the last completed one."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from textclf.artifacts import fsync_path

log = logging.getLogger("textclf.train")


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


# ---------------------------------------------------------------------------------------------
# checkpoint: safetensors (tensors) + JSON (everything else); no pickle


def save_checkpoint(
    path: Path,
    fingerprint: str,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    state: TrainState,
    best: dict[str, torch.Tensor],
) -> None:
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
    save_file(
        tensors,
        str(tmp_t),
        metadata={"tag": json.dumps({"epoch": state.epoch, "step": state.step})},
    )
    tmp_m.write_text(json.dumps(meta, sort_keys=True), encoding="utf-8")
    # tensors first, JSON last: a JSON whose tensors are missing never exists

    for tmp, final in ((tmp_t, "state.safetensors"), (tmp_m, "state.json")):
        fsync_path(tmp)
        os.replace(tmp, path / final)
        fsync_path(path)


def load_checkpoint(
    path: Path, fingerprint: str, model: nn.Module, opt: torch.optim.Optimizer
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
        log.warning(
            "checkpoint %s was written by another version of textclf (%s): starting from scratch",
            path,
            err,
        )
        return None
    if tag.get("epoch") != state.epoch or tag.get("step") != state.step:
        log.warning(
            "checkpoint %s: tensors (epoch %s) and state (epoch %d) disagree — interrupted while "
            "saving; starting from scratch",
            path,
            tag.get("epoch"),
            state.epoch,
        )
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
            osd["state"][int(pid)] = {
                name: (tensors[f"opt.{pid}.{name}"] if val == "tensor" else val) for name, val in st.items()
            }
        opt.load_state_dict(osd)
    except (RuntimeError, KeyError, ValueError, TypeError) as err:
        # same params and data, but weights or optimizer state of another shape: older code
        model.load_state_dict(model_state)
        log.warning(
            "checkpoint %s does not fit this model (written by another version of textclf?): %s; starting from scratch",
            path,
            str(err).splitlines()[0],
        )
        return None
    best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
    return state, best


def fingerprint_of(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()
