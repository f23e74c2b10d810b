"""One exception family for everything textclf raises on purpose, and one exit code per kind.

A stage (`python -m stages.<name>`) exits with the code of what stopped it, so a flow decides
from the exit code alone, as DVC reports it ("failed to run: ..., exited with N"), whether
another attempt could help:

| exit | kind | raised as | retried by a flow |
|---|---|---|---|
| 0 | success | | |
| 2 | usage error (argparse's own code) | | no |
| 3 | bad params: params.yaml or an override | `ParamsError` | no |
| 4 | an output broke its data contract | `ContractError` | no |
| 5 | unreadable input: missing file or column, bad format, tampered bundle | `InputError` | no |
| 70 | internal bug: any other exception (traceback logged) | anything else | no |
| 75 | temporary: the OS failed us (disk full, I/O error, out of memory) | `OSError`, `MemoryError` | yes |
| other | killed by a signal, or DVC itself failed | | yes |

This module imports nothing, so any layer can use it.
"""

from __future__ import annotations

from pathlib import Path

USAGE = 2
BAD_PARAMS = 3
CONTRACT = 4
BAD_INPUT = 5
INTERNAL = 70  # sysexits.h EX_SOFTWARE
TEMPORARY = 75  # sysexits.h EX_TEMPFAIL

PERMANENT_EXIT_CODES = frozenset({USAGE, BAD_PARAMS, CONTRACT, BAD_INPUT, INTERNAL})


class TextclfError(Exception):
    """Base of the family: a failure textclf detected and can explain in one message."""

    exit_code = INTERNAL
    retryable = False


class ParamsError(TextclfError, ValueError):
    """params.yaml (or an override) is missing, malformed, or has an unknown key / wrong type."""

    exit_code = BAD_PARAMS


class InputError(TextclfError, ValueError):
    """The user's input cannot be read as asked (missing file or column, bad format)."""

    exit_code = BAD_INPUT


class ContractError(TextclfError):
    """An artifact broke its pandera contract; every failure case is in `report`."""

    exit_code = CONTRACT

    def __init__(self, stage: str, summary: str, report: Path | None):
        where = f"\n(details: {report})" if report else ""
        super().__init__(f"{stage}: output violates its data contract:\n{summary}{where}")
        self.stage = stage
        self.summary = summary
        self.report = report


class StageError(TextclfError):
    """A stage failed in a way another attempt may fix (a signal, a full disk, DVC itself)."""

    exit_code = TEMPORARY
    retryable = True

    def __init__(self, stage: str, message: str):
        super().__init__(f"{stage}: {message}")
        self.stage = stage


class RunError(TextclfError):
    """A flow run cannot go on (repository busy or not promotable, a failed push): not retried."""


def exit_code_for(exc: BaseException) -> int:
    """The exit code a stage ends with when `exc` stops it."""
    if isinstance(exc, TextclfError):
        return exc.exit_code
    if isinstance(exc, OSError | MemoryError):
        return TEMPORARY
    return INTERNAL


def is_retryable(exc: BaseException | None) -> bool:
    """Whether a flow should try again after `exc`."""
    if exc is None:
        return False
    if isinstance(exc, TextclfError):
        return exc.retryable
    return exit_code_for(exc) not in PERMANENT_EXIT_CODES
