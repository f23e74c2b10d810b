"""textclf.kernels: portable pins the environment before torch loads, says what it overrode once
logging is up, and says so when torch was loaded first (nothing pinned then)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.fixtures import env
from textclf import kernels

PROBE = """
import json, logging
from textclf import kernels
kernels.pin("portable")
import torch
logging.basicConfig(level="INFO")
kernels.apply_threads()
print(json.dumps(kernels.state()))
"""


def test_portable_pins_the_kernel_path_and_one_thread_before_torch_loads():
    proc = subprocess.run(
        [sys.executable, "-c", PROBE],
        env={**env(), "ATEN_CPU_CAPABILITY": "avx2", "OMP_NUM_THREADS": "2"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    state = json.loads(proc.stdout.strip().splitlines()[-1])
    assert state == {"mode": "portable", "pinned": True, "reason": "", "threads": 1, "capability": "DEFAULT"}
    assert "portable overrides ATEN_CPU_CAPABILITY=avx2, OMP_NUM_THREADS=2" in proc.stderr


def test_native_pins_nothing():
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.replace('"portable"', '"native"')],
        env={**env(), "OMP_NUM_THREADS": "2"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    state = json.loads(proc.stdout.strip().splitlines()[-1])
    assert state["mode"] == "native" and not state["pinned"] and state["threads"] == 2


def test_torch_loaded_first_is_reported_not_pinned(monkeypatch, caplog):
    import torch  # noqa: F401  (this test process has torch already)

    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    state = kernels.pin("portable")
    assert state["mode"] == "portable" and not state["pinned"]
    assert "torch was loaded before" in state["reason"]
    with caplog.at_level("WARNING", logger="textclf.kernels"):
        kernels.apply_threads()
    assert "torch was loaded first" in caplog.text
    kernels.pin("native")  # leave the module as other tests expect it
