"""Running a benchmark the way its README command does, at a tiny size (the bench smoke tests)."""

from __future__ import annotations

import subprocess
import sys

from tests.fixtures import ROOT, env


def bench(*args: str, timeout: float = 600) -> str:
    """`python bench/<args>` from the project root; its stdout and stderr, after checking exit 0."""
    cmd = [sys.executable, str(ROOT / "bench" / args[0]), *args[1:]]
    proc = subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(args)} exited {proc.returncode}:\n{out[-4000:]}"
    return out
