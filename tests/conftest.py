"""Shared test set-up."""

from __future__ import annotations

import zlib

import numpy as np
import pytest


@pytest.fixture(autouse=True)
def _reseed_module_rng(request):
    """A test module's `RNG` is reseeded from the test's id before each test, so a test draws the
    same inputs whichever tests ran before it in its pytest-xdist worker (CI once failed on a draw
    that no local run had made)."""
    module = request.module
    if module is not None and isinstance(getattr(module, "RNG", None), np.random.Generator):
        module.RNG = np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))
    yield
