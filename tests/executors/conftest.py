"""Fixtures for executor tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from .harness import Runs


@pytest.fixture
def runs(tmp_path: Path) -> Runs:
    return Runs(tmp_path)
