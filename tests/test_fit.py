"""smoothprobe.fit against planted envelopes, closed forms and exact LP answers."""

from __future__ import annotations

import json
import warnings
from types import SimpleNamespace

import numpy as np
import pandas as pd
import planted
import pytest

from smoothprobe.errors import SmoothprobeError
from smoothprobe.fit import (
    SmoothnessFit,
    estimate_f_star,
    fit_frame,
    fit_run,
    schedule_problem_of,
)
from smoothprobe.fit.bootstrap import block_length, bootstrap_envelope, circular_block_counts
from smoothprobe.fit.compare import CAUSES, ModelScore, trend_test, verdict
from smoothprobe.fit.data import FitData
from smoothprobe.fit.models import POSITIVITY_FLOOR, envelope, rho_design, select_rho, time_folds
from smoothprobe.fit.quantile import BandedQuantileLP, _solve_dual, pinball, quantile_regression
from smoothprobe.fit.schema import upgrade_fit
from smoothprobe.fit.vertex import descend
from smoothprobe.smoothness import delta_peak, eta_max, is_physical, k_model, min_k

PLANTED = (1.0, 2.0, 3.0)
TAU = 0.9
U_LOW = 0.7
Q_U = U_LOW + (1 - U_LOW) * TAU  # τ-quantile of U ~ Uniform(U_LOW, 1)


def planted_steps(n: int, seed: int, **kwargs) -> pd.DataFrame:
    """Steps under the planted envelope PLANTED·U, U ~ Uniform(U_LOW, 1) (see tests/planted.py)."""
    return planted.planted_steps(n, seed, constants=PLANTED, u_low=U_LOW, **kwargs)


# the LP -------------------------------------------------------------------------------------

def test_intercept_only_is_the_empirical_quantile():
    y = np.random.default_rng(0).normal(size=101)
    beta = quantile_regression(np.ones((101, 1)), y, 0.9)
    assert beta[0] == pytest.approx(np.sort(y)[90], abs=1e-9)


def test_integer_weights_equal_repeated_rows():
    rng = np.random.default_rng(1)
    x = np.column_stack([np.ones(200), rng.uniform(size=200)])
    y = x @ [1.0, 2.0] + rng.normal(size=200)
    w = rng.integers(0, 4, size=200).astype(float)
    rows = np.repeat(np.arange(200), w.astype(int))
    a = quantile_regression(x, y, 0.75, weights=w)
    b = quantile_regression(x[rows], y[rows], 0.75)
    np.testing.assert_allclose(a, b, atol=1e-7)


def test_banded_solution_is_exact():
    steps = planted_steps(20_000, 3)
    delta = steps["loss"].to_numpy() - 2.0
    d = rho_design(delta, steps["secant_K"].to_numpy(), 2.0)
    direct = _solve_dual(d.x, d.y, np.ones(len(d.y)), TAU, d.g, d.h, np.zeros(3))
    banded = quantile_regression(d.x, d.y, TAU, g=d.g, h=d.h)
    np.testing.assert_allclose(banded, direct, atol=1e-7)
    counts = circular_block_counts(len(d.y), 50, np.random.default_rng(0))
    reweighted = BandedQuantileLP(d.x, d.y, TAU, d.g, d.h, banded).solve(counts, band=1e-4)[0]
    live = counts > 0
    exact = _solve_dual(d.x[live], d.y[live], counts[live], TAU, d.g, d.h, np.zeros(3))
    np.testing.assert_allclose(reweighted, exact, atol=1e-7)


@pytest.mark.parametrize("seed", range(6))
def test_vertex_walk_reaches_the_lp_optimum_from_afar_under_active_constraints(seed):
    """descend from a far start equals HiGHS on the dual, with a linear term c and bounds Gβ ≥ h
    that bind (the unconstrained curvature of this data is negative)."""
    rng = np.random.default_rng(seed)
    t = rng.uniform(0, 1, 3000)
    x = np.column_stack([np.ones_like(t), t, t**2])
    y = 1.0 + 2.0 * t - 3.0 * t**2 + rng.standard_t(3, t.size)
    w = rng.integers(1, 4, t.size).astype(float)
    g = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    h = np.array([0.1, 0.2, 0.0])
    c = rng.normal(0, 2, 3)   # the fixed rows' linear term of a banded problem
    got = descend(x, y, w, TAU, g, h, c, np.array([5.0, -3.0, 4.0]))
    want = _solve_dual(x, y, w, TAU, g, h, c)
    assert got is not None
    assert got[2] == pytest.approx(0.2)   # the curvature bound binds
    np.testing.assert_allclose(got, want, atol=1e-7)


@pytest.mark.parametrize("p", [1, 2])
def test_vertex_walk_with_one_or_two_coefficients_equals_the_lp(p):
    """The comparison models' shapes: a constant L (the weighted τ-quantile) and (L0, L1), both
    nonnegative."""
    rng = np.random.default_rng(p)
    x = np.column_stack([np.ones(2000), rng.uniform(0.5, 3.0, 2000)])[:, :p]
    y = x @ np.array([1.0, 2.0])[:p] * rng.uniform(U_LOW, 1.0, 2000)
    w = rng.integers(1, 5, 2000).astype(float)
    got = descend(x, y, w, TAU, np.eye(p), np.zeros(p), np.zeros(p), np.ones(p))
    np.testing.assert_allclose(got, _solve_dual(x, y, w, TAU, np.eye(p), np.zeros(p), np.zeros(p)),
                               atol=1e-9)


def test_vertex_walk_declines_a_start_outside_the_constraints():
    x = np.column_stack([np.ones(50), np.linspace(0, 1, 50)])
    assert descend(x, x[:, 1], np.ones(50), TAU, np.array([[0.0, 1.0]]), np.array([1.0]),
                   np.zeros(2), np.zeros(2)) is None


# envelope, ρ, f* ----------------------------------------------------------------------------

def test_envelope_constants_within_5_percent():
    fit = fit_frame(planted_steps(5000, 0), f_star=2.0, bootstrap=0)
    got = np.array([fit.K0, fit.K1, fit.K_rho])
    np.testing.assert_allclose(got, Q_U * np.array(PLANTED), rtol=0.05)
    assert fit.status == "supported"
    assert fit.comparison[-1]["coverage"] == pytest.approx(TAU, abs=0.02)


def test_planted_rho_2_beats_1p5_and_3():
    steps = planted_steps(4000, 1)
    delta, k = steps["loss"].to_numpy() - 2.0, steps["secant_K"].to_numpy()
    rho, profile = select_rho(delta, k, TAU, (1.5, 2.0, 3.0), time_folds(len(k), 20))
    assert rho == 2.0
    assert profile[2.0] < min(profile[1.5], profile[3.0])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_f_star_auto_on_a_saturating_curve(seed):
    rng = np.random.default_rng(seed)
    t = np.arange(5000)
    loss = 2.0 + 3.0 * (t + 50.0) ** -0.5 + rng.normal(0, 0.05, t.size)
    est = estimate_f_star(t, loss)
    assert abs(est.value - 2.0) < 0.05
    assert est.interval[0] <= est.value <= est.interval[1]
    assert est.degenerate is None


# bootstrap ----------------------------------------------------------------------------------

def test_circular_block_counts_draw_n_rows_in_wrapped_blocks():
    counts = circular_block_counts(103, 10, np.random.default_rng(0))
    assert counts.sum() == 103
    one = circular_block_counts(10, 10, np.random.default_rng(5))
    np.testing.assert_array_equal(one, np.ones(10))  # one block covering the circle


def test_block_length_grows_with_autocorrelation():
    rng = np.random.default_rng(0)
    white = rng.normal(size=10_000)
    ar = np.empty_like(white)
    ar[0] = white[0]
    for i in range(1, len(ar)):
        ar[i] = 0.9 * ar[i - 1] + white[i]
    assert block_length(white) <= 2
    expected = (2 * 0.9 / (1 - 0.81)) ** (2 / 3) * 10_000 ** (1 / 3)
    assert block_length(ar) == pytest.approx(expected, rel=0.15)


def test_bootstrap_intervals_cover_planted_values():
    fit = fit_frame(planted_steps(3000, 4), f_star=2.0, bootstrap=100, seed=1)
    for name, value in zip(("K0", "K1", "K_rho"), PLANTED):
        lo, hi = fit.intervals[name]
        assert lo <= Q_U * value <= hi
    lo, hi = fit.intervals["delta_peak"]
    assert lo <= fit.delta_peak <= hi


@pytest.mark.slow
def test_bootstrap_coverage_at_least_85_of_100():
    truth = dict(zip(("K0", "K1", "K_rho"), Q_U * np.array(PLANTED)))
    truth["delta_peak"] = float(delta_peak(truth["K0"], truth["K_rho"], 2.0))
    truth["eta_max"] = float(eta_max(truth["K0"], truth["K1"], truth["K_rho"], 2.0))
    hits = dict.fromkeys(truth, 0)
    for rep in range(100):
        fit = fit_frame(planted_steps(2000, 100 + rep), f_star=2.0, bootstrap=200, seed=rep)
        for name, value in truth.items():
            lo, hi = fit.intervals[name]
            hits[name] += lo <= value <= hi
    assert min(hits.values()) >= 85, hits


# model comparison, result object -------------------------------------------------------------

def test_flat_k_is_not_supported_and_l0l1_is_compared():
    rng = np.random.default_rng(2)
    steps = planted_steps(3000, 2)
    grad = rng.uniform(0.5, 3.0, len(steps))
    steps["grad_norm_dual"] = grad
    steps["secant_K"] = (1.0 + 2.0 * grad) * rng.uniform(U_LOW, 1.0, len(steps))
    fit = fit_frame(steps, f_star=2.0, bootstrap=0)
    assert fit.status == "not supported"
    l0l1 = fit.comparison[1]
    assert l0l1["skipped"] is None
    np.testing.assert_allclose([l0l1["params"]["L0"], l0l1["params"]["L1"]],
                               [Q_U * 1.0, Q_U * 2.0], rtol=0.1)
    assert l0l1["cv_pinball"] < fit.comparison[-1]["cv_pinball"]
    assert "(L0, L1)" in fit.verdict


def test_json_round_trip_and_table(tmp_path):
    steps = planted_steps(2000, 5)
    steps.loc[:9, "loss"] = 1.5          # Δ < 0: dropped and counted
    steps.loc[10:14, "secant_K"] = np.nan
    fit = fit_frame(steps, f_star=2.0, bootstrap=30, window=(0, 1900))
    assert fit.data["dropped_nonpositive_delta"] == 10 and fit.data["dropped_nan"] == 5
    assert fit.window == (0, 1899) and fit.data["rows_used"] == 1900 - 15
    path = tmp_path / "fit.json"
    fit.to_json(path)
    raw = json.loads(path.read_text())
    assert raw["schema_version"] == 2
    assert raw["status_cause"] == "beats constant L" and raw["status_reason"] in raw["verdict"]
    assert set(raw["constants"]) == {"rho", "K0", "K1", "K_rho"}
    for key in ("f_star", "delta_peak", "eta_max", "delta_range", "window"):
        assert key in raw
    assert raw["delta_range"][0] == pytest.approx(fit.delta_range[0])
    back = SmoothnessFit.from_json(path)
    assert back.to_dict() == fit.to_dict() and back.K_rho == fit.K_rho
    table = back.summary_table()
    assert "K_rho" in table and "eta_max" in table and fit.verdict in table
    assert fit.status == "supported" and table.endswith(fit.verdict)


def test_auto_rho_and_f_star_report_profile_and_band():
    steps = planted_steps(3000, 6)
    fit = fit_frame(steps, f_star="auto", rho="auto", bootstrap=0)
    assert fit.f_star_source == "auto" and set(fit.rho_profile) == {1.25, 1.5, 1.75, 2.0,
                                                                     2.5, 3.0, 3.5, 4.0}
    assert fit.rho == min(fit.rho_profile, key=fit.rho_profile.get)
    assert len(fit.sensitivity) == 5
    assert fit.sensitivity[2]["f_star"] == pytest.approx(fit.f_star)


def test_fit_run_takes_f_star_from_the_task():
    run = SimpleNamespace(steps=planted_steps(1000, 7), info={"task": {"f_star": 2.0}})
    assert fit_run(run, bootstrap=0).f_star_source == "task"
    run.info = {"task": {"f_star": None}}  # unknown: estimated from the loss curve, with a note
    with pytest.warns(UserWarning, match="f\\* is unknown"):
        fit = fit_run(run, bootstrap=0)
    assert fit.f_star_source == "auto" and fit.f_star == pytest.approx(2.0, abs=0.1)


# bad input ----------------------------------------------------------------------------------

@pytest.mark.parametrize("change, kwargs, message", [
    (lambda s: s.drop(columns="secant_K"), {}, "no probe columns"),
    (lambda s: s.head(20), {}, "too few points"),
    (lambda s: s.assign(secant_K=np.nan), {}, "all NaN"),
    (lambda s: s, {"window": (5000, 6000)}, "does not overlap the run's steps"),
    (lambda s: s, {"window": (5000, None)}, "window 5000: does not overlap"),  # no "None" shown
    (lambda s: s, {"window": (50, 10)}, "window 50:10 is empty: its start must be below its end"),
    (lambda s: s, {"f_star": 100.0}, "f\\* = 100 is not below the losses .* give an f\\* below them"),
    (lambda s: s.assign(curv_fd=1.0), {"column": "nope"}, "unknown column"),
    (lambda s: s, {"column": "step"}, "column 'step' is not a curvature a probe measures; the fit takes one of"),
    (lambda s: s, {"rho": 0.5}, "rho must be"),
    (lambda s: s, {"quantile": 1.5}, "quantile must be"),
    (lambda s: s, {"f_star": "guess"}, "f_star must be"),
])
def test_bad_input_raises_one_line(change, kwargs, message):
    steps = change(planted_steps(500, 8))
    args = {"f_star": 2.0, "bootstrap": 0, **kwargs}
    with pytest.raises(SmoothprobeError, match=message) as err:
        fit_frame(steps, **args)
    assert "\n" not in str(err.value)


# f* auto: interval honesty, plateaus, a recorded markov run -----------------------------------

def test_f_star_interval_covers_planted_value_at_about_the_nominal_rate():
    t = np.arange(3000)
    hits = 0
    for seed in range(20):
        rng = np.random.default_rng(100 + seed)
        est = estimate_f_star(t, 2.0 + 3.0 * (t + 50.0) ** -0.5 + rng.normal(0, 0.05, t.size))
        hits += est.interval[0] <= 2.0 <= est.interval[1]
    assert hits >= 16  # 95% nominal; P(hits < 16) < 0.02 if coverage were exact


def test_f_star_on_a_fast_drop_then_plateau_lands_at_the_plateau_below_its_smoothed_loss():
    # the shape of a small model learning a Markov chain: a fast drop, then noise around f*
    rng = np.random.default_rng(3)
    t = np.arange(400)
    loss = 0.95 + 1.1 * np.exp(-t / 8.0) + rng.normal(0, 0.045, t.size)
    est = estimate_f_star(t, loss)
    assert abs(est.value - 0.95) < 0.02
    assert est.interval[0] <= 0.95 <= est.interval[1]
    assert est.value <= min(b.mean() for b in np.array_split(loss, 10))


def test_f_star_without_saturation_reports_the_whole_range():
    rng = np.random.default_rng(4)
    t = np.arange(2000)
    est = estimate_f_star(t, 5.0 - t / 1e3 + rng.normal(0, 0.02, t.size))
    assert "runs into f* = 0" in est.degenerate and "no saturation" in est.degenerate
    assert est.interval[0] == 0.0
    assert est.interval[1] == pytest.approx(3.0 + 0.1, abs=0.05)  # f* <= the final tenth's mean


@pytest.mark.slow  # ~25 s on an idle 2-core machine, over 60 s under load
def test_f_star_auto_on_a_recorded_markov_run_is_within_0p05_of_the_entropy_rate(tmp_path):
    from smoothprobe import TrainConfig, load_run, train

    cfg = TrainConfig(task="markov", batch_size=16, seq_len=32, steps=120, optimizer="adamw",
                      lr=3e-3, warmup=0.05, task_options={"vocab": 8, "order": 1},
                      eval_every=1000, checkpoint_every=1000, flush_every=60)
    run = load_run(train(cfg, tmp_path / "run", progress=False))
    est = estimate_f_star(run.steps["step"].to_numpy(), run.steps["loss"].to_numpy())
    assert abs(est.value - run.f_star) <= 0.05
    assert est.interval[0] <= run.f_star <= est.interval[1]


# physical envelopes: K(Δ) > 0 on every Δ ≥ 0 ------------------------------------------------

def rising_to_zero_steps(n: int = 300, seed: int = 0) -> pd.DataFrame:
    """K = 10·(Δ − 0.9)·U on Δ in (1, 1.3]: a line that would cross 0 at Δ = 0.9, so the best
    envelope with K0, Kρ ≥ 0 alone goes negative below Δ = 1."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    delta = 1.0 + 0.3 * np.exp(-t / 100)
    k = 10 * (delta - 0.9) * rng.uniform(U_LOW, 1.0, n)
    return pd.DataFrame({"step": t, "loss": 2.0 + delta, "secant_K": k})


def test_envelope_of_k_rising_to_zero_is_physical_and_optimal_over_the_physical_set():
    steps = rising_to_zero_steps()
    delta, k = steps["loss"].to_numpy() - 2.0, steps["secant_K"].to_numpy()
    d = rho_design(delta, k, 2.0)
    # the old constraint set (K0, Kρ ≥ 0 and K > 0 on the observed range only) is not physical
    old = d.constants(quantile_regression(d.x, d.y, TAU, g=np.vstack([np.eye(3)[[0, 2]], d.g[2:]]),
                                          h=np.zeros(len(d.g))))
    assert min_k(*old, 2.0) < -1.0
    fit = fit_frame(steps, f_star=2.0, bootstrap=50)
    got = np.array([fit.K0, fit.K1, fit.K_rho])
    floor = POSITIVITY_FLOOR * d.k_scale
    assert is_physical(*got, 2.0) and min_k(*got, 2.0) >= 0.5 * floor
    assert 0 < fit.delta_peak < np.inf and 0 < fit.eta_max < np.inf
    assert fit.delta_peak == pytest.approx(np.sqrt(fit.K0 / fit.K_rho))
    boot = fit.bootstrap_constants
    assert boot.shape == (50, 3) and is_physical(*boot.T, 2.0).all()
    # optimality: a dense-grid LP (K ≥ floor at 20001 gaps in [0, 3]·max Δ) is the same program
    # up to the grid, so its pinball loss brackets ours tightly
    x = np.linspace(0, 3, 20_001)
    g = np.vstack([d.g, np.column_stack([np.ones_like(x), x, x**2])])
    dense = quantile_regression(d.x, d.y, TAU, g=g, h=np.full(len(g), POSITIVITY_FLOOR))
    ours = got / d.constants(np.ones(3))
    assert pinball(d.y - d.x @ ours, TAU) == pytest.approx(pinball(d.y - d.x @ dense, TAU),
                                                           rel=1e-6)
    assert min_k(*d.constants(dense), 2.0) > 0


def test_every_bootstrap_refit_is_physical_on_a_large_banded_problem():
    steps = rising_to_zero_steps(6000, 1)   # over DIRECT_MAX_ROWS: warm-started banded LPs
    delta, k = steps["loss"].to_numpy() - 2.0, steps["secant_K"].to_numpy()
    d = rho_design(delta, k, 2.0)
    constants = envelope(d, TAU)
    assert is_physical(*constants, 2.0)
    boot = bootstrap_envelope(d, constants / d.constants(np.ones(3)), TAU, 30, 20, 0)
    assert is_physical(*boot.T, 2.0).all()
    assert min_k(*boot.T, 2.0).min() >= 0.5 * POSITIVITY_FLOOR * d.k_scale


def test_a_lion_run_fit_with_k_negative_near_zero_must_not_drive_a_schedule():
    fit = fit_frame(planted_steps(500, 10), f_star=2.0, bootstrap=0)
    fit.K0, fit.K1, fit.K_rho = 0.0, -1.1e6, 2.4e6   # `smoothprobe fit` gave these before
    problem = fit.schedule_problem()
    assert problem.startswith("K0 = 0, K1 = -1.1e+06, K_rho = 2.4e+06 are not physical")
    assert f"{-1.1e6**2 / (4 * 2.4e6):.4g}" in problem


# the fit's own bootstrap band; schedule_problem --------------------------------------------

def test_band_is_the_pointwise_percentile_of_the_stored_refits(tmp_path):
    fit = fit_frame(planted_steps(1500, 11), f_star=2.0, bootstrap=40, seed=2)
    boot = fit.bootstrap_constants
    grid = np.geomspace(*fit.delta_range, 7)
    low, high = fit.band(grid)
    ranked = np.sort(np.array([k_model(grid, *c, 2.0) for c in boot]), axis=0)
    # 95% of 40 refits: positions 39·0.025 = 0.975 and 39·0.975 = 38.025 between order statistics
    np.testing.assert_allclose(low, ranked[0] + 0.975 * (ranked[1] - ranked[0]), rtol=1e-12)
    np.testing.assert_allclose(high, ranked[38] + 0.025 * (ranked[39] - ranked[38]), rtol=1e-12)
    assert np.all(low <= fit.predict(grid)) and np.all(fit.predict(grid) <= high)
    narrow = fit.band(grid, level=0.5)   # positions 9.75 and 29.25
    np.testing.assert_allclose(narrow[0], ranked[9] + 0.75 * (ranked[10] - ranked[9]), rtol=1e-12)
    np.testing.assert_allclose(narrow[1], ranked[29] + 0.25 * (ranked[30] - ranked[29]),
                               rtol=1e-12)
    assert fit.band(1.0)[0].shape == ()
    fit.to_json(tmp_path / "fit.json")
    back = SmoothnessFit.from_json(tmp_path / "fit.json")
    np.testing.assert_array_equal(back.band(grid)[1], high)
    with pytest.raises(SmoothprobeError, match="level must be in"):
        fit.band(grid, level=1.0)


def test_a_fit_json_without_stored_refits_still_loads_and_has_no_band(tmp_path):
    fit = fit_frame(planted_steps(800, 12), f_star=2.0, bootstrap=10)
    raw = fit.to_dict()
    del raw["bootstrap"]["constants"]   # written before the refits were stored
    old = SmoothnessFit.from_dict(raw)
    assert old.bootstrap_constants is None and old.intervals == fit.intervals
    with pytest.raises(SmoothprobeError, match="no bootstrap refits"):
        old.band(np.ones(3))
    assert fit_frame(planted_steps(800, 12), f_star=2.0, bootstrap=0).bootstrap_constants is None


def test_schedule_problem_of_a_supported_fit_is_none_and_matches_the_dict():
    fit = fit_frame(planted_steps(3000, 0), f_star=2.0, bootstrap=0)
    assert fit.status == "supported"
    assert fit.schedule_problem() is None and schedule_problem_of(fit.to_dict()) is None


GOOD = {"constants": {"rho": 2.0, "K0": 1.0, "K1": 0.5, "K_rho": 2.0}, "f_star": 1.0,
        "delta_peak": 0.7071, "eta_max": 0.3, "status": "supported"}


@pytest.mark.parametrize("change, reason", [
    (lambda d: None, "not a JSON object (got NoneType)"),
    (lambda d: [1, 2], "not a JSON object (got list)"),
    (lambda d: {k: v for k, v in d.items() if k != "constants"}, "no 'constants' object"),
    (lambda d: {**d, "constants": [1.0, 2.0]}, "no 'constants' object"),
    (lambda d: {**d, "constants": {"rho": 2.0}}, "constants K0, K1, K_rho are missing"),
    (lambda d: {**d, "constants": {**d["constants"], "K1": "0.5"}}, "constants K1 are missing"),
    (lambda d: {**d, "constants": {**d["constants"], "K0": None}}, "constants K0 are missing"),
    (lambda d: {**d, "constants": {**d["constants"], "K_rho": float("inf")}}, "K_rho are missing"),
    (lambda d: {**d, "constants": {**d["constants"], "K0": True}}, "constants K0 are missing"),
    (lambda d: {**d, "constants": {**d["constants"], "rho": 1}}, "rho = 1 must be > 1"),
    (lambda d: {**d, "constants": {**d["constants"], "K1": -3.0}}, "are not physical"),
    (lambda d: {**d, "constants": {**d["constants"], "K0": 0.0}}, "are not physical"),
    (lambda d: {**d, "eta_max": None}, "eta_max is missing or not finite"),
    (lambda d: {**d, "f_star": "auto"}, "f_star is missing or not finite"),
    (lambda d: {**d, "f_star_fit": {"degenerate": "b = 40 at its bound"}}, "b = 40 at its bound"),
    (lambda d: {**d, "status": "not identifiable"}, "status is 'not identifiable'"),
    (lambda d: {**d, "status": "not supported", "status_reason": "it does not beat a constant L (gain -9.9%)"},
     "status is 'not supported', not 'supported': it does not beat a constant L (gain -9.9%)"),
])
def test_schedule_problem_of_malformed_or_unusable_fits_gives_a_reason(change, reason):
    """A fit written by smoothprobe must be usable; constants without a status (written by hand)
    only need to be physical."""
    assert schedule_problem_of(GOOD) is None
    problem = schedule_problem_of(change(GOOD))
    assert reason in problem and "\n" not in problem


def test_hand_written_constants_need_only_be_physical():
    hand = {"constants": dict(GOOD["constants"]), "f_star": 1.0}
    assert schedule_problem_of(hand) is None
    hand["constants"]["K0"] = 0.0
    assert "not physical" in schedule_problem_of(hand)


# f* = auto on adversarial curves ----------------------------------------------------------------

def late_cliff(t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A plateau at 2 reached by step ~300, then a drop of 0.5 over the last 5%."""
    loss = 2.0 + np.exp(-t / 50) + rng.normal(0, 0.02, t.size)
    loss[int(0.95 * t.size):] -= 0.5
    return loss


@pytest.mark.parametrize("make, phrase", [
    (lambda t, rng: 2.0 + rng.normal(0, 0.05, t.size), "runs into f* = 0"),         # noise only
    (lambda t, rng: 2.0 + 3.0 * (t[:25] + 5.0) ** -0.5 + rng.normal(0, 0.05, 25),  # 25 points
     "only 25 losses"),
    (late_cliff, "lies above the smoothed loss of the last tenth of the curve (1.7"),
    (lambda t, rng: 2.0 + 3.0 * (t[:200] + 5.0) ** -0.5 + rng.normal(0, 0.2, 200),  # very noisy
     "interval reaches 0: the curve does not bound f* from below"),
])
def test_f_star_on_curves_that_do_not_identify_it_is_marked_degenerate(make, phrase):
    loss = make(np.arange(1000.0), np.random.default_rng(0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # the estimate only marks; fit_frame warns
        est = estimate_f_star(np.arange(float(len(loss))), loss)
    assert phrase in est.degenerate and "\n" not in est.degenerate
    assert est.value <= min(b.mean() for b in np.array_split(loss, 10))


def test_f_star_that_drifts_as_the_curve_doubles_is_marked_degenerate():
    # a fast drop onto a slow linear decline: 400 steps fit a power law that "saturates" at 2.13 with
    # a narrow interval, while the first 200 put it at 2.28 and the curve keeps falling to 1.7
    t = np.arange(400.0)
    loss = 2.5 + 1.5 * np.exp(-t / 40) - 0.0008 * t + np.random.default_rng(0).normal(0, 0.03, t.size)
    plain = estimate_f_star(t, loss, drift=False)
    assert plain.degenerate is None and plain.interval[1] - plain.interval[0] < 0.1
    est = estimate_f_star(t, loss)
    assert est.value == plain.value and est.degenerate.startswith("f* drifts: the first half of the curve gives 2.28")


@pytest.mark.parametrize("loss", [np.full(300, 2.0), 2.0 + np.arange(300) / 300])
def test_f_star_on_flat_or_rising_curves_is_a_one_line_error_without_numpy_warnings(loss):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(SmoothprobeError, match="does not decrease like"):
            estimate_f_star(np.arange(300), loss)


def test_f_star_on_an_exponential_decay_is_the_plateau_not_a_degeneracy():
    # b → ∞ with t0 ≈ b·τ is exp(−t/τ): a huge a there is the limit, and f* is well identified
    t = np.arange(300)
    loss = 1.0 + 2.0 * np.exp(-t / 30) + np.random.default_rng(0).normal(0, 0.01, t.size)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        est = estimate_f_star(t, loss)
    assert est.degenerate is None and est.a > 1e30 and est.t0 / est.b == pytest.approx(30, rel=0.1)
    assert abs(est.value - 1.0) < 0.005
    assert 0.99 < est.interval[0] <= est.value <= est.interval[1] < 1.001


def test_a_degenerate_auto_f_star_makes_the_fit_not_identifiable_and_unfit_for_a_schedule():
    steps = planted_steps(2000, 13)
    steps["loss"] = 4.0 - steps["step"] / 1000 + 0.001 * np.sin(steps["step"])  # no saturation
    with pytest.warns(RuntimeWarning, match="degenerate"):
        fit = fit_frame(steps, f_star="auto", bootstrap=0)
    assert fit.f_star_fit["degenerate"].startswith("the power law runs into f* = 0")
    assert fit.status == "not identifiable"
    assert f"is degenerate ({fit.f_star_fit['degenerate']})" in fit.verdict
    assert fit.schedule_problem() == ("f* was estimated from a degenerate loss-curve fit: "
                                      + fit.f_star_fit["degenerate"])
    back = SmoothnessFit.from_dict(json.loads(json.dumps(fit.to_dict())))
    assert back.schedule_problem() == fit.schedule_problem()
    assert back.summary_table().endswith(
        f"{fit.verdict}\nNot for a learning-rate schedule: {fit.schedule_problem()}.")


# the verdict follows its statistics ------------------------------------------------------------

def verdict_data(n: int = 200, span: float = 4.0) -> FitData:
    """n rows with Δ log-spaced on [1, span]."""
    delta = np.geomspace(1.0, span, n)
    return FitData(np.arange(n), delta, delta.copy(), None, (0, n - 1), n, 0, 0)


def scores(gain: float) -> list[ModelScore]:
    """Constant L with CV pinball 1 and the ρ-model with 1 − gain."""
    return [ModelScore("constant L", {"L": 1.0}, 0.9, 1.0),
            ModelScore("(L0, L1) in |grad|_*", {}, np.nan, np.nan, "no grad_norm_dual column"),
            ModelScore("(rho=2, K0, K1, K_rho)", {}, 0.9, 1.0 - gain)]


VERDICTS = [  # spearman, p, gain, growth, growth interval, other arguments -> status, key phrase
    (0.34, 0.015, 0.10, 1.0, (0.1, 2.0), {}, "supported",
     ("K grows with Δ (Spearman +0.34, p = 0.015); the (rho, K0, K1, K_rho) model is supported: "
     "it beats a constant L by 10.0%")),
    (0.34, 0.015, 0.10, 1.0, None, {}, "supported", "K grows with Δ (Spearman +0.34, p = 0.015)"),
    (0.34, 0.20, 0.10, 1.0, (0.1, 2.0), {}, "not identifiable",
     ("no significant monotone trend in Δ (Spearman +0.34, p = 0.2); the (rho, K0, K1, K_rho) "
     "model is not identifiable: the rise of K with Δ is not significant (p = 0.2 ≥ 0.05)")),
    (0.05, 0.049, 0.10, 1.0, (0.1, 2.0), {}, "supported", "K grows with Δ (Spearman +0.05, p"),
    (-0.40, 0.001, 0.10, 1.0, (0.1, 2.0), {}, "not supported",
     ("K falls as Δ grows (Spearman -0.40, p = 0.001); the (rho, K0, K1, K_rho) model is not "
     "supported: K falls as Δ grows")),
    (-0.40, 0.30, 0.10, 1.0, (0.1, 2.0), {}, "not identifiable", "no significant monotone"),
    (0.50, 0.001, 0.10, -0.5, None, {}, "not supported", "envelope does not rise with Δ"),
    (0.50, 0.001, 0.01, 1.0, (0.1, 2.0), {}, "not supported",
     "does not beat a constant L on held-out data (pinball gain 1.0%)"),
    (0.50, 0.001, 0.10, 1.0, (-0.1, 2.0), {}, "not identifiable",
     "bootstrap interval of K's rise over the Δ range includes 0 (-0.1..2)"),
    (0.50, 0.001, 0.10, 1.0, (0.1, 2.0), {"n": 40}, "not identifiable",
     "only 40 rows, of which about 4 lie above a τ = 0.9 envelope (placing it needs 5)"),
    (0.50, 0.001, 0.10, 1.0, (0.1, 2.0), {"span": 1.2}, "not identifiable",
     ("the middle 90% of Δ = loss − f* spans only 1.01..1.19 (loss 4.009..4.189), a ratio of "
     "1.18 < 1.5")),
    (0.50, 0.001, 0.10, 1.0, (0.1, 2.0), {"f_star_problem": "no saturation"}, "not identifiable",
     "f* = 3 is degenerate (no saturation)"),
]


@pytest.mark.parametrize("spearman, p, gain, growth, interval, other, status, phrase", VERDICTS)
def test_verdict_status_and_sentence_follow_the_statistics(spearman, p, gain, growth, interval,
                                                           other, status, phrase):
    data = verdict_data(other.get("n", 200), other.get("span", 4.0))
    said = verdict(data, scores(gain), spearman, p, growth, interval, quantile=0.9,
                   f_star=3.0, f_star_problem=other.get("f_star_problem"))
    got, sentence = said.status, said.sentence
    assert got == status and phrase in sentence
    assert said.cause in CAUSES and f"model is {status}: {said.reason}." in sentence
    legacy = upgrade_fit({"schema_version": 1, "status": status, "verdict": sentence})  # a fit.json before 2
    assert (legacy["status_cause"], legacy["status_reason"]) == (said.cause, said.reason)
    assert f"model is {status}:" in sentence and sentence.count(". ") == 0  # one sentence
    if status == "supported":
        assert "K grows with Δ" in sentence


def test_fifty_rows_at_tau_0p9_are_enough_to_place_the_envelope():
    """50 · (1 − 0.9) is 4.999… in floating point; five rows above the envelope must count as five."""
    steps = planted_steps(50, 3)
    fit = fit_frame(steps, f_star=2.0, bootstrap=0)
    assert "placing it needs" not in fit.verdict


@pytest.mark.parametrize("block", [37, 50])   # a short last block, or none
def test_block_cover_and_block_total_agree_with_the_drawn_rows(block):
    from smoothprobe.fit.bootstrap import block_cover, block_total, draw_blocks

    n = 1000
    starts, lengths = draw_blocks(n, block, np.random.default_rng(3))
    counts = circular_block_counts(n, block, np.random.default_rng(3))  # the same draw, row by row
    assert lengths.sum() == n and counts.sum() == n
    rows = np.array([0, 5, 500, 963, 999])
    np.testing.assert_array_equal(block_cover(rows, starts, lengths, n), counts[rows])
    np.testing.assert_array_equal(block_cover(np.arange(n), starts, lengths, n), counts)
    terms = np.random.default_rng(0).normal(size=(n, 3))
    prefix = np.vstack([np.zeros((1, 3)), np.cumsum(terms, axis=0)])
    np.testing.assert_allclose(block_total(prefix, starts, lengths), counts @ terms, atol=1e-9)


def test_banded_bootstrap_refits_equal_direct_lp_solves():
    """Large problems go through the banded solver with block weights and prefix sums; each refit
    must be the exact LP optimum of its resample."""
    from smoothprobe.fit import bootstrap as boot

    steps = planted_steps(20_000, 4)
    d = rho_design(steps["loss"].to_numpy() - 2.0, steps["secant_K"].to_numpy(), 2.0)
    beta = quantile_regression(d.x, d.y, TAU, g=d.g, h=d.h, cut=d.cut)
    got = boot._refit(d, beta, TAU, 40, [(7, i) for i in range(3)])
    compared = 0
    for i in range(3):
        counts = circular_block_counts(len(d.y), 40, np.random.default_rng((7, i)))
        live = counts > 0
        want = _solve_dual(d.x[live], d.y[live], counts[live], TAU, d.g, d.h, np.zeros(3))
        if d.cut(want) is None:  # the direct answer is physical: the cutting planes leave it alone
            np.testing.assert_allclose(got[i], want, atol=1e-6)
            compared += 1
    assert compared >= 2


def test_a_large_weighted_fit_does_not_depend_on_the_scale_of_its_weights():
    """Scaling every weight by c scales the LP's objective by c and leaves its optimum: the banded
    path (above DIRECT_MAX_ROWS rows) must find the same β with weights of 1e-9 as with weights of 1."""
    rng = np.random.default_rng(3)
    n = 6000
    x = np.column_stack([np.ones(n), rng.uniform(0, 4, n), rng.uniform(0, 16, n)])
    y = x @ np.array([1.0, 2.0, 0.5]) * rng.uniform(0.6, 1.0, n)
    w = rng.integers(0, 3, n).astype(float)
    base = quantile_regression(x, y, 0.9, weights=w)
    for scale in (1e-9, 1e-10):
        assert quantile_regression(x, y, 0.9, weights=w * scale) == pytest.approx(base, rel=1e-7, abs=1e-9)


def test_a_fit_at_a_large_rho_is_written_and_read_back(tmp_path):
    """Planted ρ = 8 over gaps up to 3: Kρ = 3 in the data's units, but refitted at ρ = 80 it is far below
    1e-30; the fit.json it writes reads back to the same constants (and Δ' stays finite)."""
    fit = fit_frame(planted_steps(600, 0, rho=8.0), f_star=2.0, rho=80.0, bootstrap=0)
    assert 0 < fit.K_rho < 1e-30
    fit.to_json(tmp_path / "fit.json")
    back = SmoothnessFit.from_json(tmp_path / "fit.json")
    assert (back.K0, back.K1, back.K_rho, back.delta_peak) == (fit.K0, fit.K1, fit.K_rho, fit.delta_peak)


def test_a_row_without_a_step_or_a_step_given_twice_is_one_clear_error():
    steps = planted_steps(300, 0)
    steps.loc[3, "step"] = np.nan
    with pytest.raises(SmoothprobeError, match="1 row.* whose 'step' is not a finite number"):
        fit_frame(steps, f_star=2.0, bootstrap=0)
    twice = pd.concat([planted_steps(300, 0), planted_steps(300, 0).iloc[[7]]])
    with pytest.raises(SmoothprobeError, match=r"1 repeated step\(s\) \(first: step 7\)"):
        fit_frame(twice, f_star=2.0, bootstrap=0)


def test_the_l0_l1_model_is_scored_only_where_every_fitted_row_has_its_gradient_norm():
    """grad_norm_dual recorded on the second half of the rows only: a held-out loss over those rows is not
    comparable with the others' over all of them, so (L0, L1) is skipped, saying why, not ranked."""
    steps = planted_steps(600, 0)
    steps["grad_norm_dual"] = np.where(steps["step"] >= 300, np.random.default_rng(1).uniform(1, 2, 600), np.nan)
    fit = fit_frame(steps, f_star=2.0, bootstrap=0)
    (l0l1,) = [s for s in fit.comparison if s["name"].startswith("(L0, L1)")]
    assert l0l1["skipped"] == "grad_norm_dual is missing on 300 of the 600 fitted rows"
    assert "(L0, L1) model" not in fit.verdict


def _ar1(n: int, phi: float, rng: np.random.Generator) -> np.ndarray:
    x = np.empty(n)
    x[0] = rng.standard_normal()
    for i in range(1, n):
        x[i] = phi * x[i - 1] + np.sqrt(1 - phi**2) * rng.standard_normal()
    return x


def test_the_trend_test_holds_its_level_on_autocorrelated_probes_and_keeps_a_real_rise():
    """K an AR(1) series (φ = 0.8) with no dependence on a falling Δ: counted as independent rows, Spearman's
    p < 0.05 in about half of the planted runs; discounted to n(1 − r_Δ r_K)/(1 + r_Δ r_K) rows, in 5–13 %.
    A K that follows Δ (plus independent noise) keeps nearly all its rows and a tiny p."""
    from scipy.stats import spearmanr

    rng = np.random.default_rng(0)
    n, runs = 200, 200
    delta = 3 * (np.arange(n) + 10.0) ** -0.5
    naive = corrected = 0
    for _ in range(runs):
        k = 5 + _ar1(n, 0.8, rng)
        data = FitData(np.arange(n), delta * np.exp(0.05 * rng.standard_normal(n)), k, None, (0, n), n, 0, 0)
        naive += spearmanr(data.delta, data.k).pvalue < 0.05
        corrected += trend_test(data)[1] < 0.05
    assert naive / runs > 0.35 and corrected / runs < 0.15  # 8.5 % over 600 runs
    k = 1 + 2 * delta + 0.05 * rng.standard_normal(n)
    rs, p, n_eff = trend_test(FitData(np.arange(n), delta, k, None, (0, n), n, 0, 0))
    assert rs > 0.9 and p < 1e-4 and n_eff > 10  # noise of 0.05 beside a rise of 2·Δ
