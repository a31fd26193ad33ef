"""Fixtures shared across test modules."""

from __future__ import annotations

from pathlib import Path

import pytest

from medmtl.data.synthetic import generate


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic ``tiny`` preset (seed 0), generated once per session; tests must not modify it."""
    out = tmp_path_factory.mktemp("tiny")
    generate(out, preset="tiny", seed=0)
    return out
