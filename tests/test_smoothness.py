"""smoothprobe.smoothness: Δ', η_max, the least K on Δ ≥ 0, the physical condition and rescaling against
closed forms and dense grids."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

from smoothprobe import smoothness
from smoothprobe.errors import SmoothprobeError
from smoothprobe.smoothness import (
    Constants,
    FStar,
    delta_peak,
    eta_max,
    is_physical,
    k_argmin,
    k_model,
    min_k,
)

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


@pytest.mark.parametrize("rho", [1.5, 2.0, 3.0])
def test_peak_and_eta_max_match_dense_grid(rho):
    c = Constants(0.7, 0.4, 1.3, rho)
    grid = np.geomspace(1e-4, 1e3, 2_000_001)
    eta = c.eta(grid)
    assert c.delta_peak == pytest.approx(grid[np.argmax(eta)], rel=1e-4)
    assert c.eta_max == pytest.approx(eta.max(), rel=1e-9)


def test_rho2_closed_forms_and_limits():
    c = Constants(2.0, 0.5, 8.0, 2.0)
    assert c.delta_peak == pytest.approx(np.sqrt(2.0 / 8.0), rel=1e-15)            # sqrt(K0/Kρ)
    assert c.eta_max == pytest.approx(1 / (0.5 + 2 * np.sqrt(2.0 * 8.0)), rel=1e-15)
    assert c.eta_max == pytest.approx(c.delta_peak / float(c.K(c.delta_peak)), rel=1e-15)  # Δ'/K(Δ')
    assert Constants(1e-4, 0.3, 1000.0, 2.0).eta_max == pytest.approx(1 / (0.3 + 2 * np.sqrt(0.1)), rel=1e-12)
    assert Constants(2.0, 0.0, 0.5, 3.0).delta_peak == pytest.approx((2.0 / (2 * 0.5)) ** (1 / 3), rel=1e-12)
    assert delta_peak(1.0, 0.0, 2.0) == np.inf
    assert eta_max(1.0, 0.5, 0.0, 2.0) == pytest.approx(2.0)   # sup is 1/K1 as Δ → ∞
    assert eta_max(0.0, 0.25, 1.0, 2.0) == pytest.approx(4.0)  # sup is 1/K1 as Δ → 0
    assert eta_max(1.0, -5.0, 1.0, 2.0) == np.inf              # K ≤ 0 somewhere on Δ > 0


def test_array_constants_agree_with_one_constants_each():
    k0, k1, k2 = np.array([1.0, 2.0]), np.array([0.5, -1.0]), np.array([4.0, 1.0])
    peaks, tops = delta_peak(k0, k2, 2.0), eta_max(k0, k1, k2, 2.0)
    for i in range(2):
        c = Constants(k0[i], k1[i], k2[i], 2.0)
        assert (c.delta_peak, c.eta_max) == (peaks[i], tops[i])


def test_peak_within_clips_the_peak_to_the_measured_gaps():
    c = Constants(1.0, 0.0, 1.0, 2.0)                    # Δ' = 1, η(Δ) = Δ/(1 + Δ²)
    assert c.peak_within(None) == (1.0, 0.5)
    assert c.peak_within((2.0, 4.0)) == (2.0, 0.4)       # Δ' below the range: its low end
    assert c.peak_within((0.25, 0.5)) == (0.5, 0.4)      # Δ' above the range: its high end
    assert c.peak_within((0.5, 2.0)) == (1.0, 0.5)       # inside: the peak itself


def test_rescaled_constants_keep_the_shape_and_peak_at_the_lr():
    c = Constants(2e-3, 0.7, 40.0, 2.0)
    scaled = c.rescaled(0.01)
    assert scaled.eta_max == pytest.approx(0.01, rel=1e-12) and scaled.delta_peak == pytest.approx(c.delta_peak)
    x = np.array([0.01, 0.1, 1.0, 3.0])
    np.testing.assert_allclose(scaled.eta(x), c.eta(x) * 0.01 / c.eta_max, rtol=1e-12)
    within = c.rescaled(0.01, (0.5, 3.0))                # Δ' = 0.00707 below the range: η(0.5) becomes 0.01
    assert float(within.eta(0.5)) == pytest.approx(0.01, rel=1e-12)
    assert c.rescaled(c.eta_max) == c
    with pytest.raises(SmoothprobeError, match="lr must be a finite number > 0"):
        c.rescaled(0.0)


def test_checked_refuses_constants_without_a_warm_up_peak():
    assert Constants(1.0, -1.999, 1.0, 2.0).checked().physical()
    for bad, reason in [((0.0, 1.0, 1.0, 2.0), "are not physical"), ((1.0, -2.0, 1.0, 2.0), "is 0"),
                        ((1.0, 1.0, 0.0, 2.0), "are not physical"), ((1.0, 1.0, 1.0, 1.0), "rho = 1 must be > 1"),
                        ((1.0, np.nan, 1.0, 2.0), "must be finite")]:
        assert reason in Constants(*bad).problem()
        with pytest.raises(SmoothprobeError, match="K0 > 0"):
            Constants(*bad).checked()


@pytest.mark.parametrize("value, expected", [
    ("auto", (None, "auto")), ("AUTO", (None, "auto")), (2, (2.0, "given")), ("-1.5", (-1.5, "given")),
])
def test_f_star_parses_a_number_or_auto_once(value, expected):
    got = FStar.parse(value)
    assert (got.value, got.source) == expected and got.auto == (expected[0] is None)
    assert FStar.parse(got) is got and FStar.parse(None) is None


@pytest.mark.parametrize("value", ["two", float("nan"), float("inf"), 1e13, True, [1.0]])
def test_f_star_refuses_what_is_not_a_finite_number_or_auto_and_names_it(value):
    with pytest.raises(SmoothprobeError, match="f_star must be") as err:
        FStar.parse(value)
    assert err.value.params == ("f_star",)
