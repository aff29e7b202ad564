"""Shared fixtures: where the real third-party assets live, and a loud failure in CI when they don't."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def assets_root() -> Path:
    return Path(os.environ.get("EDGESEG_ASSETS", REPO.parent / "shared" / "assets")).resolve()


@pytest.fixture(scope="session")
def assets_dir() -> Path:
    """The shared assets folder; tests that need it fail in CI (CI=true) when it is missing, else skip."""
    root = assets_root()
    if not (root / "MANIFEST.md").is_file():
        msg = f"shared assets not found at {root} (set EDGESEG_ASSETS)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return root


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO
