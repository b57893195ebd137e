"""Shared fixtures. Real data comes from ../shared/data (read-only in CI: copy before modifying)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (the real benchmark and samples); fails loudly if it is not there."""
    assert SHARED_DATA.is_dir(), f"{SHARED_DATA} is missing: the tests need ../shared/data beside the repo"
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_backbone():
    """The ``tiny`` CogVideoX preset (seeded random weights), built once per test session.

    Tests must not modify it in place (methods attach adapters to their own copies).
    """
    from dualreal.backbone import load_backbone

    return load_backbone("tiny")
