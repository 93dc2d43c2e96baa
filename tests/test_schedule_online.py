"""f* = auto during training: the schedule's f* follows the loss curve's saturation level."""

import numpy as np
import pytest
import torch
from planted import planted_steps

from smoothprobe.schedule.adaptive import AdaptiveWarmup
from smoothprobe.schedule.online import OnlineFStar, Pilot, crossing_step
from smoothprobe.smoothness import FStar


def make_schedule(**kwargs):
    opt = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1)
    return AdaptiveWarmup.practical(opt, lr=0.1, div=10.0, f_star=0.0, delta_peak=0.2, ema=0.0,
                                    total_steps=400, **kwargs)


def test_online_estimate_converges_to_planted_f_star_and_keeps_lr_div_at_start():
    sched = make_schedule()
    online = OnlineFStar(sched, every=50)
    rng = np.random.default_rng(0)
    for step in range(400):
        loss = 1.5 + 2.0 * (step + 10.0) ** -0.7 + 0.005 * rng.standard_normal()
        online.observe(step, loss)
        sched.step(loss)
    assert sched.f_star == pytest.approx(1.5, abs=0.05)
    first_loss = sched.last_record()["delta0"] + sched.f_star
    assert first_loss == pytest.approx(1.5 + 2.0 * 10.0**-0.7, abs=0.02)
    # the constants were re-derived for the new f*: eta(Delta0) is still lr/div
    c = sched.constants
    d0 = sched.last_record()["delta0"]
    assert d0 / (c.K0 + c.K1 * d0 + c.K_rho * d0**c.rho) == pytest.approx(0.01, rel=1e-9)


def test_estimate_above_first_loss_is_ignored():
    sched = make_schedule()
    online = OnlineFStar(sched, every=20)
    for step in range(40):
        online.observe(step, 3.0)  # flat curve: no saturation to extrapolate
        sched.step(3.0)
    assert sched.f_star < 3.0


def test_online_refit_adopts_planted_constants_scaled_to_the_peak_lr():
    from smoothprobe.schedule.online import OnlineRefit

    steps = planted_steps(3000, seed=0, f_star=0.0)
    sched = make_schedule()
    refit = OnlineRefit(sched, every=1500)
    for i, row in steps.iterrows():
        refit.observe(int(row.step), row.to_dict())
        if i == 1498:
            assert refit.status == "waiting" or refit.status.startswith("not")  # no refit yet
    assert refit.status == "adopted"
    c = sched.constants
    assert c.K1 / c.K0 == pytest.approx(2.0, rel=0.1) and c.K_rho / c.K0 == pytest.approx(3.0, rel=0.1)
    assert c.rho == 2.0 and c.eta_max == pytest.approx(sched.lr, rel=1e-9)


def test_online_refit_keeps_constants_when_k_does_not_grow():
    from smoothprobe.schedule.online import OnlineRefit

    sched = make_schedule()
    refit = OnlineRefit(sched, every=100)
    rng = np.random.default_rng(0)
    for step in range(100):
        refit.observe(step, {"loss": 3.0 - step / 100, "secant_K": 5.0 + rng.random()})
    assert refit.status != "adopted" and sched.constants is None  # practical rule untouched


def test_crossing_step_solves_the_power_law():
    # L(t) = f* + 1·(t − 10 + 5)^(−1) reaches f* + 0.1 at t − 5 = 10, i.e. t = 15
    assert crossing_step(1.0, 1.0, 5.0, 10, 0.1, now=0, total_steps=100) == 15
    assert crossing_step(1.0, 1.0, 5.0, 10, 0.1, now=20, total_steps=100) is None  # already past
    assert crossing_step(1.0, 1.0, 5.0, 10, 0.001, now=0, total_steps=100) is None  # after the run
    assert crossing_step(float("nan"), 1.0, 5.0, 10, 0.1, now=0, total_steps=100) is None


def _run_pilot(rows, window, total, **kwargs):
    sched = make_schedule(cooldown=total // 5)
    sched.total_steps = total
    pilot = Pilot(window, total_steps=total, **kwargs)
    closed_at = None
    for row in rows.to_dict("records"):
        sched.step(row["loss"])
        if pilot.observe(int(row["step"]), row, sched) and closed_at is None:
            closed_at = int(row["step"])
    return sched, pilot, closed_at


def test_pilot_waits_until_the_data_locate_the_planted_peak():
    """Planted K = (1 + 2Δ + 3Δ²)·U and loss = 2 + Δ(t): the fits say "not yet" while Δ' =
    √(K0/Kρ) = √(1/3) (scale-free) lies below the measured gaps, and decide once the gaps have
    reached it: the peak is then behind the current gap (no warm-up left) or at it (fit-driven),
    with f* ≈ 2 and an interval around the planted Δ'."""
    n = 400
    rows = planted_steps(n, 0, u_low=0.7)
    sched, pilot, closed_at = _run_pilot(rows, n, 2 * n)
    assert pilot.decision["branch"] in ("no-warmup", "fit-driven") and pilot.refits >= 3, pilot.status
    low, high = pilot.decision["interval"]
    assert low <= np.sqrt(1 / 3) <= high and high - low < 0.3
    assert rows.loss[closed_at] - 2.0 < high  # it waited until the data reached the peak
    assert pilot.fit.f_star == pytest.approx(2.0, abs=0.05) and sched.f_star == pilot.fit.f_star
    assert sched.phase == "decay" or sched.last_record()["delta_peak"] == pytest.approx(np.sqrt(1 / 3), rel=0.15)


def test_a_known_f_star_is_the_pilots_fits_own_and_auto_is_estimated():
    """Planted loss = 2 + Δ(t): a given f* (here 1.9, off the planted 2 on purpose) is the one every fit
    of the pilot measures Δ from, not replaced by an estimate; under auto the fits place it near 2."""
    rows = planted_steps(400, 0, u_low=0.7)
    _, given, _ = _run_pilot(rows, 400, 800, f_star=FStar(1.9, "task"))
    _, auto, _ = _run_pilot(rows, 400, 800, f_star=FStar(None, "auto"))
    assert given.fit.f_star == 1.9 and given.fit.f_star_source == "task"
    assert auto.fit.f_star == pytest.approx(2.0, abs=0.05) and auto.fit.f_star != 1.9


def test_pilot_skips_the_warm_up_when_k_grows_linearly():
    """K = (1 + 2Δ)·U: Kρ = 0 at the truth, so η(Δ) = Δ/K(Δ) only grows with Δ and Δ' = ∞ lies above
    every gap: the first refit says no warm-up, and the next step runs at the peak LR."""
    rows = planted_steps(200, 0, constants=(1.0, 2.0, 0.0))
    sched, pilot, closed_at = _run_pilot(rows.iloc[:80], 100, 1000)
    assert pilot.status == "no-warmup" and closed_at in (49, 59)  # at a refit (50 rows on), in the window
    assert pilot.decision["interval"][0] > pilot.decision["delta"]
    assert sched.phase == "decay" and sched._switch_lr == pytest.approx(0.1)
    # the step after the decision ran at the peak, then the cosine decay over the remaining steps
    assert sched._switch_step == closed_at + 1
    assert sched.optimizer.param_groups[0]["lr"] < 0.1 and sched.get_last_lr()[0] > 0.099


def _decide_no_warmup(opt, div):
    """The linear-K rows, whose first refit says "no-warmup", under `opt` from the practical start at lr/div."""
    rows = planted_steps(200, 0, constants=(1.0, 2.0, 0.0))
    sched = AdaptiveWarmup.practical(opt, lr=0.1, div=div, f_star=0.0, delta_peak=0.2, ema=0.0, total_steps=1000)
    pilot = Pilot(100, total_steps=1000)
    for row in rows.iloc[:80].to_dict("records"):
        sched.step(row["loss"])
        if pilot.observe(int(row["step"]), row, sched):
            break
    assert pilot.status == "no-warmup"
    return pilot


@pytest.mark.parametrize("div, momentum, restarted", [(10.0, 0.99, 2), (1.05, 0.99, None), (10.0, 0.9, None)])
def test_a_jump_restarts_a_momentum_whose_memory_is_longer_than_the_run_so_far(div, momentum, restarted):
    """The decision comes at step 49 or 59. From the practical start at lr/10 the jump to the peak
    zeroes both buffers (weight and bias) in place under momentum 0.99 (memory 100 steps); from lr/1.05,
    a rise within RISE_LEFT (10 %), or under momentum 0.9 (memory 10 steps, shorter than the run so
    far), they are kept and the decision says nothing was restarted (None)."""
    layer = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(layer.parameters(), lr=0.1, momentum=momentum)
    layer(torch.ones(1, 2)).sum().backward()
    opt.step()  # fills the momentum buffers
    buffers = [opt.state[p]["momentum_buffer"] for p in layer.parameters()]
    addresses = [b.data_ptr() for b in buffers]
    pilot = _decide_no_warmup(opt, div)
    assert pilot.decision["momentum_restarted"] == pilot.history[-1]["momentum_restarted"] == restarted
    assert [opt.state[p]["momentum_buffer"].data_ptr() for p in layer.parameters()] == addresses
    assert all(not b.any() for b in buffers) if restarted else all(b.all() for b in buffers)


class _Velocity(torch.optim.Optimizer):
    """Heavy-ball SGD that keeps its momentum under a name restart_momentum does not know."""

    def __init__(self, params):
        super().__init__(params, {"lr": 0.1, "momentum": 0.99})

    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                v = self.state[p].setdefault("velocity", torch.zeros_like(p))
                v.mul_(group["momentum"]).add_(p.grad)
                p.data.add_(v, alpha=-group["lr"])


def test_a_restart_warns_when_the_optimizer_keeps_its_momentum_under_another_name():
    layer = torch.nn.Linear(2, 2)
    opt = _Velocity(layer.parameters())
    layer(torch.ones(1, 2)).sum().backward()
    opt.step()
    with pytest.warns(RuntimeWarning, match="_Velocity keeps no first moment under exp_avg, momentum_buffer"):
        pilot = _decide_no_warmup(opt, 10.0)
    assert pilot.decision["momentum_restarted"] == 0


@pytest.mark.parametrize("curv, decides", [(0.0199, True), (0.0201, False)])
def test_a_fit_that_says_no_warm_up_is_held_to_the_stability_limit_at_the_peak(curv, decides):
    """The linear-K rows above, whose fit says "no-warmup", with steps at LR 1e-3 of slope 1 and
    curvature c along the update: the stability limit is 2·1e-3/c, just above the peak 0.1 at
    c = 0.0199 (the decision stands) and just below it at c = 0.0201 ("not yet", the practical
    warm-up goes on, the fit's reason kept beside the limit's)."""
    rows = planted_steps(200, 0, constants=(1.0, 2.0, 0.0)).assign(secant_slope=1.0, secant_curv=curv)
    sched, pilot, closed_at = _run_pilot(rows.iloc[:80], 100, 1000)
    first = pilot.history[0]
    if decides:
        assert pilot.status == "no-warmup" and closed_at == first["step"] and sched.phase == "decay"
        return
    assert closed_at is None and pilot.open and sched.phase == "warmup" and len(pilot.history) >= 2
    assert all(d["branch"] == "not yet" and d["held"] == "no-warmup" for d in pilot.history)
    assert first["reason"].startswith("the stability limit held back the fit's no-warmup: a step at the peak LR 0.1 "
                                      "would pass 2× the best step along the update (0.04975, median")
    assert "the fit said: the [" in first["reason"]  # the fit's own reason: Δ' lies above the gap
    sched.skip_warmup()  # the practical warm-up ends with the fit still held back
    row = rows.iloc[80].to_dict()
    sched.step(row["loss"])
    assert pilot.observe(80, row, sched) and pilot.status == (
        "not yet: the practical warm-up ended before a fit decided within the stability limit")
    forced = Pilot(60, total_steps=1000, allow_unsupported=True)  # forcing never passes the stability limit
    sched = make_schedule(cooldown=200)
    sched.total_steps = 1000
    for row in rows.iloc[:61].to_dict("records"):
        sched.step(row["loss"])
        forced.observe(int(row["step"]), row, sched)
    assert forced.open and sched.phase == "warmup" and forced.history[-1]["held"] == "no-warmup"


def test_a_fit_that_says_no_warm_up_waits_for_the_optimizers_step_scale_to_settle():
    """The linear-K rows whose fit says "no-warmup", within the stability limit, but with steps twice as
    long per unit LR before step 20 as after it (Adam's early sign steps): the guard compares the last
    10 steps with the 10 that end at the first quarter of the rows, so it holds every refit until that
    quarter is past step 20 plus half a window (at step 99: ratio 1/1.5), and the refit at step 109
    decides. Held back to the end, the warm-up's closing note names the guard."""
    rows = planted_steps(200, 0, constants=(1.0, 2.0, 0.0)).assign(secant_slope=1.0, secant_curv=0.0199)
    rows["update_norm"] = rows["lr"] * np.where(rows["step"] < 20, 2.0, 1.0)
    sched, pilot, closed_at = _run_pilot(rows.iloc[:120], 100, 1000)
    held = [d for d in pilot.history if d.get("held")]
    assert [d["step"] for d in held] == [49, 59, 69, 79, 89, 99] and closed_at == 109 == pilot.history[-1]["step"]
    assert all(d["held"] == "no-warmup" and d["held_by"] == "the falling step size" for d in held)
    assert held[-1]["reason"].startswith("the optimizer's step per unit LR is still falling (median of the last 10 "
                                         "steps 0.667× that of the 10 steps up to step 24)")
    assert pilot.status == "no-warmup" and pilot.decision["held"] is None and sched.phase == "decay"
    sched, pilot, _ = _run_pilot(rows.iloc[:60], 100, 1000)
    sched.skip_warmup()  # the practical warm-up ends with the fit held back by this guard
    row = rows.iloc[60].to_dict()
    sched.step(row["loss"])
    assert pilot.observe(60, row, sched) and pilot.status == (
        "not yet: the practical warm-up ended before a fit decided on a settled step size")


def test_a_forced_fit_and_a_fit_held_by_both_guards_name_the_guard_that_held_them():
    """Forcing turns the window's last "not yet" into "fit-driven", which the guards then read like any
    decision: a falling step scale holds it. Where both guards would hold, the stability limit (read
    first) is named, and a warm-up that ends after both held says so."""
    rows = planted_steps(80, 0)
    rows["secant_K"] = 5.0  # no trend in Δ: every fit is refused, so only forcing decides
    rows["update_norm"] = rows["lr"] * np.where(rows["step"] < 20, 4.0, 1.0)
    _, pilot, closed_at = _run_pilot(rows.iloc[:60], 60, 200, allow_unsupported=True)
    last = pilot.history[-1]
    assert closed_at is None and (last["step"], last["held"], last["held_by"]) == (59, "fit-driven",
                                                                                  "the falling step size")
    assert "the fit said: forced by allow_unsupported (" in last["reason"]
    both = planted_steps(200, 0, constants=(1.0, 2.0, 0.0)).assign(secant_slope=1.0, secant_curv=0.0201)
    both["update_norm"] = both["lr"] * np.where(both["step"] < 20, 2.0, 1.0)
    sched, pilot, _ = _run_pilot(both.iloc[:60], 100, 1000)
    assert [d["held_by"] for d in pilot.history] == ["the stability limit"] * 2
    pilot.history[0]["held_by"] = "the falling step size"  # as if the scale had been read first at step 49
    sched.skip_warmup()
    row = both.iloc[60].to_dict()
    sched.step(row["loss"])
    assert pilot.observe(60, row, sched) and pilot.status == ("not yet: the practical warm-up ended before a fit "
                                                              "decided within the stability limit and on a settled "
                                                              "step size")


def test_allow_unsupported_forces_the_windows_last_fit_and_says_so():
    rows = planted_steps(80, 0)
    rows["secant_K"] = 5.0  # no trend in Δ: every fit is refused
    sched, pilot, closed_at = _run_pilot(rows.iloc[:60], 60, 200, allow_unsupported=True)
    assert closed_at == 59 and pilot.status.startswith("fit-driven") and sched.delta_range is not None
    assert [d["branch"] for d in pilot.history] == ["not yet", "fit-driven"]
    assert pilot.decision["reason"].startswith("forced by allow_unsupported (") and pilot.decision["held"] is None


def test_pilot_says_not_yet_when_the_fit_cannot_drive_it():
    rows = planted_steps(60, 0)
    rows["secant_K"] = 5.0  # no trend in Δ: the model is not supported
    sched, pilot, closed_at = _run_pilot(rows, 60, 200)
    assert closed_at is None and pilot.open and pilot.status.startswith("not yet")
    assert sched.phase == "warmup" and sched.delta_range is None  # the practical schedule goes on


def test_every_refit_is_kept_and_a_warm_up_that_ends_first_says_what_the_last_fit_said():
    rows = planted_steps(80, 0)
    rows["secant_K"] = 5.0  # no trend in Δ: every fit is refused
    sched, pilot, _ = _run_pilot(rows.iloc[:70], 60, 200)
    assert [d["step"] for d in pilot.history] == [49, 59, 69]  # window refits at 49, 59 (its end); then 10 rows on
    assert all(d["branch"] == "not yet" and d["by"] == "fit" and d["fit_status"] != "supported" for d in pilot.history)
    assert [d["refits"] for d in pilot.history] == [1, 2, 3] and pilot.decision == pilot.history[-1]
    sched.skip_warmup()  # the practical warm-up ends before any fit decided
    row = rows.iloc[70].to_dict()
    sched.step(row["loss"])
    assert pilot.observe(70, row, sched) and not pilot.open
    closing = pilot.decision
    assert closing["branch"] == "not yet" and closing["step"] == 70 and closing["last_fit"] == pilot.history[-1]
    assert closing["delta"] == sched.last_record()["delta"] != pilot.history[-1]["delta"]  # the gap at step 70
    assert "the last fit (step 69) said: " + pilot.history[-1]["reason"] in closing["reason"]
    assert closing["interval"] == pilot.history[-1]["interval"] and len(pilot.history) == 3


def test_a_loss_that_keeps_falling_leaves_f_star_at_its_bound_and_the_cooldown_anneals():
    # a fast drop onto a slow linear decline (as in language-model training): every online estimate
    # drifts, so f* stays 0, the warm-up does not "cross" early, and the cooldown starts the decay
    opt = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1)
    sched = AdaptiveWarmup.practical(opt, lr=0.1, div=10.0, f_star=0.0, delta_peak=0.5, ema=0.0,
                                     total_steps=1000, cooldown=200)
    online = OnlineFStar(sched, every=100)
    rng = np.random.default_rng(0)
    for step in range(1000):
        loss = 2.5 + 1.5 * np.exp(-step / 40) - 0.0008 * step + rng.normal(0, 0.03)
        online.observe(step, loss)
        sched.step(loss)
        if step == 798:  # its step(loss) sets the LR of step 799
            assert sched.phase == "warmup" and sched.f_star == 0.0 and online.skipped is not None
    assert sched._switch_step == 800 and sched._switch_lr < 0.1
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * 1e-4, rel=1e-6)


@pytest.mark.parametrize("curv, closes", [(0.199, True), (0.201, False)])
def test_the_step_test_ends_the_warm_up_when_the_trial_steps_are_within_the_stability_limit(curv, closes):
    """Trial steps at LR 0.01 with slope 1 and curvature c along the update: the best LR along them
    is 0.01/c and the stability limit twice that. At c = 0.199 the limit is just above the peak 0.1,
    so the test ends the warm-up before the first step, with no fit and the schedule's own f*; at
    c = 0.201 a warm-up is needed, and the pilot's steps go on under the practical schedule (the test
    is not repeated: observe does not test)."""
    trial = [{"step": s, "lr": 0.01, "loss": 4.0, "secant_slope": 1.0, "secant_curv": curv} for s in range(3)]
    sched = make_schedule(cooldown=40)
    pilot = Pilot(60, total_steps=400, step_test=True)
    closed = pilot.test(trial, sched)
    tests = [d for d in pilot.history if d["by"] == "step test"]
    assert len(tests) == 1 and tests[0]["step"] == 0 and pilot.step_tested and closed == closes
    assert [r["secant_curv"] for r in tests[0]["trial"]] == [curv] * 3
    restored = Pilot(60, total_steps=400, step_test=True)
    restored.load_state_dict(pilot.state_dict())
    assert restored.step_tested and restored.history == pilot.history
    old = {k: v for k, v in pilot.state_dict().items() if k != "step_tested"}  # a checkpoint from before the key
    restored.load_state_dict(old)
    assert restored.step_tested  # its pilot had logged a decision: past its first steps
    if closes:
        assert pilot.status == "no-warmup (step test)" and pilot.fit is None and not pilot.open
        assert pilot.decision == tests[0] and pilot.decision["branch"] == "no-warmup"
        assert sched.phase == "decay" and sched._switch_lr == pytest.approx(0.1) and sched.f_star == 0.0
        assert sched.optimizer.param_groups[0]["lr"] == pytest.approx(0.1)  # the first step runs at the peak
        return
    assert pilot.open and sched.phase == "warmup" and "a warm-up is needed" in tests[0]["reason"]
    assert sched.optimizer.param_groups[0]["lr"] < 0.1 / 5  # the practical start (η(Δ0) = lr/10)
    rows = planted_steps(40, 0).assign(lr=0.01, secant_slope=1.0, secant_curv=0.01)  # best LR 1: too late
    for row in rows.to_dict("records"):
        sched.step(row["loss"])
        pilot.observe(int(row["step"]), row, sched)
    assert len([d for d in pilot.history if d["by"] == "step test"]) == 1 and sched.phase == "warmup"


@pytest.mark.parametrize("curv, closes", [(0.0999, True), (0.1001, False)])
def test_the_window_test_ends_the_warm_up_where_no_fit_decides_and_a_step_at_the_peak_is_within_the_best_step(
        curv, closes):
    """Rows whose K shows no trend (every fit says "not yet"), probed at LR 0.01 with slope 1 and curvature
    c: the best LR along the update is 0.01/c, just above the peak 0.1 at c = 0.0999, so the window test
    closes the pilot at its first refit (step 49), after the fit's "not yet", with the schedule's own f*;
    at c = 0.1001 it says "not yet" at every refit inside the window (49, 59) and none after it. Without
    `window_test` the same rows leave the practical warm-up running."""
    rows = planted_steps(80, 0).assign(lr=0.01, secant_slope=1.0, secant_curv=curv, secant_K=5.0)
    sched, pilot, closed_at = _run_pilot(rows, 60, 400, window_test=True)
    windows = [d for d in pilot.history if d["by"] == "window test"]
    if closes:
        assert closed_at == 49 and [d["by"] for d in pilot.history] == ["fit", "window test"]
        assert pilot.status == "no-warmup (window test)" and pilot.decision == windows[0]
        assert pilot.decision["reason"].startswith("a step at the peak LR 0.1 is within 1× the best step along")
        assert sched.phase == "decay" and sched.f_star == 0.0 and not pilot.fixed_f_star
    else:
        assert closed_at is None and [d["step"] for d in windows] == [49, 59] and sched.phase == "warmup"
        assert all(d["branch"] == "not yet" for d in windows) and pilot.history[-1]["by"] == "fit"
        assert pilot.decision["by"] == "fit" and "fit_status" in pilot.decision  # the test's "not yet" is history
    _, alone, closed_at = _run_pilot(rows, 60, 400)
    assert closed_at is None and all(d["by"] == "fit" for d in alone.history)


def test_own_peak_measures_the_peak_as_the_median_best_step_over_the_window():
    """Steps at LR 0.01 with slope 1 and curvature cycling over 0.02, 0.04, 0.08: the best LR along
    them (0.01/c) cycles over 0.5, 0.25, 0.125, so the measured peak is the running median of those
    from the third probed step on (0.25 at every third step); after the window (60 steps) other
    curvatures no longer move it, and a checkpoint keeps it."""
    rows = planted_steps(80, 0).assign(lr=0.01, secant_slope=1.0, secant_K=5.0)  # K flat: no fit decides
    rows["secant_curv"] = [(0.02, 0.04, 0.08)[i % 3] if i < 60 else 1.0 for i in range(80)]
    sched = make_schedule(cooldown=40)
    sched.total_steps = 200
    pilot = Pilot(60, total_steps=200, own_peak=True)
    lrs = []
    for row in rows.to_dict("records"):
        sched.step(row["loss"])
        before = sched.get_last_lr()[0]
        pilot.observe(int(row["step"]), row, sched)
        lrs.append((sched.lr, before, sched.optimizer.param_groups[0]["lr"]))
    assert lrs[1][0] == 0.1 and pilot.peak == pytest.approx(0.25) and sched.lr == pytest.approx(0.25)
    assert lrs[2][0] == pytest.approx(0.25) and lrs[2][2] == pytest.approx(2.5 * lrs[2][1])  # the shape scales
    best = [0.01 / (0.02, 0.04, 0.08)[i % 3] for i in range(60)]
    assert [peak for peak, _, _ in lrs[2:60]] == pytest.approx([np.median(best[:i + 1]) for i in range(2, 60)])
    assert all(peak == pytest.approx(0.25) for peak, _, _ in lrs[59:])  # frozen after the window
    restored = Pilot(60, total_steps=200, own_peak=True)
    restored.load_state_dict(pilot.state_dict())
    assert restored.peak == pytest.approx(0.25) and restored.open and not restored.step_tested


def test_the_online_bound_on_the_warm_up_reads_delta_peak_for_the_new_f_star():
    """Noise-free loss = 1 + 3·(t + 20)^(−0.3) with Δ' chosen from κ (so it moves with f*): once f* is
    placed near 1, the warm-up is bounded where the curve reaches f* + Δ' of the new constants,
    t = (3/Δ')^(1/0.3) − 20, not where it reaches the Δ' of the constants for f* = 0 (a bound ~8×
    earlier here, which would end the warm-up for good)."""
    opt = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1)
    sched = AdaptiveWarmup.practical(opt, lr=0.1, div=10.0, f_star=0.0, kappa=5.0, ema=0.0, total_steps=100_000,
                                     cooldown=None, reduce=None)
    online = OnlineFStar(sched, every=60)
    for step in range(60):
        loss = 1.0 + 3.0 * (step + 20) ** -0.3
        online.observe(step, loss)
        sched.step(loss)
    assert sched.f_star == pytest.approx(1.0, abs=0.01) and sched.delta_peak < 0.5
    assert sched.warmup_bound == pytest.approx((3.0 / sched.delta_peak) ** (1 / 0.3) - 20, rel=0.05)
