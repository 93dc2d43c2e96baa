"""smoothprobe.fit against planted envelopes, closed forms and exact LP answers."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from smoothprobe.errors import SmoothprobeError
import planted

from smoothprobe.fit import SmoothnessFit, estimate_f_star, fit_frame, fit_run
from smoothprobe.fit.bootstrap import block_length, circular_block_counts
from smoothprobe.fit.models import rho_design, select_rho, time_folds
from smoothprobe.fit.quantile import BandedQuantileLP, _solve_dual, quantile_regression
from smoothprobe.smoothness import delta_peak, eta_max, k_model

PLANTED = (1.0, 2.0, 3.0)
TAU = 0.9
U_LOW = 0.7
Q_U = U_LOW + (1 - U_LOW) * TAU  # τ-quantile of U ~ Uniform(U_LOW, 1)


def planted_steps(n: int, seed: int, **kwargs) -> pd.DataFrame:
    """Steps under the planted envelope PLANTED·U, U ~ Uniform(U_LOW, 1) (see tests/planted.py)."""
    return planted.planted_steps(n, seed, constants=PLANTED, u_low=U_LOW, **kwargs)


# closed forms -------------------------------------------------------------------------------

@pytest.mark.parametrize("rho", [1.5, 2.0, 3.0])
def test_peak_and_eta_max_match_dense_grid(rho):
    k0, k1, k_rho = 0.7, 0.4, 1.3
    grid = np.geomspace(1e-4, 1e3, 2_000_001)
    eta = grid / k_model(grid, k0, k1, k_rho, rho)
    assert delta_peak(k0, k_rho, rho) == pytest.approx(grid[np.argmax(eta)], rel=1e-4)
    assert eta_max(k0, k1, k_rho, rho) == pytest.approx(eta.max(), rel=1e-9)


def test_rho2_closed_forms_and_limits():
    k0, k1, k2 = 2.0, 0.5, 8.0
    assert delta_peak(k0, k2, 2.0) == pytest.approx(np.sqrt(k0 / k2))
    assert eta_max(k0, k1, k2, 2.0) == pytest.approx(1 / (k1 + 2 * np.sqrt(k0 * k2)))
    assert delta_peak(1.0, 0.0, 2.0) == np.inf
    assert eta_max(1.0, 0.5, 0.0, 2.0) == pytest.approx(2.0)   # sup is 1/K1 as Δ → ∞
    assert eta_max(0.0, 0.25, 1.0, 2.0) == pytest.approx(4.0)  # sup is 1/K1 as Δ → 0
    assert eta_max(1.0, -5.0, 1.0, 2.0) == np.inf              # K ≤ 0 somewhere on Δ > 0


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
    assert raw["schema_version"] == 1
    assert set(raw["constants"]) == {"rho", "K0", "K1", "K_rho"}
    for key in ("f_star", "delta_peak", "eta_max", "delta_range", "window"):
        assert key in raw
    assert raw["delta_range"][0] == pytest.approx(fit.delta_range[0])
    back = SmoothnessFit.from_json(path)
    assert back.to_dict() == fit.to_dict() and back.K_rho == fit.K_rho
    table = back.summary_table()
    assert "K_rho" in table and "eta_max" in table and fit.verdict in table


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
    run.info = {"task": {"f_star": None}}
    with pytest.raises(SmoothprobeError, match="f_star is unknown"):
        fit_run(run, bootstrap=0)


# bad input ----------------------------------------------------------------------------------

@pytest.mark.parametrize("change, kwargs, message", [
    (lambda s: s.drop(columns="secant_K"), {}, "no probe columns"),
    (lambda s: s.head(20), {}, "too few points"),
    (lambda s: s.assign(secant_K=np.nan), {}, "all NaN"),
    (lambda s: s, {"window": (5000, 6000)}, "outside the run"),
    (lambda s: s, {"window": (50, 10)}, "outside the run"),
    (lambda s: s.assign(curv_fd=1.0), {"column": "nope"}, "unknown column"),
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
