"""Shared fixtures for the library tests: seeded randomness and dtype-aware tolerances."""

from __future__ import annotations

import numpy as np
import pytest

from mininn._rng import manual_seed

EPS32 = float(np.finfo(np.float32).eps)  # 2**-23

# Agreement with an independent value (PyTorch, a hand computation) of a layer, loss,
# activation, small network or clipping on small inputs: relative tolerance per dtype,
# and an absolute floor for elements near zero. float32: a sum of k terms is off by
# <~ k eps32, and no path here rounds more than 64 times (a sum of <= 32 terms, or a
# few layers of <= 8 inputs), on each of the 2 sides: rtol 128 eps32 (1.5e-5). An
# element near zero keeps the absolute error of the terms that cancelled in it, about
# as large as the result's largest values: atol 16 eps32 times max(1, max |expected|).
TOLERANCES = {
    np.dtype(np.float64): {"rtol": 1e-10, "atol": 1e-12},
    np.dtype(np.float32): {"rtol": 128 * EPS32, "atol": 16 * EPS32},
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
    within that dtype's tolerance (float64 1e-10 relative; float32 128 eps32 = 1.5e-5
    relative, 16 eps32 times the expected values' scale, at least 1, absolute)."""

    def check(actual, expected, dtype=None) -> None:
        actual, expected = np.asarray(actual), np.asarray(expected)
        dtype = np.dtype(dtype or actual.dtype)
        if dtype.kind == "f":
            rtol, atol = TOLERANCES[dtype]["rtol"], TOLERANCES[dtype]["atol"]
            if dtype == np.float32:
                atol *= max(1.0, float(np.nanmax(np.abs(expected), initial=0.0)))
            np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)
        else:
            np.testing.assert_array_equal(actual, np.asarray(expected))

    return check
