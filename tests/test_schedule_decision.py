"""The closed loop's decision: Δ' interval against the current gap and the measured gaps."""

import math

import pytest

from smoothprobe.schedule.decision import decide

FIT = {"constants": {"rho": 2.0, "K0": 1.15, "K1": 0.0, "K_rho": 1.0}, "f_star": 1.0, "status": "supported",
       "delta_peak": math.sqrt(1.15), "eta_max": 1 / (2 * math.sqrt(1.15)), "delta_range": [0.9, 3.0],
       "intervals": {"delta_peak": [0.95, 1.2]}}
"""Δ' = √1.15 ≈ 1.07; at the gap 2 the LR still has η_max/η(2) − 1 = 20 % to rise."""


@pytest.mark.parametrize("interval, delta, branch", [
    ([0.95, 1.2], 2.0, "fit-driven"),   # located (the measured gaps reach below it), still ahead
    ([0.95, 1.2], 0.92, "no-warmup"),   # located above the gap: the rise is over
    ([5.0, None], 3.0, "no-warmup"),    # Kρ ≈ 0 in resamples: Δ' = ∞ (JSON null), far above every gap
    ([0.03, 277.0], 2.0, "not yet"),    # reaches below the data: the warm-up's end is an extrapolation
    ([0.95, 3.5], 2.0, "not yet"),      # reaches above the data while the gap is inside the interval
    ([0.5, 0.8], 2.0, "not yet"),       # below every measured gap
])
def test_the_branch_follows_the_interval(interval, delta, branch):
    got = decide({**FIT, "intervals": {"delta_peak": interval}}, delta, step=7)
    assert got.branch == branch and got.step == 7 and got.decided == (branch != "not yet")
    assert got.to_dict()["delta_range"] == [0.9, 3.0]


def test_without_a_current_gap_the_largest_measured_gap_is_used():
    assert decide({**FIT, "intervals": {"delta_peak": [3.5, 4.0]}}, None).branch == "no-warmup"
    assert decide(FIT, None).delta == 3.0


@pytest.mark.parametrize("change, reason", [
    ({"status": "not identifiable"}, "status is 'not identifiable'"),
    ({"f_star_fit": {"degenerate": "b at its bound"}}, "b at its bound"),
    ({"constants": {"rho": 2.0, "K0": 0.0, "K1": 1.0, "K_rho": 1.0}}, "not physical"),
])
def test_a_fit_that_must_not_drive_is_not_yet_with_its_reason(change, reason):
    got = decide({**FIT, **change}, 2.0)
    assert got.branch == "not yet" and reason in got.reason


FALLING = {**FIT, "status": "not supported", "spearman": -0.19, "spearman_p": 0.008, "data": {"rows_used": 1000},
           "constants": {"rho": 2.0, "K0": 851.3, "K1": -484.6, "K_rho": 123.6},
           "status_cause": "K falls", "status_reason": "K falls as Δ grows, which the model cannot follow"}
"""A full-run fit whose K falls as Δ grows (Muon on the tiny LLaMA): the model cannot follow it."""


def test_a_k_that_falls_as_the_gap_grows_is_not_yet():
    """K falling with Δ makes η = Δ/K largest at the start, but the model does not describe such a K,
    and read as "no warm-up" it cost more than it won on the benchmark (docs/design.md §5): not yet."""
    got = decide(FALLING, None)
    assert got.branch == "not yet" and "status is 'not supported', not 'supported': K falls as Δ grows" in got.reason
    assert decide(FALLING, 0.01).branch == "not yet"  # whatever the gap


def test_hand_written_constants_drive():
    hand = {"constants": FIT["constants"], "f_star": 1.0}
    assert decide(hand, 2.0).branch == "fit-driven"


def test_a_warm_up_with_little_left_to_rise_is_over():
    # K = 1 + Δ² (Δ' = 1): at Δ = 1.2, η/η_max = 2·1.2/(1 + 1.44), so the LR has 1.7 % left to rise
    fit = {**FIT, "constants": {"rho": 2.0, "K0": 1.0, "K1": 0.0, "K_rho": 1.0}, "delta_peak": 1.0,
           "eta_max": 0.5, "intervals": {"delta_peak": [0.95, 1.3]}}
    got = decide(fit, 1.2)
    assert got.branch == "no-warmup" and "within 1.7% of its peak" in got.reason
    assert decide(fit, 2.0).branch == "fit-driven"  # η(2)/η_max = 0.8: 25 % left, and Δ' is located


def test_a_narrow_gap_ratio_alone_does_not_stop_a_significant_rise_from_deciding():
    narrow = {**FIT, "status": "not identifiable", "spearman": 0.5, "spearman_p": 1e-8, "quantile": 0.9,
              "status_cause": "narrow gaps", "status_reason": "the middle 90% of Δ = loss − f* spans only 4.04..5.12",
              "data": {"rows_used": 100}, "intervals": {"delta_peak": [0.95, 1.2], "growth": [1.0, 2.0]}}
    assert decide(narrow, 2.0).branch == "fit-driven"
    for change in ({"spearman_p": 0.2}, {"intervals": {"delta_peak": [0.95, 1.2], "growth": [-1.0, 2.0]}},
                   {"data": {"rows_used": 40}}, {"status_cause": "rise not significant"}):
        assert decide({**narrow, **change}, 2.0).branch == "not yet"


def test_a_version_1_fit_is_read_by_its_verdict_sentence():
    """A fit.json from before schema 2 kept the status's cause only in its verdict sentence: passed as
    a dict (json.load), it decides as its upgraded self does."""
    narrow = {**FIT, "status": "not identifiable", "spearman": 0.5, "spearman_p": 1e-8, "quantile": 0.9,
              "data": {"rows_used": 100}, "intervals": {"delta_peak": [0.95, 1.2], "growth": [1.0, 2.0]},
              "schema_version": 1, "verdict": "On steps 0..99, K grows with Δ (Spearman +0.50, p = 1e-08); the "
              "(rho, K0, K1, K_rho) model is not identifiable: the middle 90% of Δ = loss − f* spans only 4.04..5.12 "
              "(loss 4.04..5.12), a ratio of 1.27 < 1.5."}
    assert decide(narrow, 2.0).branch == "fit-driven"
    got = decide({**narrow, "status": "not supported", "verdict": "… the (rho, K0, K1, K_rho) model is not supported: "
                  "K falls as Δ grows, which the model cannot follow."}, 2.0)
    assert got.branch == "not yet" and got.reason.endswith("not 'supported': K falls as Δ grows, which the model "
                                                           "cannot follow")


def test_the_step_test_passes_up_to_twice_the_exact_line_search_step_of_a_quadratic():
    """f = ½xᵀAx, a gradient step Δx = −ηg: slope ηgᵀg, curvature η²gᵀAg, so the best LR along g is
    the exact line-search step gᵀg/gᵀAg whatever η the probed steps took, and a step at twice it
    returns the loss to where it was: the stability limit."""
    import numpy as np

    from smoothprobe.schedule.decision import step_test

    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    a = q @ np.diag([0.1, 0.5, 1.0, 2.0, 5.0, 10.0]) @ q.T
    x = rng.normal(size=6)
    rows, best = [], []
    for lr in (0.01, 0.02, 0.03):
        g = a @ x
        dx = -lr * g
        rows.append({"lr": lr, "secant_slope": float(-g @ dx), "secant_curv": float((a @ dx) @ dx)})
        best.append(float(g @ g / (g @ a @ g)))
        x = x + dx
    exact = float(np.median(best))
    assert step_test(rows, 2 * 0.999 * exact, step=2).branch == "no-warmup"
    assert step_test(rows, 2 * 1.001 * exact).branch == "not yet"
    g = a @ x  # a step at twice the best LR along g leaves the loss where it was
    tau = 2 * float(g @ g / (g @ a @ g))
    assert (x - tau * g) @ a @ (x - tau * g) == pytest.approx(x @ a @ x, rel=1e-9)
    assert step_test(rows[:2], 0.0).branch == "not yet"  # too few probed steps


def test_the_window_test_holds_the_peak_to_the_lower_quartile_of_the_exact_line_search_steps():
    """The quadratic of the step test, 12 steps: the window test holds the peak to the lower quartile of
    the exact line-search steps of the window (not twice it, not the last steps' median); a last probed
    step that curved downward, or a step size per unit LR still falling over the rows, is "not yet"."""
    import numpy as np

    from smoothprobe.schedule.decision import WINDOW_QUANTILE, window_test

    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    a = q @ np.diag([0.1, 0.5, 1.0, 2.0, 5.0, 10.0]) @ q.T
    x = rng.normal(size=6)
    rows, best = [], []
    for step in range(12):
        g, lr = a @ x, 0.01 * (1 + step)
        dx = -lr * g
        rows.append({"step": step, "lr": lr, "secant_slope": float(-g @ dx), "secant_curv": float((a @ dx) @ dx)})
        best.append(float(g @ g / (g @ a @ g)))
        x = x + dx
    exact = sorted(best)[int(WINDOW_QUANTILE * (len(best) - 1))]  # the 3rd smallest of 12: 9 of 12 reach it
    assert sorted(best)[2] < np.median(best[-3:])  # the last steps' median would let a longer step through
    assert window_test(rows, 0.999 * exact, step=11).branch == "no-warmup"
    assert window_test(rows, 1.001 * exact).branch == "not yet"
    assert window_test(rows[:2], 0.0).reason.startswith("the window test needs 3 probed steps, has 2")
    down = [*rows[:-1], {**rows[-1], "secant_curv": -1e-3}]
    assert window_test(down, 0.0).branch == "not yet"  # no best step: not "any LR", as the step test reads it
    falling = [{"step": t, "lr": 0.01, "update_norm": 0.01 * 2 ** (-t / 20)} for t in range(40)] + rows
    assert "still falling" in window_test(falling, 0.5 * exact).reason
    settled = [{"step": t, "lr": 0.01, "update_norm": 0.01} for t in range(40)] + rows
    assert window_test(settled, 0.5 * exact).branch == "no-warmup"


@pytest.mark.parametrize("share, branch", [(0.999, "no-warmup"), (1.001, "not yet")])
def test_the_progress_test_reads_the_relative_drop_between_the_means_of_the_trials_ends(share, branch):
    """Losses 1 + noise at steps 0-4 (mean 1) and (1 − drop) + noise at steps 45-49: a drop just under
    PROGRESS_DROP means no warm-up, just over it a warm-up; the middle steps do not count."""
    from smoothprobe.schedule.decision import PROGRESS_DROP, PROGRESS_STEPS, progress_test

    noise = [0.02, -0.01, 0.0, 0.01, -0.02]
    middle = [{"loss": 7.0}] * (PROGRESS_STEPS - 10)
    rows = ([{"loss": 1.0 + e} for e in noise] + middle
            + [{"loss": 1.0 - share * PROGRESS_DROP + e} for e in noise])
    got = progress_test(rows, step=0)
    assert got.branch == branch and got.step == 0 and f"{share * PROGRESS_DROP:.1%}" in got.reason
    assert progress_test(rows[:-1]).branch == "not yet"  # too few trial steps
    assert progress_test([*rows[:-1], {"loss": float("nan")}]).branch == "not yet"  # a trial that blew up


def test_the_step_test_treats_negative_curvature_as_room_and_an_ascent_step_as_none():
    from smoothprobe.schedule.decision import step_test

    concave = [{"lr": 0.1, "secant_slope": 1.0, "secant_curv": -1.0}] * 3
    ascent = [{"lr": 0.1, "secant_slope": -1.0, "secant_curv": 1.0}] * 3
    assert step_test(concave, 1e6).branch == "no-warmup"
    assert step_test(ascent, 1e-9).branch == "not yet"


def _step_scales(make_optimizer, steps: int = 80, n: int = 16) -> list[dict]:
    """Rows (lr, update_norm) of `steps` steps of an optimizer on the noisy quadratic ½ Σ a_i x_i²."""
    import torch

    torch.manual_seed(0)
    x = torch.nn.Parameter(torch.randn(n))
    a = torch.linspace(0.1, 10.0, n)
    opt, rows = make_optimizer([x]), []
    for _ in range(steps):
        before = x.detach().clone()
        loss = 0.5 * (a * x**2).sum() + (torch.randn(n) * x).sum() * 0.1
        opt.zero_grad()
        loss.backward()
        opt.step()
        rows.append({"lr": opt.param_groups[0]["lr"], "update_norm": float((x.detach() - before).norm())})
    return rows


def test_the_step_scale_of_a_sign_method_is_constant_and_adams_falls():
    """A sign step moves every coordinate by lr: ‖Δx‖/lr = √n exactly, at every step (Lion). Adam's
    first step is a sign step too (m̂/√v̂ = g/|g|), then |m̂|/√v̂ < 1 as the noise and the shrinking
    gradients enter v̂, so its scale falls and the guard holds a decision back."""
    import torch

    from smoothprobe.optim import Lion
    from smoothprobe.schedule.decision import Decision, after_settling, step_scale_ratio

    lion = _step_scales(lambda p: Lion(p, lr=0.01))
    adam = _step_scales(lambda p: torch.optim.Adam(p, lr=0.01))
    assert all(r["update_norm"] / r["lr"] == pytest.approx(4.0, rel=1e-6) for r in lion)  # √16
    assert adam[0]["update_norm"] / adam[0]["lr"] == pytest.approx(4.0, rel=1e-4)
    assert step_scale_ratio(lion) == (pytest.approx(1.0, rel=1e-6), 19)  # 80 rows: the quarter ends at row 19
    ratio, since = step_scale_ratio(adam)
    assert since == 19 and ratio < 1 / 1.1
    decision = Decision("no-warmup", "Δ' lies above the gap", 2.0, None, None, None, 79)
    assert after_settling(decision, lion) == decision
    held = after_settling(decision, adam)
    assert (held.branch, held.held, held.held_by) == ("not yet", "no-warmup", "the falling step size")
    assert held.reason.startswith("the optimizer's step per unit LR is still falling (median of the last 10 steps "
                                  f"{ratio:.3g}× that of the 10 steps up to step 19)")
    assert held.reason.endswith("; the fit said: Δ' lies above the gap")


@pytest.mark.parametrize("late, holds", [(1 / 1.1 - 1e-6, True), (1 / 1.1 + 1e-6, False), (1.5, False)])
def test_the_settling_guard_holds_a_fall_beyond_rise_left_and_nothing_else(late, holds):
    """Steps 0–19 at scale 1, then `late`: the first quarter of 80 rows ends at row 20, so the ratio is
    `late` exactly; a fall of more than a factor 1 + RISE_LEFT holds, a rise never does."""
    from smoothprobe.schedule.decision import Decision, after_settling, step_scale_ratio

    rows = [{"lr": 0.5, "update_norm": 0.5 * (1.0 if t < 20 else late)} for t in range(80)]
    assert step_scale_ratio(rows)[0] == pytest.approx(late, rel=1e-12)
    for branch in ("no-warmup", "fit-driven"):
        got = after_settling(Decision(branch, "", 1.0, None, None, None, 79), rows)
        assert (got.branch == "not yet") == holds and got.held == (branch if holds else None)
    undecided = Decision("not yet", "", 1.0, None, None, None, 79)
    assert after_settling(undecided, rows) == undecided
    assert math.isnan(step_scale_ratio(rows[:19])[0])  # fewer than 2·SETTLE_ROWS steps: nothing to compare
    assert math.isnan(step_scale_ratio([{"lr": 0.5}] * 80)[0])  # rows without update_norm
    assert after_settling(Decision("no-warmup", "", 1.0, None, None, None, 79), rows[:19]).branch == "no-warmup"


def test_the_settling_windows_are_the_last_ten_steps_and_the_ten_that_end_at_the_first_quarter():
    """Every step's scale differs (1 + t/100 up to step 69, then 0.5), so a window shifted by one row
    moves a median: 80 rows put the early window at steps 10–19 (median 1.145) and the late one at
    70–79 (0.5). Below 40 rows the early window is the first ten. Rows with no positive LR or no
    finite update are skipped; an early median of 0 gives no ratio."""
    from smoothprobe.schedule.decision import step_scale_ratio

    rows = [{"step": t, "lr": 0.1, "update_norm": 0.1 * (1 + t / 100 if t < 70 else 0.5)} for t in range(80)]
    assert step_scale_ratio(rows) == (pytest.approx(0.5 / 1.145, rel=1e-12), 19)
    short = rows[:30]  # the early window is steps 0–9 (median 1.045), the late one 20–29 (1.245)
    assert step_scale_ratio(short) == (pytest.approx(1.245 / 1.045, rel=1e-12), 9)
    noise = [{"step": -1, "lr": 0.0, "update_norm": 1.0}, {"step": -1, "lr": 0.1, "update_norm": math.inf},
             {"step": -1, "lr": None, "update_norm": 1.0}]
    assert step_scale_ratio(noise + rows) == step_scale_ratio(rows)
    still = [{"lr": 0.1, "update_norm": 0.0}] * 10 + [{"lr": 0.1, "update_norm": 1.0}] * 30
    assert step_scale_ratio(still)[1] is None and math.isnan(step_scale_ratio(still)[0])
