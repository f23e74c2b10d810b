"""textclf.errors + run_main: a stage exits with one code per kind of failure, and says why."""

import logging

import pytest

from textclf import errors
from textclf.artifacts import run_main
from textclf.errors import ContractError, InputError, ParamsError


def _raise(exc):
    def body():
        raise exc

    return body


@pytest.mark.parametrize(
    ("exc", "code", "traceback"),
    [
        (ParamsError("params.yaml: train.lr: Input should be a valid number"), 3, False),
        (ContractError("clean", "tokens: non_empty_lists failed for 1 value", None), 4, False),
        (InputError("data/raw: not found"), 5, False),
        (KeyError("a bug"), 70, True),
        (OSError(28, "No space left on device"), 75, True),
        (MemoryError(), 75, True),
    ],
)
def test_each_kind_exits_with_its_own_code(exc, code, traceback, caplog):
    with caplog.at_level(logging.ERROR), pytest.raises(SystemExit) as exit_info:
        run_main("stage", _raise(exc))
    assert exit_info.value.code == code == errors.exit_code_for(exc)
    assert caplog.records and str(exc)[:20] in caplog.text
    assert ("Traceback" in caplog.text) is traceback  # user errors: one message, no traceback
    assert errors.is_retryable(exc) is (code == errors.TEMPORARY)


def test_the_codes_are_distinct_and_leave_argparse_its_2():
    codes = [errors.BAD_PARAMS, errors.CONTRACT, errors.BAD_INPUT, errors.INTERNAL, errors.TEMPORARY]
    assert len(set(codes)) == len(codes) and errors.USAGE == 2 and 2 not in codes and 1 not in codes


def test_success_and_exit_requests_pass_through():
    run_main("stage", lambda: None)
    with pytest.raises(SystemExit) as exit_info:
        run_main("stage", _raise(SystemExit(0)))
    assert exit_info.value.code == 0
