"""Shared fixtures for the library tests: seeded randomness and dtype-aware tolerances."""

from __future__ import annotations

import numpy as np
import pytest

from mininn._rng import manual_seed

# Agreement with an independent value (PyTorch, a hand computation): relative
# tolerance per dtype, and an absolute floor for elements that are near zero.
TOLERANCES = {
    np.dtype(np.float64): {"rtol": 1e-10, "atol": 1e-12},
    np.dtype(np.float32): {"rtol": 1e-5, "atol": 1e-6},
}


@pytest.fixture(autouse=True)
def _seed_package_generator():
    """Seed the package generator before every test, so each test is repeatable alone."""
    manual_seed(0)


@pytest.fixture
def rng() -> np.random.Generator:
    """A fresh generator with a fixed seed, for test inputs."""
    return np.random.default_rng(1234)


@pytest.fixture
def assert_close():
    """``assert_close(actual, expected)``: same dtype as ``actual`` expects, and values
    within that dtype's tolerance (float64 1e-10 relative, float32 1e-5)."""

    def check(actual, expected, dtype=None) -> None:
        actual = np.asarray(actual)
        dtype = np.dtype(dtype or actual.dtype)
        if dtype.kind == "f":
            np.testing.assert_allclose(actual, np.asarray(expected), **TOLERANCES[dtype])
        else:
            np.testing.assert_array_equal(actual, np.asarray(expected))

    return check
