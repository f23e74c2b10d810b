"""How long a waiting flow run takes to get the repository's slot once its holder lets go:
`flows.repolock.run_slot` (Prefect's `concurrency()`, plus the file lock underneath, the lease
record and the reclaim of a killed holder's slot) against Prefect's bare `concurrency()` on the
same kind of limit, on one local Prefect server (flows.prefect_server, a fresh PREFECT_HOME).

For each round a holder process takes the slot, holds it `--hold` seconds and lets go; this
process, waiting meanwhile, measures from the release to getting the slot. Both wait as the
server's 423 answers pace them (`Retry-After`); the ratio shows what textclf's additions cost.

    .venv/bin/python bench/slot_wait.py                  # 3 rounds, each holding 8 s
    .venv/bin/python bench/slot_wait.py --rounds 1 --hold 1

Prints each way's waits, their medians and the ratio (concurrency() / run_slot).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


HOLDER = """
import sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from slot_wait import slot
with slot(sys.argv[4], Path(sys.argv[2]), "holder"):
    print("held", flush=True)
    time.sleep(float(sys.argv[3]))
    print(time.time(), flush=True)
"""


def slot(way: str, repo: Path, what: str):
    """The repository's slot, taken `way`: textclf's `run_slot`, or Prefect's bare `concurrency()`."""
    from flows import repolock

    if way == "run_slot":
        return repolock.run_slot(repo, 120, what)
    from prefect.concurrency.sync import concurrency

    return concurrency(repolock.slot_name(repo), timeout_seconds=120, lease_duration=60)


def _round(way: str, repo: Path, hold_s: float) -> float:
    """Seconds from a holder process's release to this process holding the slot."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(ROOT / "bench"), str(repo), str(hold_s), way],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held", "the holder never got the slot"
    with slot(way, repo, "waiter"):
        got = time.time()
    released = float(holder.stdout.readline())
    assert holder.wait(60) == 0
    return got - released


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3, help="rounds per way (default 3)")
    p.add_argument("--hold", type=float, default=8.0, help="seconds the holder keeps the slot (default 8)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="textclf-slot-") as tmp:
        os.environ["PREFECT_HOME"] = str(Path(tmp) / "home")
        os.environ.pop("PREFECT_API_URL", None)
        os.environ.pop("TEXTCLF_PREFECT_SERVER", None)
        from flows import prefect_server, repolock  # after PREFECT_HOME is set

        try:
            with prefect_server.local_server_settings():
                figures = {}
                for way in ("run_slot", "concurrency()"):
                    repo = Path(tmp) / way.strip("()")
                    (repo / ".dvc" / "tmp").mkdir(parents=True)
                    with repolock.run_slot(repo, 10, "create the limit"):
                        pass
                    waits = []
                    for _ in range(args.rounds):
                        waits.append(_round(way, repo, args.hold))
                    figures[way] = statistics.median(waits)
                    print(f"{way:14s} waits {', '.join(f'{w:.2f}' for w in waits)} s after the release", flush=True)
        finally:
            prefect_server.stop()
    ours_s, theirs_s = figures["run_slot"], figures["concurrency()"]
    print(f"median: run_slot {ours_s:.2f} s, concurrency() {theirs_s:.2f} s; ratio {theirs_s / max(ours_s, 1e-3):.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
