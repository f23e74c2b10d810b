"""Which CPU kernels a stage's torch runs on: the same bundle on any x86-64 machine, or the fastest.

Float sums are not associative, so a model's last bits depend on the order its reductions add up
in, and that order is set by the machine, not the data: ATen picks a kernel per CPU (`default`,
`avx2`, `avx512` vector widths), MKL picks its own per CPU, and both split work across however
many threads there are. Three hundred L-BFGS iterations turn a last-bit difference into another
model (issue 24: four bundles from one clone, by `ATEN_CPU_CAPABILITY` x `OMP_NUM_THREADS`).

`train.cpu_kernels: portable` (the default) pins all of it before torch is loaded:
- `ATEN_CPU_CAPABILITY=default`: ATen's baseline x86-64 build of every kernel, the same code on
  every x86-64 CPU (no run-time choice of vector width);
- `MKL_CBWR=COMPATIBLE`: MKL's conditional numerical reproducibility, its SSE2 code path on every CPU;
- `ONEDNN_MAX_CPU_ISA=SSE41`: oneDNN's JIT kernels (the cnn family's convolutions) at one ISA;
- one thread (`OMP_NUM_THREADS`, `MKL_NUM_THREADS`, `torch.set_num_threads(1)`): no split that
  depends on the core count;
- on CUDA, `torch.use_deterministic_algorithms(True)` with cuBLAS's fixed workspace
  (`CUBLAS_WORKSPACE_CONFIG=:4096:8`): run-to-run determinism on one GPU model and software stack.

`native` leaves the process as torch sets it up (every core, the widest kernels): faster on many
cores, and a bundle that another machine will not reproduce.

The environment must be set before `import torch`, so the stages that run a model (train,
evaluate, export) call `pin_for_stage()` first thing. Where torch is already loaded (a test
calling a stage in-process) nothing is pinned and `state()` says so. Import-light: no torch here.
"""

from __future__ import annotations

import logging
import os
import sys

log = logging.getLogger("textclf.kernels")

PORTABLE_ENV: dict[str, str] = {
    "ATEN_CPU_CAPABILITY": "default",
    "MKL_CBWR": "COMPATIBLE",
    "ONEDNN_MAX_CPU_ISA": "SSE41",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "MKL_DYNAMIC": "FALSE",
    "CUBLAS_WORKSPACE_CONFIG": ":4096:8",
}
_state: dict = {"mode": "native", "pinned": False, "reason": "not requested"}
_notes: list[tuple[int, str]] = []  # said by apply_threads(): pin() runs before logging is set up


def pin(mode: str) -> dict:
    """Set the process up for `mode` (`portable` or `native`, as train.cpu_kernels validates it).
    Returns what `state()` returns."""
    global _state
    if mode == "native":
        _state = {"mode": "native", "pinned": False, "reason": "train.cpu_kernels: native"}
        return state()
    if "torch" in sys.modules:
        differs = sorted(k for k, v in PORTABLE_ENV.items() if os.environ.get(k) != v)
        _state = {
            "mode": "portable",
            "pinned": not differs,
            "reason": "torch was loaded before the kernels could be pinned" if differs else "",
        }
        if differs:
            _notes.append(
                (
                    logging.WARNING,
                    "train.cpu_kernels: portable, but torch was loaded first: this process keeps the "
                    f"machine's kernels ({', '.join(differs)}), and its model may differ in the last bits "
                    "from a stage run's",
                )
            )
        return state()
    overridden = [f"{k}={os.environ[k]}" for k, v in PORTABLE_ENV.items() if os.environ.get(k, v) != v]
    if overridden:
        _notes.append((logging.INFO, f"train.cpu_kernels: portable overrides {', '.join(overridden)}"))
    os.environ.update(PORTABLE_ENV)
    _state = {"mode": "portable", "pinned": True, "reason": ""}
    return state()


def pin_for_stage() -> dict:
    """`pin()` with the mode in params.yaml's `train.cpu_kernels`. A params.yaml that does not
    load pins nothing here: the stage's own `load_params` then reports it (with its exit code)."""
    from textclf.errors import TextclfError
    from textclf.params import load_params

    try:
        mode = load_params("train").cpu_kernels
    except (TextclfError, OSError):
        return state()
    return pin(mode)


def apply_threads() -> None:
    """After torch is loaded: one intra-op thread when pinned (OMP_NUM_THREADS covers OpenMP and
    MKL; this covers a process whose torch read other settings), deterministic CUDA algorithms.
    Logs what pin() noted (it runs before the stage sets up logging)."""
    while _notes:
        log.log(*_notes.pop(0))
    if not _state["pinned"]:
        return
    import torch

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True, warn_only=True)


def state() -> dict:
    """What run.json records: the mode, whether it holds in this process, and the kernel path."""
    out = dict(_state)
    if "torch" in sys.modules:
        import torch

        out["threads"] = torch.get_num_threads()
        out["capability"] = torch.backends.cpu.get_cpu_capability()
    return out
