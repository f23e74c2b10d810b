"""Threads for one stage's batch work.

Arrow compute kernels, NumPy and the Parquet reader/writer release the GIL, so a batch cut into
contiguous slices runs on every core the process may use, and the results are joined back in
order: the output is the same for any number of threads. Small batches (prediction, tests) stay
on the calling thread.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa

MIN_ROWS = 20_000  # below this many rows a slice is not worth a thread


def thread_count() -> int:
    """The cores this process may run on (its CPU affinity, which containers and taskset limit)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def map_threads(fn: Callable, items: Iterable, threads: int | None = None) -> list:
    """[fn(item) for item in items], on up to `threads` threads, results in item order."""
    items = list(items)
    n = min(threads or thread_count(), len(items))
    if n <= 1:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(max_workers=n, thread_name_prefix="textclf") as pool:
        return list(pool.map(fn, items))


def map_slices(fn: Callable[[pa.Array], pa.Array], arr: pa.Array, threads: int | None = None) -> pa.Array:
    """fn(arr), computed as fn over contiguous slices of `arr` on several threads and concatenated;
    `fn` must work row by row (a row's result depends on that row only)."""
    n = min(threads or thread_count(), len(arr) // MIN_ROWS)
    if n <= 1:
        return fn(arr)
    bounds = [len(arr) * i // n for i in range(n + 1)]
    parts = map_threads(lambda ab: fn(arr.slice(ab[0], ab[1] - ab[0])), zip(bounds[:-1], bounds[1:], strict=True), n)
    return pa.concat_arrays(parts)
