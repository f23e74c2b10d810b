from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True, scope="module")
def _run_in_a_temp_dir(tmp_path_factory):
    """Stage code writes relative paths (reports/validation/<stage>.json on a broken contract):
    run every test from a temp directory so nothing lands in the checkout."""
    old = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    yield
    os.chdir(old)
