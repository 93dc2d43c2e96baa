"""smoothprobe.smoothness: the least K on Δ ≥ 0 and the physical condition against closed forms."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

from smoothprobe import smoothness
from smoothprobe.errors import SmoothprobeError
from smoothprobe.smoothness import is_physical, k_argmin, k_model, min_k

GRID = np.concatenate([[0.0], np.geomspace(1e-6, 1e3, 400_001)])


def test_doctests():
    assert doctest.testmod(smoothness).failed == 0


@pytest.mark.parametrize("rho", [1.25, 1.5, 2.0, 3.0, 4.0])
@pytest.mark.parametrize("constants", [(1.0, 2.0, 3.0), (1.0, -1.0, 1.0), (0.5, -4.0, 2.0),
                                       (2e5, -1.5e6, 2.5e6), (0.0, -1.1e6, 2.4e6)])
def test_min_k_is_the_least_k_on_a_dense_grid(constants, rho):
    values = k_model(GRID, *constants, rho)
    assert min_k(*constants, rho) == pytest.approx(values.min(), rel=1e-7, abs=1e-9)
    at = k_argmin(*constants, rho)
    assert at == pytest.approx(GRID[np.argmin(values)], rel=1e-3, abs=1e-6)


def test_rho2_least_k_and_physical_condition_match_the_closed_form():
    rng = np.random.default_rng(0)
    k0, k1, k2 = rng.uniform(-1, 2, 10_000), rng.uniform(-5, 3, 10_000), rng.uniform(-1, 3, 10_000)
    inner = np.where(k1 < 0, k0 - k1**2 / (4 * k2), k0)
    expected = np.where(k2 < 0, -np.inf, inner)
    np.testing.assert_allclose(min_k(k0, k1, k2, 2.0), expected, rtol=1e-12)
    closed = (k0 > 0) & (k2 > 0) & (k1 > -2 * np.sqrt(np.maximum(k0, 0) * np.maximum(k2, 0)))
    np.testing.assert_array_equal(is_physical(k0, k1, k2, 2.0), closed)


def test_boundaries_and_limits():
    assert min_k(1.0, -2.0, 1.0, 2.0) == 0.0             # K1 = −2·sqrt(K0·Kρ): K(1) = 0
    assert not is_physical(1.0, -2.0, 1.0, 2.0)
    assert is_physical(1.0, -1.999, 1.0, 2.0)
    assert min_k(1.0, -1.0, 0.0, 2.0) == -np.inf         # K1 < 0 = Kρ: falls without bound
    assert k_argmin(1.0, -1.0, 0.0, 2.0) == np.inf
    assert min_k(1.0, 1.0, -1e-9, 2.0) == -np.inf        # Kρ < 0: eventually negative
    assert min_k(3.0, 0.5, 0.0, 2.0) == 3.0 and not is_physical(3.0, 0.5, 0.0, 2.0)  # no Δ'
    assert is_physical(1.0, 0.0, 1.0, 2.0, floor=0.99) and not is_physical(1.0, 0, 1.0, 2.0, 1.0)
    assert not is_physical(np.nan, 1.0, 1.0, 2.0) and not is_physical(1.0, 1.0, np.inf, 2.0)
    # K0 = 0, K1 = −1.1e6, Kρ = 2.4e6 (a Lion run's unconstrained envelope): K < 0 on (0, 0.46)
    assert min_k(0.0, -1.1e6, 2.4e6, 2.0) == pytest.approx(-1.1e6**2 / (4 * 2.4e6))
    with pytest.raises(SmoothprobeError, match="rho must be > 1"):
        min_k(1.0, 1.0, 1.0, 1.0)


def test_physical_constants_give_a_finite_peak():
    k0, k1, k2 = 1.0, -1.9, 1.0
    assert is_physical(k0, k1, k2, 2.0)
    peak, top = smoothness.delta_peak(k0, k2, 2.0), smoothness.eta_max(k0, k1, k2, 2.0)
    assert 0 < peak < np.inf and top == pytest.approx(1 / (k1 + 2 * np.sqrt(k0 * k2)))
