from __future__ import annotations

import pytest

from tests.fixtures import make_docs, make_repo


@pytest.fixture()
def fixture_docs():
    return make_docs()


@pytest.fixture()
def fixture_repo(tmp_path):
    """A temp copy of the project with a small fixture corpus in data/raw (git + DVC inited)."""
    return make_repo(tmp_path / "repo")
