"""Online sources for the adaptive schedule: f* from the loss curve so far, constants from the probes so far, and
the closed loop's pilot that decides the warm-up from them."""

from __future__ import annotations

import math
import warnings
from dataclasses import replace

import numpy as np
import pandas as pd

from smoothprobe.errors import SmoothprobeError
from smoothprobe.fit import fit_frame
from smoothprobe.fit.data import MIN_POINTS
from smoothprobe.fit.fstar import MIN_LOSS_POINTS, estimate_f_star
from smoothprobe.optim import MOMENTUM_STATE, momentum_memory, restart_momentum
from smoothprobe.schedule.adaptive import AdaptiveWarmup
from smoothprobe.schedule.decision import (
    GUARDS,
    RISE_LEFT,
    STEP_TEST,
    STEP_TEST_ROWS,
    WINDOW_TEST,
    StartTest,
    after_settling,
    best_step_lr,
    decide,
    window_test,
    within_stability,
)
from smoothprobe.smoothness import FStar


class OnlineFStar:
    """Every `every` steps, fit the saturating power law of `estimate_f_star` to the losses seen so
    far and hand the estimate to the scheduler. Until the first estimate f* is `initial` (0 for
    cross-entropy). An estimate whose interval reaches the first loss is ignored: the curve does not
    yet show where it saturates, and so is a degenerate one (`FStarEstimate.degenerate`: too few
    losses, f* above the recent loss, no saturation); `skipped` says why. With `bound_warmup`, each
    estimate also bounds the warm-up at the step where the fitted curve reaches f* + Δ'
    (`crossing_step`): the bound comes from the measured loss curve, not a hand-set fraction."""

    def __init__(self, scheduler: AdaptiveWarmup, every: int, initial: float = 0.0,
                 bound_warmup: bool = True) -> None:
        if every < 1:
            raise SmoothprobeError(f"f* refit interval must be >= 1, got {every}")
        self.scheduler, self.every, self.bound_warmup = scheduler, every, bound_warmup
        self.skipped: str | None = None
        self.steps: list[int] = []
        self.losses: list[float] = []
        scheduler.set_f_star(initial)

    def observe(self, step: int, loss: float) -> None:
        """Record the step's loss; refit on the cadence."""
        if math.isfinite(loss):
            self.steps.append(step)
            self.losses.append(loss)
        if (step + 1) % self.every or len(self.losses) < MIN_LOSS_POINTS:
            return
        try:
            estimate = estimate_f_star(np.array(self.steps), np.array(self.losses))
        except SmoothprobeError as exc:
            warnings.warn(f"f* refit at step {step} failed: {exc}", RuntimeWarning, stacklevel=2)
            return
        if estimate.interval[1] >= self.losses[0] or estimate.degenerate is not None:
            self.skipped = estimate.degenerate or "its interval reaches the first loss"
            return
        self.skipped = None
        try:
            self.scheduler.set_f_star(estimate.value)
        except SmoothprobeError as exc:
            warnings.warn(f"f* estimate {estimate.value:.4g} at step {step} not used: {exc}", RuntimeWarning,
                          stacklevel=2)
            return
        if self.bound_warmup and self.scheduler.constants is not None and self.scheduler.phase == "warmup":
            # Δ' of the constants just re-derived for the new f* (the last step's record holds the old one)
            self.scheduler.bound_warmup(crossing_step(estimate.a, estimate.b, estimate.t0, self.steps[0],
                                                        self.scheduler.delta_peak, step + 1, self.scheduler.total_steps))


def crossing_step(a: float, b: float, t0: float, first_step: int, gap: float, now: int,
                  total_steps: int | None) -> int | None:
    """Step at which L(t) = f* + a·(t − first_step + t0)^(−b) reaches f* + `gap`, if after `now`
    and before `total_steps`; else None (no bound, also where that step is beyond a float's range).

    >>> crossing_step(4.0, 1.0, 1.0, 0, 0.5, 0, 100), crossing_step(3.0, 0.02, 1.0, 0, 1e-6, 10, 1000)
    (7, None)
    """
    if not all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in (a, b, gap)):
        return None
    try:
        t = (a / gap) ** (1.0 / b) - t0 + first_step
    except OverflowError:
        return None
    if not math.isfinite(t) or t < now or (total_steps is not None and t >= total_steps):
        return None
    return math.ceil(t)


class OnlineRefit:
    """Source (c) of the constants: every `every` steps, fit K(Δ) to the probe column recorded so far
    (no bootstrap) and adopt the fitted constants when the fit calls the model supported, scaled so
    η still peaks at the schedule's `lr`. Until then the schedule keeps its own constants."""

    def __init__(self, scheduler: AdaptiveWarmup, every: int, column: str = "secant_K") -> None:
        if every < 1:
            raise SmoothprobeError(f"refit interval must be >= 1, got {every}")
        self.scheduler, self.every, self.column = scheduler, every, column
        self.rows: list[dict] = []
        self.status = "waiting"

    def observe(self, step: int, row: dict) -> None:
        """Keep the step's probe value; refit on the cadence once enough probed steps exist."""
        value = row.get(self.column)
        if value is not None and math.isfinite(value):
            self.rows.append({"step": step, "loss": row["loss"], self.column: value})
        if (step + 1) % self.every or len(self.rows) < MIN_POINTS:
            return
        try:
            fit = fit_frame(pd.DataFrame(self.rows), f_star=self.scheduler.f_star, column=self.column,
                            bootstrap=0)
        except SmoothprobeError as exc:
            self.status = f"failed: {exc}"
            return
        if fit.status != "supported":  # a fit's envelope is physical (K0, Kρ > 0): only the verdict can refuse
            self.status = fit.status
            return
        self.scheduler.adopt(fit, bound=self.scheduler.warmup_bound)
        self.status = "adopted"

    def state_dict(self) -> dict:
        """The status for a checkpoint (the probe rows are refilled from steps.jsonl on resume)."""
        return {"status": self.status}

    def load_state_dict(self, state: dict) -> None:
        self.status = str(state["status"])


PILOT_BOOTSTRAP = 50
"""Bootstrap resamples of each of the pilot's fits (the decision reads the interval of Δ')."""
PILOT_REFIT = 10
"""Steps between the pilot's refits while it probes every step; after the window, probed rows."""
PILOT_MIN_ROWS = 50
"""Probed rows before the pilot's first fit: five above a τ = 0.9 envelope (the fit's minimum)."""


def fit_or_lower_bound(rows: pd.DataFrame, bootstrap: int, given: FStar | None = None):
    """K(Δ) fitted to `rows` with a `given` f*, else f* = auto; where the loss curve cannot place f*
    (the estimate is degenerate: it drifts, or the curve does not yet saturate), with f* = the losses'
    lower bound min(0, least loss) instead, which only overstates every gap. The closed loop's pilot
    fits this way, and so does the benchmark's recorded run whose fit drives `train --fit`. A `given`
    f* (a number, or the task's exact one; not auto) is used as it is: an estimate from a short pilot
    placed f* at the loss of the moment (markov) and would override the known value (docs/design.md §5)."""
    if given is not None and not given.auto:
        return fit_frame(rows, f_star=given, bootstrap=bootstrap)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        fit = fit_frame(rows, f_star="auto", bootstrap=bootstrap)
    if (fit.f_star_fit or {}).get("degenerate"):
        bound = FStar(min(0.0, float(rows["loss"].min())), "lower bound (the loss curve cannot place f*)")
        fit = fit_frame(rows, f_star=bound, bootstrap=bootstrap)
    return fit


class Pilot:
    """The closed loop in one run: probe from the first step under the practical schedule, refit K(Δ) with
    f* = auto (or the run's, where it is known) every `PILOT_REFIT` steps once there are enough rows, and
    let each fit decide (`decision.decide`) at the current gap, held to the stability limit at the peak
    LR on the last probed steps (`decision.within_stability`) and held back while the optimizer's step
    per unit LR is still falling (`decision.after_settling`): "no-warmup" skips the rest of the warm-up,
    "fit-driven" hands the schedule to the fit (`AdaptiveWarmup.adopt`), "not yet" keeps the practical schedule and
    goes on probing; a decision that raises the LR at once also restarts a momentum whose memory is
    longer than the run so far (`_restart_on_jump`). The first `steps` steps are the probing window
    (every step probed); a trainer then thins the probes to a fixed interval and the pilot refits
    after every `PILOT_REFIT` new probed rows, until a decision or until the schedule leaves its warm-up.

    f* is the run's where it is known (`f_star`: a number or the task's exact one), else estimated from
    the pilot's losses, or set to their lower bound where the pilot is too short to place it
    (`fit_or_lower_bound`); a fit that decides keeps its f* for the rest of the run. The fit's
    peak over the measured gaps is rescaled to the schedule's `lr`. With `own_peak` that lr is measured,
    not given: at every step of the window the peak moves to the median best LR along the update over
    the probed steps so far (`decision.best_step_lr`, from the secant probe's slope and curvature;
    `AdaptiveWarmup.set_peak` keeps the schedule's shape), and it stays where the window or a decision
    leaves it (`peak`). The fit's own η_max is no LR: Δ/K carries the scale of the loss over the
    curvature, not of a step (docs/design.md §5). A fit-driven warm-up is also bounded by the step at
    which the pilot's fitted loss curve L(t) = f* + a·(t + t0)^(−b) is predicted to reach f* + Δ' (a
    known f* fits no such curve: the warm-up then ends at the crossing itself or at the cool-down).
    `status` is "probing", the branch taken ("no-warmup", "fit-driven …") or "not yet: …"; `decision`
    says when, at which gap and on what interval, and `by` whom: "fit", "step test" with `step_test`,
    "progress test" with `progress_test` or "window test" with `window_test` (at a refit inside the
    window where the fit said "not yet": no further warm-up when a step at the peak is within the best
    step along the update on three quarters of the window's probed steps, `decision.window_test`); the step test,
    which tests once (`test`), before the first step, whether a step at the schedule's lr is within the
    stability limit along the update (`decision.step_test`) on STEP_TEST_ROWS trial steps at the
    practical start's LR that the trainer undoes: if so there is no warm-up (f* then stays the
    schedule's own); if not, a warm-up is needed and the fits (and the window test) decide its length. The test reads steps
    at the start's small LR on purpose: taken at the peak, a step beyond the region where the loss along
    it is quadratic measures its own LR as the best one; and it undoes them because even three slow
    steps cost Lion about 2 σ (docs/design.md §5). Later steps get no test of their own (only a fit's
    decision is held to the limit): the best step grows as the loss falls even where the warm-up
    matters for longer (AdamW). With `progress_test`, where the step test has not said "no warm-up",
    the trainer takes PROGRESS_STEPS steps of the practical start in a row and undoes them; a loss that
    fell by less than PROGRESS_DROP over them means no warm-up (`decision.progress_test`, set on one
    benchmark and failed on a second: docs/design.md §5). `history` keeps every refit's
    decision (and the start tests'), so a run says what each fit said, not only the last. The tests
    are off unless asked for here; `AdaptiveConfig.window_tested` says whether a run asks for the window test.
    """

    def __init__(self, steps: int, *, own_peak: bool = False, allow_unsupported: bool = False,
                 total_steps: int | None = None, step_test: bool = False, progress_test: bool = False,
                 window_test: bool = False, f_star: FStar | None = None) -> None:
        if steps < 1 or (total_steps is not None and steps >= total_steps):
            raise SmoothprobeError(f"pilot must be between 1 and total_steps - 1 steps, got {steps}")
        self.steps, self.own_peak, self.allow_unsupported = steps, own_peak, allow_unsupported
        self.f_star = f_star  # the run's f* when it is known (fits use it as it is), else None or auto
        self.step_test, self.progress_test, self.step_tested = step_test, progress_test, False
        self.window_test = window_test
        self.rows: list[dict] = []
        self.status = "probing"
        self.fit = None
        self.decision: dict | None = None
        self.history: list[dict] = []
        self.refits = 0
        self.peak: float | None = None
        self.closed = False
        self._last_fit_rows = 0

    @property
    def fixed_f_star(self) -> bool:
        """Whether a fit's decision fixed f* (its constants are fitted to Δ from its own f*); a test's
        (step, progress, window), or a warm-up that ended undecided, leave the schedule's f* as it is."""
        decision = self.decision or {}
        return decision.get("branch") in ("no-warmup", "fit-driven") and decision.get("by", "fit") == "fit"

    @property
    def open(self) -> bool:
        """Still probing for a decision (not closed by one, nor by the end of the warm-up)."""
        return not self.closed

    def due(self, step: int) -> bool:
        """A refit is due: in the window every PILOT_REFIT steps and at its last step, after it
        every PILOT_REFIT new probed rows; never with fewer than PILOT_MIN_ROWS probed rows."""
        probed = sum(1 for r in self.rows if math.isfinite(r.get("secant_K") or math.nan))
        if probed < PILOT_MIN_ROWS:
            return False
        if step < self.steps:
            return (step + 1) % PILOT_REFIT == 0 or step == self.steps - 1
        return probed - self._last_fit_rows >= PILOT_REFIT

    def observe(self, step: int, row: dict, scheduler: AdaptiveWarmup) -> bool:
        """Keep the step's row; on a refit, decide and act on `scheduler`. True when the pilot
        closed at this step (decided, or the schedule's warm-up ended first)."""
        if not self.open:
            return False
        self.rows.append({k: v for k, v in row.items() if isinstance(v, (int, float)) or v is None})
        if scheduler.phase != "warmup":
            self.decision = self._warmup_ended(step, scheduler.last_record().get("delta"))
            self.status = f"not yet: {self._ended_undecided()}"
            self.closed = True
            return True
        if self.own_peak and step < self.steps:
            self._measure_peak(scheduler)
        if not self.due(step):
            return False
        frame = pd.DataFrame(self.rows)
        self._last_fit_rows = int(frame["secant_K"].notna().sum()) if "secant_K" in frame else 0
        self.refits += 1
        try:
            self.fit = fit_or_lower_bound(frame, PILOT_BOOTSTRAP, self.f_star)
        except SmoothprobeError as exc:
            self.status = f"not yet: the fit failed ({exc})"
            return self._window(step, scheduler)
        smoothed = scheduler.last_record().get("loss_smoothed") or row["loss"]
        decision = decide(self.fit, smoothed - self.fit.f_star, step)
        # allow_unsupported forces the window's last fit past its own "not yet", never past the guards below
        if not decision.decided and self.allow_unsupported and step >= self.steps - 1:
            decision = replace(decision, branch="fit-driven", reason=f"forced by allow_unsupported ({decision.reason})")
        decision = after_settling(within_stability(decision, self.rows, scheduler.lr), self.rows)
        self.decision = self._log({**decision.to_dict(), "fit_status": self.fit.status}, "fit")
        if not decision.decided:
            self.status = f"not yet: {decision.reason}"
            return self._window(step, scheduler)
        before = float(scheduler.get_last_lr()[0])
        if decision.branch == "no-warmup":
            scheduler.skip_warmup(f_star=self.fit.f_star)
            self.status = "no-warmup"
        else:
            curve = self.fit.f_star_fit or {}
            bound = crossing_step(curve.get("a"), curve.get("b"), curve.get("t0"), self.rows[0]["step"],
                                  self.fit.delta_peak, step + 1, scheduler.total_steps)
            scheduler.adopt(self.fit, bound=bound)
            self.status = "fit-driven" + ("" if bound is None else f" (warm-up bounded at step {bound})")
        self._restart_on_jump(scheduler, before, step + 1)
        self.closed = True
        return True

    def test(self, rows: list[dict], scheduler: AdaptiveWarmup, test: StartTest = STEP_TEST) -> bool:
        """A start test (`decision.STEP_TEST` on `Trainer.trial_rows`, `decision.PROGRESS_TEST` on
        `Trainer.trial_start`) on trial steps that were undone, before the first step. "no-warmup"
        skips the warm-up and closes the pilot (True); otherwise the fits (and the window test) decide its length. The
        decision keeps what the test keeps of the rows it read (`StartTest.kept`)."""
        verdict, trial = test.verdict(rows, scheduler.lr, rows[0]["step"] if rows else None), test.kept(rows)
        self.step_tested = True  # the start's tests ran (a resumed run does not take them again)
        self.decision = self._log({**verdict.to_dict(), "trial": trial}, test.name)
        if not verdict.decided:
            self.status = f"not yet: {verdict.reason}"
            return False
        return self._skip_by_test(scheduler, test.name, 0)

    def _window(self, step: int, scheduler: AdaptiveWarmup) -> bool:
        """With `window_test`, at a refit inside the window where no fit decided (after `allow_unsupported`
        had its turn): the window test on the probed rows so far (`decision.window_test`); "no-warmup"
        skips the rest of the warm-up (f* stays the schedule's own) and closes the pilot (True)."""
        if not self.window_test or step >= self.steps:
            return False
        verdict = window_test(self.rows, scheduler.lr, step)
        logged = self._log(verdict.to_dict(), WINDOW_TEST)
        if not verdict.decided:  # the fit's "not yet" stays the pilot's decision; the test's is in history
            return False
        self.decision = logged
        return self._skip_by_test(scheduler, WINDOW_TEST, step + 1)

    def _skip_by_test(self, scheduler: AdaptiveWarmup, name: str, taken: int) -> bool:
        """A test's "no-warmup" after `taken` steps: the warm-up ends now with the schedule's own f* (a test
        fits no constants), a long momentum restarts (`_restart_on_jump`), and the pilot closes (True)."""
        before = float(scheduler.get_last_lr()[0])
        scheduler.skip_warmup()
        self._restart_on_jump(scheduler, before, taken)
        self.status, self.closed = f"no-warmup ({name})", True
        return True

    def _measure_peak(self, scheduler: AdaptiveWarmup) -> None:
        """Move the schedule's peak to the median best LR along the update over the probed steps so
        far, once STEP_TEST_ROWS of them exist (an LR that is not finite and positive is no peak)."""
        peak, read = best_step_lr(self.rows)
        if read >= STEP_TEST_ROWS and math.isfinite(peak) and peak > 0:
            scheduler.set_peak(peak)
            self.peak = peak

    def _restart_on_jump(self, scheduler: AdaptiveWarmup, before: float, taken: int) -> None:
        """A decision that raised the LR by more than RISE_LEFT at once, after `taken` steps, restarts
        the optimizer's momentum (`optim.restart_momentum`) where its memory (`optim.momentum_memory`)
        is longer than those steps: the buffer then holds nothing but the slow start and would steer the
        long steps by it for as long again (Lion at lr* after 50 steps at lr/10: 1.768 kept, 1.677
        restarted). A shorter buffer has turned over already and does so again within a few long steps;
        zeroing it only makes the first steps at the peak follow single-batch gradients, which is the
        start that costs normSGD its warm-up (1.888 kept, 2.058 restarted; no warm-up: 2.039;
        docs/design.md §5). The decision records the buffers zeroed (`momentum_restarted`: None where
        nothing was restarted, 0 before the first step, where there are none); a restart under an
        optimizer whose state holds none of MOMENTUM_STATE warns."""
        optimizer, zeroed = scheduler.optimizer, None
        if float(scheduler.get_last_lr()[0]) > (1.0 + RISE_LEFT) * before and momentum_memory(optimizer) > taken:
            zeroed = restart_momentum(optimizer)
            if zeroed == 0 and any(optimizer.state.values()):
                warnings.warn(f"the pilot's decision raised the LR at once, but {type(optimizer).__name__} keeps "
                              f"no first moment under {', '.join(MOMENTUM_STATE)}: its momentum was not restarted",
                              RuntimeWarning, stacklevel=2)
        self.decision["momentum_restarted"] = self.history[-1]["momentum_restarted"] = zeroed

    def _log(self, decision: dict, by: str) -> dict:
        """Add a decision to `history`; returns it as `decision` (with who took it and the refit count)."""
        entry = {**decision, "by": by, "refits": self.refits}
        self.history.append(entry)
        return entry

    def _ended_undecided(self) -> str:
        """Why a warm-up that ended first is "not yet": no fit decided, or none past the guards that held
        one back (a decision that names no guard is from before `held_by`: the stability limit's)."""
        held = {d.get("held_by") or "the stability limit" for d in self.history if d.get("held")}
        passed = " and ".join(words for guard, words in GUARDS.items() if guard in held)
        return "the practical warm-up ended before a fit decided" + (f" {passed}" if passed else "")

    def _warmup_ended(self, step: int, delta: float | None) -> dict:
        """"not yet" at the step the practical warm-up ended, at the gap then; the last fit's interval
        and range, and what it said, are kept beside it (`last_fit`)."""
        last = next((d for d in reversed(self.history) if d.get("by") == "fit"), None)
        reason = self._ended_undecided()
        if last is not None:
            reason += f"; the last fit (step {last['step']}) said: {last['reason']}"
        keep = ("delta_peak", "interval", "delta_range")
        return {"branch": "not yet", "reason": reason, "step": step, "delta": delta,
                **{k: (last or {}).get(k) for k in keep}, "by": None if last is None else "fit",
                "last_fit": last, "refits": self.refits}

    def state_dict(self) -> dict:
        """Status, decisions and refit count for a checkpoint (rows are refilled from steps.jsonl)."""
        return {"status": self.status, "decision": self.decision, "history": self.history, "refits": self.refits,
                "last_fit_rows": self._last_fit_rows, "closed": self.closed, "peak": self.peak,
                "step_tested": self.step_tested}

    def load_state_dict(self, state: dict) -> None:
        self.status, self.decision = str(state["status"]), state["decision"]
        self.history = list(state.get("history", []))  # checkpoints before the history have none
        self.refits, self._last_fit_rows = int(state["refits"]), int(state["last_fit_rows"])
        self.closed = bool(state["closed"])
        self.peak = state.get("peak")  # checkpoints before the measured peak have none
        # checkpoints before the one-shot test: a pilot that has refitted or decided is past its first steps
        self.step_tested = bool(state.get("step_tested", self.refits > 0 or bool(self.history)))
