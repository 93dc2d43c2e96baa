"""What a fit says about the warm-up at the current gap: none is needed, the fit drives it, or the
data cannot tell yet.

η(Δ) = Δ / K(Δ) rises while Δ > Δ' and falls below it, so a warm-up exists only while the gap is
above the peak gap Δ'. The decision reads the bootstrap interval of Δ' against the current gap Δ
and the measured gap range [Δ_lo, Δ_hi]:

- the whole interval lies above Δ: the peak is behind us (or K grows at most linearly in Δ, Δ' = ∞),
  so no warm-up is needed: go to the peak LR now ("no-warmup");
- η at Δ is already within RISE_LEFT of its peak η_max (at the upper end of the bootstrap interval
  of η_max/η(Δ)): what is left of the warm-up is too small to matter ("no-warmup" too);
- the interval lies inside the measured range: the data locate the peak, the fit drives the
  warm-up ("fit-driven");
- otherwise ("not yet"): the end of the warm-up would be an extrapolation below what was measured;
  keep measuring.

A fit's branch is only half the decision in a run: the pilot holds it to the stability limit at the
peak LR, measured on the last probed steps (`within_stability`), since the fit reads the gap, not the
step, and holds it back while the optimizer's own step per unit LR is still falling (`after_settling`).

A fit that must not drive a schedule at all (`schedule_problem_of`: not physical, a degenerate f*,
a verdict other than "supported") is "not yet" too, with that reason; constants written by hand (no
status) drive. One verdict is read more closely: "not identifiable" only because the gaps span a
narrow ratio (often so at the start of a run, where Δ is measured from f*'s lower bound and so
overstated) still decides when K's rise with Δ is significant by both tests the verdict uses (the
Spearman trend, and the bootstrap interval of the envelope's rise above 0) over enough rows. A K
that falls as Δ grows is "not supported" and so "not yet": read as "no warm-up", it cost more than it
won on the benchmark (docs/design.md §5).

The data can place Δ' only once the gaps have reached it, so on a falling loss a located peak is
usually already behind the current gap: in practice the closed loop runs the practical warm-up
until the fit says the rise is over, or that there never was one (docs/design.md §5).

>>> fit = {"constants": {"rho": 2.0, "K0": 1.0, "K1": 0.0, "K_rho": 1.0}, "status": "supported",
...        "f_star": 0.0, "delta_peak": 1.0, "eta_max": 0.5, "delta_range": [0.5, 4.0],
...        "intervals": {"delta_peak": [0.8, 1.2]}}
>>> decide(fit, 3.0).branch, decide(fit, 1.1).branch, decide(fit, 0.6).branch
('fit-driven', 'no-warmup', 'no-warmup')
>>> decide({**fit, "intervals": {"delta_peak": [0.1, 1.2]}}, 3.0).branch
'not yet'
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from smoothprobe.fit.compare import MIN_ROWS_ABOVE, TREND_P
from smoothprobe.fit.result import SmoothnessFit, schedule_problem_of
from smoothprobe.fit.schema import upgrade_fit
from smoothprobe.smoothness import eta, eta_max

BRANCHES = ("no-warmup", "fit-driven", "not yet")
RISE_LEFT = 0.1
"""A warm-up whose LR has at most this share left to rise (η_max/η(Δ) ≤ 1 + RISE_LEFT) is over."""
STEP_TEST_ROWS = 3
"""Probed steps whose median the step test reads: one batch's curvature along one step is noisy."""
STABILITY_LIMIT = 2.0
"""A step longer than this multiple of the best step along its direction raises the loss (quadratic model)."""
WINDOW_LIMIT = 1.0
"""The window test's multiple of the best step along the update: 1, a step at the peak must not pass the
minimum along its direction (`window_test`)."""
WINDOW_QUANTILE = 0.25
"""The quantile of the best step over the window's probed steps that the window test holds the peak to
(version 2; version 1 read the median of the last STEP_TEST_ROWS and passed on one noisy reading)."""
WINDOW_TEST = "window test"
"""A decision's `by` for `window_test` (a pilot's, at a refit in its window)."""
PROGRESS_STEPS = 50
"""Trial steps of the practical start that the progress test reads (`progress_test`)."""
PROGRESS_ENDS = 5
"""Steps averaged at each end of the progress test's trial steps: one batch's loss is noisy."""
PROGRESS_DROP = 0.175
"""The progress test's threshold on the start's relative loss drop, set on the tiny LLaMA's runs before a
test on seeds it had not seen (docs/design.md §5): that benchmark's only; on markov it failed."""
SETTLE_ROWS = 10
"""Steps whose median step size per unit LR `step_scale_ratio` reads at each end of its span."""
SETTLE_FALL = 0.1
"""A step per unit LR that fell by more than a factor 1 + SETTLE_FALL over the run so far is still settling."""
GUARDS = {"the stability limit": "within the stability limit", "the falling step size": "on a settled step size"}
"""What can hold a fit's decision back in a run (`Decision.held_by`: `within_stability`, `after_settling`),
and what a decision that passes it is, in words. A held decision that names none is the stability limit's
(run.json files from before the second guard)."""


@dataclass(frozen=True)
class Decision:
    """The branch a fit takes at gap `delta`, why, and on what: Δ' (`delta_peak`), its interval and
    the measured gap range. `step` is the training step it was taken at (None outside a run); `held`,
    the branch a guard held back, and `held_by`, which (a key of GUARDS; both None when nothing was
    held back)."""

    branch: str
    reason: str
    delta: float | None
    delta_peak: float | None
    interval: tuple[float, float] | None
    delta_range: tuple[float, float] | None
    step: int | None = None
    held: str | None = None
    held_by: str | None = None

    @property
    def decided(self) -> bool:
        """A branch that acts (anything but "not yet")."""
        return self.branch != "not yet"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (run.json's `decision`)."""
        out = asdict(self)
        for key in ("interval", "delta_range"):
            out[key] = None if out[key] is None else [_json(v) for v in out[key]]
        for key in ("delta", "delta_peak"):
            out[key] = _json(out[key])
        return out


def _json(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _number(value: Any) -> float | None:
    """A real number (inf allowed: Δ' = ∞ when Kρ = 0; JSON null read as +inf for Δ')."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return None if math.isnan(value) else float(value)


def _pair(value: Any, missing: float) -> tuple[float, float] | None:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        return None
    pair = [missing if v is None else _number(v) for v in value]
    return None if None in pair else (pair[0], pair[1])


def decide(fit: SmoothnessFit | Mapping, delta: float | None, step: int | None = None) -> Decision:
    """The branch for `fit` (a SmoothnessFit or fit.json content) at the current gap `delta`
    (None: the largest measured gap, i.e. the start of a run the fit was not measured on)."""
    d = fit.to_dict() if isinstance(fit, SmoothnessFit) else upgrade_fit(dict(fit)) if isinstance(fit, Mapping) else fit
    peak = _number(d.get("delta_peak")) if isinstance(d, Mapping) else None
    intervals = d.get("intervals") if isinstance(d, Mapping) else None
    band = _pair(intervals.get("delta_peak"), math.inf) if isinstance(intervals, Mapping) else None
    span = _pair(d.get("delta_range"), math.nan) if isinstance(d, Mapping) else None
    if span is not None and not all(math.isfinite(v) for v in span):
        span = None
    if delta is None and span is not None:
        delta = span[1]

    def out(branch: str, reason: str) -> Decision:
        return Decision(branch, reason, delta, peak, band, span, step)

    problem = schedule_problem_of({**d, "status": "supported"} if _rises(d) else d)
    if problem is not None:
        return out("not yet", problem)
    if d.get("status") is None:
        return out("fit-driven", "constants given by hand (no measurements to check them against)")
    if band is None:
        band = (peak, peak) if peak is not None else None
    if band is None or span is None or delta is None:
        return out("fit-driven", "no bootstrap interval or measured range to check Δ' against")
    low, high = band
    if low > delta:
        return out("no-warmup", f"the {_fmt(band)} interval of Δ' lies above the current gap {delta:.4g}: "
                                "the LR is already past its rise")
    left = _rise_left(d, delta)
    if left <= 1.0 + RISE_LEFT:
        return out("no-warmup", f"η at the current gap {delta:.4g} is within {100 * (left - 1):.1f}% of its peak "
                                f"(upper bound of η_max/η): what is left of the warm-up is too small to matter")
    if span[0] <= low and high <= span[1]:
        return out("fit-driven", f"the data locate Δ': its interval {_fmt(band)} lies inside the measured "
                                 f"range {_fmt(span)}")
    return out("not yet", f"Δ' interval {_fmt(band)} is not inside the measured range {_fmt(span)} nor above "
                          f"the current gap {delta:.4g}: the end of the warm-up would be an extrapolation")


def _rises(d: Mapping) -> bool:
    """A "not identifiable" verdict whose only missing piece is the spread of the gaps: K's rise with
    Δ is significant by the Spearman test (p < TREND_P, over at least MIN_ROWS_ABOVE rows above the
    envelope) and by the bootstrap interval of the rise, which lies above 0."""
    if d.get("status") != "not identifiable" or d.get("status_cause") != "narrow gaps":
        return False
    growth = (d.get("intervals") or {}).get("growth")
    rho, p = _number(d.get("spearman")), _number(d.get("spearman_p"))
    rows = (d.get("data") or {}).get("rows_used", 0) * (1.0 - float(d.get("quantile", 0.9)))
    return (isinstance(growth, (list, tuple)) and _number(growth[0]) is not None and growth[0] > 0
            and rho is not None and rho > 0 and p is not None and p < TREND_P and round(rows, 9) >= MIN_ROWS_ABOVE)


def _rise_left(d: Mapping, delta: float) -> float:
    """Upper end (at the fit's level) of η_max/η(Δ) over the bootstrap refits, or of the point
    estimate without them: how far the LR still has to rise from the current gap."""
    c = d["constants"]
    rows = (d.get("bootstrap") or {}).get("constants") or [[c["K0"], c["K1"], c["K_rho"]]]
    k = np.array([[np.nan if v is None else v for v in row] for row in rows], dtype=float)
    k = k[np.all(np.isfinite(k), axis=1)]
    if not len(k) or not delta > 0:
        return math.inf
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ratio = eta_max(k[:, 0], k[:, 1], k[:, 2], c["rho"]) / eta(delta, k[:, 0], k[:, 1], k[:, 2], c["rho"])
    ratio = np.where(np.isfinite(ratio) & (ratio > 0), ratio, np.inf)
    level = float(d.get("level") or 0.95)
    return float(np.quantile(ratio, 0.5 + level / 2, method="inverted_cdf"))


def _fmt(pair: tuple[float, float]) -> str:
    return f"[{pair[0]:.4g}, {pair[1]:.4g}]"


def step_test(rows: Sequence[Mapping], peak_lr: float, step: int | None = None) -> Decision:
    """The sharpness test at the start: "no-warmup" when a step at `peak_lr` would stay within the
    stability limit along the update direction, else "not yet" (a warm-up is needed).

    Along a step Δx taken at LR η the batch loss is f(x + τΔx) ≈ f(x) − τ·s + τ²·c/2, with the slope
    s = −⟨g_t, Δx⟩ and the curvature c = ⟨∇f(x + Δx) − g_t, Δx⟩ that the secant probe records
    (`secant_slope`, `secant_curv`). Its best multiple is τ* = s/c, so the best LR along this direction
    is η·s/c (any LR when c ≤ 0), and a step longer than STABILITY_LIMIT times it raises the loss
    (η·c/s > 2, the stability limit of the quadratic model). The test passes when the peak LR is
    within that limit for the median of the last STEP_TEST_ROWS probed steps.

    >>> rows = [{"lr": 0.1, "secant_slope": 1.0, "secant_curv": 0.5}] * 3   # best LR 0.1·2 = 0.2
    >>> step_test(rows, 0.4).branch, step_test(rows, 0.5).branch
    ('no-warmup', 'not yet')
    """
    stable, median, read = _within_limit(rows, peak_lr)

    def out(branch: str, reason: str) -> Decision:
        return Decision(branch, reason, None, None, None, None, step)

    if stable is None:
        return out("not yet", f"the step test needs {STEP_TEST_ROWS} probed steps, has {read}")
    said = f"(best LR along the update {median:.4g}, median of the last {STEP_TEST_ROWS} steps)"
    if stable:
        return out("no-warmup", f"a step at the peak LR {peak_lr:.4g} is within the stability limit, "
                                f"{STABILITY_LIMIT:g}× the best step along the update {said}")
    return out("not yet", f"a step at the peak LR {peak_lr:.4g} would pass the stability limit, "
                          f"{STABILITY_LIMIT:g}× the best step along the update {said}: a warm-up is needed")


def window_test(rows: Sequence[Mapping], peak_lr: float, step: int | None = None) -> Decision:
    """The window test, on a pilot's own probed rows where its fit says "not yet": "no-warmup" when a step
    at `peak_lr` is within WINDOW_LIMIT times the lower quartile (WINDOW_QUANTILE) of the best step along
    the update over every probed step of `rows`, the last STEP_TEST_ROWS of them curved upward along
    their update, and the optimizer's step per unit LR has settled (`still_falling`); else "not yet".

    The stability limit (twice the best step) says a step at the peak does not raise the loss; this test
    asks more, since it decides alone where a fit has not: that a step at the peak passes the minimum
    along the update on at most a quarter of the probed steps so far. A quantile over the whole window,
    not the median of the last few steps, so that one noisy high reading does not end a warm-up
    (docs/design.md §5). Among the quantile's rows, one that curved downward reads as any LR (`_best_lr`:
    the loss still falls along its update), but the last STEP_TEST_ROWS must curve upward, since a step
    that curves downward now has no best step to hold the peak to; a still-falling step size overshoots
    later (`after_settling`); a step size with too few rows to read (fewer than 2·SETTLE_ROWS) counts as
    settled, as it does for that guard.

    >>> rows = [{"step": t, "lr": 0.01, "update_norm": 0.01, "secant_slope": 1.0, "secant_curv": c}
    ...         for t, c in enumerate([0.5] * 15 + [0.25] * 5)]     # best LR 0.02 on 15 rows, 0.04 on 5
    >>> window_test(rows, 0.02).branch, window_test(rows, 0.021).branch
    ('no-warmup', 'not yet')
    >>> window_test(rows[:-1] + [{**rows[-1], "secant_curv": -0.1}], 0.001).reason[:40]
    'a probed step curved downward along its '
    """
    def out(branch: str, reason: str) -> Decision:
        return Decision(branch, reason, None, None, None, None, step)

    quartile, read = window_reading(rows)
    if read < STEP_TEST_ROWS:
        return out("not yet", f"the window test needs {STEP_TEST_ROWS} probed steps, has {read}")
    if any(curv <= 0 for _, _, curv in _probed(rows, STEP_TEST_ROWS)):
        return out("not yet", f"a probed step curved downward along its update (last {STEP_TEST_ROWS} steps): no "
                              "best step to hold the peak to")
    ratio, since = step_scale_ratio(rows)
    if still_falling(ratio):
        return out("not yet", f"the optimizer's step per unit LR is still falling ({ratio:.3g}× that of the "
                              f"{SETTLE_ROWS} steps up to step {since})")
    said = (f"{WINDOW_LIMIT:g}× the best step along the update ({quartile:.4g}, the {WINDOW_QUANTILE:g} quantile "
            f"over {read} probed steps)")
    if WINDOW_LIMIT * quartile >= peak_lr:
        return out("no-warmup", f"a step at the peak LR {peak_lr:.4g} is within {said}, on a settled step size")
    return out("not yet", f"a step at the peak LR {peak_lr:.4g} would pass {said}")


def window_reading(rows: Sequence[Mapping]) -> tuple[float, int]:
    """What the window test holds the peak LR to: the WINDOW_QUANTILE quantile (the lower one of the
    probed values) of the best LR along the update over the probed steps among `rows`, and how many it
    read (NaN when none).

    >>> window_reading([{"lr": 0.1, "secant_slope": 1.0, "secant_curv": c} for c in (0.5, 1.0, 2.0, 4.0)])
    (0.025, 4)
    """
    best = best_steps(rows)
    return (float(np.quantile(best, WINDOW_QUANTILE, method="lower")) if best else math.nan), len(best)


def progress_test(rows: Sequence[Mapping], step: int | None = None) -> Decision:
    """The progress test at the start: "no-warmup" when PROGRESS_STEPS steps of the practical start
    (lr/div) lower the loss by less than PROGRESS_DROP of where it began (means of the first and last
    PROGRESS_ENDS losses of `rows`), else "not yet" (a warm-up is needed; the fits decide its length).

    A start at lr/div (a tenth of the peak by default) that already moves the loss fast says that the
    peak is large for the first steps, so a warm-up is cheap and spares them; a slow start says that
    the LR is what holds the run back, and every step spent below the peak costs. On the tiny LLaMA
    (1,000 steps at the scanned lr*) the drop read 0.124-0.167 for Lion and Muon (best with no
    warm-up) and 0.176-0.303 for normalised SGD and AdamW (best with 25 %) over 102 starts
    (docs/design.md §5): the closest sat 0.001 above the threshold. The threshold is that benchmark's:
    on `markov` AdamW's and normalised SGD's starts fell 6-7 % and it said "no warm-up" where both
    needed one (`benchmarks/second_task.py`).

    >>> progress_test([{"loss": 5.0}] * 5 + [{"loss": 4.6}] * 40 + [{"loss": 4.5}] * 5).branch  # a 10 % drop
    'no-warmup'
    >>> progress_test([{"loss": 5.0}] * 5 + [{"loss": 4.3}] * 40 + [{"loss": 4.0}] * 5).branch  # 20 %
    'not yet'
    """
    def out(branch: str, reason: str) -> Decision:
        return Decision(branch, reason, None, None, None, None, step)

    drop, first, last = progress_drop(rows)
    if math.isnan(first):
        finite = sum(v is not None and math.isfinite(v) for v in (_number(r.get("loss")) for r in rows))
        return out("not yet", f"the progress test needs {PROGRESS_STEPS} finite losses, has {finite}: a warm-up is needed")
    if math.isnan(drop):
        return out("not yet", f"the progress test reads a relative drop, and the start's loss ({first:.4g}) is not "
                              "above 0: a warm-up is needed")
    said = (f"over {len(rows)} steps of the practical start the loss fell from {first:.4g} to {last:.4g}, "
            f"{drop:.1%} (means of {PROGRESS_ENDS} steps at each end; the threshold is {PROGRESS_DROP:.1%})")
    if drop < PROGRESS_DROP:
        return out("no-warmup", f"{said}: the start at lr/div is slow, so the peak LR from the first step")
    return out("not yet", f"{said}: the start already moves, so a warm-up is needed")


def progress_drop(rows: Sequence[Mapping]) -> tuple[float, float, float]:
    """The progress test's reading of `rows`: the relative drop from the mean of the first PROGRESS_ENDS
    losses to the mean of the last PROGRESS_ENDS, and those two means (all NaN with fewer than
    PROGRESS_STEPS rows or a loss that is not finite).

    >>> progress_drop([{"loss": 4.0}] * 5 + [{"loss": 3.5}] * 40 + [{"loss": 3.0}] * 5)
    (0.25, 4.0, 3.0)
    """
    losses = [_number(r.get("loss")) for r in rows]
    if len(losses) < PROGRESS_STEPS or any(v is None or not math.isfinite(v) for v in losses):
        return math.nan, math.nan, math.nan
    return ends_drop(losses[:PROGRESS_ENDS], losses[-PROGRESS_ENDS:])


def ends_drop(first: Sequence[float | None], last: Sequence[float | None]) -> tuple[float, float, float]:
    """The relative drop from the mean of the losses `first` to the mean of `last` (a decision's kept
    `progress_trial`), and the two means: all NaN where a loss is missing or not finite, the drop NaN
    where the first mean is not above 0.

    >>> ends_drop([4.0, 4.0], [3.0, 3.0]), ends_drop([4.0], [float("nan")])[0]
    ((0.25, 4.0, 3.0), nan)
    """
    if any(v is None or not math.isfinite(v) for v in (*first, *last)):
        return math.nan, math.nan, math.nan
    start, end = float(np.mean(first)), float(np.mean(last))
    return ((start - end) / start if start > 0 else math.nan), start, end


def progress_trial(rows: Sequence[Mapping]) -> dict[str, Any]:
    """What a decision keeps of the progress test's trial `rows`: their count and the losses it averaged
    at each end.

    >>> progress_trial([{"loss": float(t)} for t in range(12)])
    {'steps': 12, 'first': [0.0, 1.0, 2.0, 3.0, 4.0], 'last': [7.0, 8.0, 9.0, 10.0, 11.0]}
    """
    losses = [r.get("loss") for r in rows]
    return {"steps": len(losses), "first": losses[:PROGRESS_ENDS], "last": losses[-PROGRESS_ENDS:]}


def step_trial(rows: Sequence[Mapping]) -> list[dict[str, Any]]:
    """What a decision keeps of the step test's trial `rows`: each step's LR, loss and secant readings."""
    return [{k: r.get(k) for k in ("step", "lr", "loss", "secant_slope", "secant_curv")} for r in rows]


@dataclass(frozen=True)
class StartTest:
    """A test a pilot takes once, before the first step, on `steps` trial steps that are undone: its
    name (a decision's `by`), its verdict on the trial rows given the peak LR and the step it is taken
    at, and what the decision keeps of those rows (`Pilot.test`)."""

    name: str
    steps: int
    verdict: Callable[[Sequence[Mapping], float, int | None], Decision]
    kept: Callable[[Sequence[Mapping]], Any]


STEP_TEST = StartTest("step test", STEP_TEST_ROWS, step_test, step_trial)
PROGRESS_TEST = StartTest("progress test", PROGRESS_STEPS, lambda rows, peak_lr, step: progress_test(rows, step),
                          progress_trial)


def within_stability(decision: Decision, rows: Sequence[Mapping], peak_lr: float) -> Decision:
    """A fit's decision held to the stability limit: a branch that takes the LR to `peak_lr` (now, or
    at the end of a fit-driven warm-up) stands only while a step at `peak_lr` is within STABILITY_LIMIT
    times the median best step along the update over the last STEP_TEST_ROWS probed `rows` (the step
    test's rule, `step_test`); otherwise it is "not yet", `held` names the branch held back and the
    reason keeps the fit's. A fit reads the gap, not the step: at 10·lr* Lion's pilot fit drove the LR
    to 3× its stability limit and lost to the practical schedule it replaced (docs/design.md §5). Rows
    without the secant's slope and curvature (a real pilot always records them) leave it as it is.

    >>> d = Decision("no-warmup", "Δ' = ∞", 1.0, None, None, None, 50)
    >>> rows = [{"lr": 0.1, "secant_slope": 1.0, "secant_curv": 0.5}] * 3   # stability limit 0.4
    >>> within_stability(d, rows, 0.4).branch, within_stability(d, rows, 0.5).held
    ('no-warmup', 'no-warmup')
    """
    stable, median, _ = _within_limit(rows, peak_lr)
    if not decision.decided or stable is not False:
        return decision
    return _hold(decision, "the stability limit",
                 f"the stability limit held back the fit's {decision.branch}: a step at the peak LR {peak_lr:.4g} "
                 f"would pass {STABILITY_LIMIT:g}× the best step along the update ({median:.4g}, median of the "
                 f"last {STEP_TEST_ROWS} probed steps)")


def after_settling(decision: Decision, rows: Sequence[Mapping]) -> Decision:
    """A fit's decided branch held back while the optimizer's own step per unit LR is still falling:
    when `step_scale_ratio` of `rows` is below 1/(1 + SETTLE_FALL), it is "not yet" (`held` names it).
    A step at the peak taken now would be longer than the peak's steps once the scale has settled, the
    overshoot a warm-up spares: Adam's first steps are sign steps, and on the tiny LLaMA its step per
    unit LR falls 4.5-fold over the first 100 steps, while Lion's and normalised SGD's stay constant and
    Muon's grows (Kosson et al., "Analyzing & Reducing the Need for Learning Rate Warmup in GPT
    Training", 2024; docs/design.md §5). For unnormalised SGD the scale is the (momentum) gradient's
    norm, so the guard waits for that to stop falling. Rows without `update_norm` leave it as it is.

    >>> d = Decision("no-warmup", "Δ' = ∞", 1.0, None, None, None, 39)
    >>> falling = [{"step": t, "lr": 0.1, "update_norm": 0.1 * 2 ** (-t / 20)} for t in range(40)]
    >>> after_settling(d, falling).held, after_settling(d, [{"lr": 0.1, "update_norm": 0.1}] * 40).branch
    ('no-warmup', 'no-warmup')
    """
    ratio, since = step_scale_ratio(rows)
    if not decision.decided or not still_falling(ratio):
        return decision
    return _hold(decision, "the falling step size",
                 f"the optimizer's step per unit LR is still falling (median of the last {SETTLE_ROWS} steps "
                 f"{ratio:.3g}× that of the {SETTLE_ROWS} steps up to step {since}), so the fit's "
                 f"{decision.branch} waits for it to settle")


def still_falling(ratio: float) -> bool:
    """Whether a `step_scale_ratio` says the step per unit LR is still falling: below 1/(1 + SETTLE_FALL)
    (a NaN ratio, too few steps to read, is not).

    >>> still_falling(0.5), still_falling(0.95), still_falling(float("nan"))
    (True, False, False)
    """
    return ratio * (1.0 + SETTLE_FALL) < 1.0


def _hold(decision: Decision, guard: str, why: str) -> Decision:
    """`decision` held back by `guard` (a key of GUARDS): "not yet" for `why`, the fit's own reason kept."""
    return replace(decision, branch="not yet", held=decision.branch, held_by=guard,
                   reason=f"{why}; the fit said: {decision.reason}")


def step_scale_ratio(rows: Sequence[Mapping]) -> tuple[float, int | None]:
    """How far the optimizer's step per unit LR, ‖x_{t+1} − x_t‖ / η_t (`update_norm` / `lr`), moved
    over the last three quarters of `rows`: its median over the last SETTLE_ROWS steps over its median
    over the SETTLE_ROWS steps that end at the first quarter (the first SETTLE_ROWS steps below
    4·SETTLE_ROWS rows), and the last step of those (its row's `step`, else its index). NaN and None
    with fewer than 2·SETTLE_ROWS steps that have a positive LR and a finite update, or an early median
    of 0.

    >>> rows = [{"step": t, "lr": 0.1, "update_norm": 0.1 * (2.0 if t < 20 else 1.0)} for t in range(80)]
    >>> step_scale_ratio(rows)
    (0.5, 19)
    """
    scale, steps = [], []
    for i, row in enumerate(rows):
        lr, moved = _number(row.get("lr")), _number(row.get("update_norm"))
        if lr is not None and lr > 0 and moved is not None and math.isfinite(moved):
            scale.append(moved / lr)
            steps.append(i if row.get("step") is None else row["step"])
    if len(scale) < 2 * SETTLE_ROWS:
        return math.nan, None
    quarter = max(len(scale) // 4, SETTLE_ROWS)
    early, late = np.median(scale[quarter - SETTLE_ROWS:quarter]), np.median(scale[-SETTLE_ROWS:])
    return (float(late / early), int(steps[quarter - 1])) if early > 0 else (math.nan, None)


def _within_limit(rows: Sequence[Mapping], peak_lr: float) -> tuple[bool | None, float, int]:
    """The rule `step_test` and `within_stability` share: whether a step at `peak_lr` is within the
    stability limit of the median best step along the update over the last STEP_TEST_ROWS probed `rows`
    (None with fewer probed rows), that median, and how many probed rows it read."""
    median, read = best_step_lr(rows, STEP_TEST_ROWS)
    return (None if read < STEP_TEST_ROWS else STABILITY_LIMIT * median >= peak_lr), median, read


def best_step_lr(rows: Sequence[Mapping], last: int | None = None) -> tuple[float, int]:
    """The median best LR along the update (`_best_lr`) over the probed steps among `rows` (the last
    `last` of them; all when None), and how many probed steps it read (NaN when none).

    >>> best_step_lr([{"lr": 0.1, "secant_slope": 1.0, "secant_curv": c} for c in (0.5, 1.0, 2.0)])
    (0.1, 3)
    """
    best = best_steps(rows, last)
    return (float(np.median(best)) if best else math.nan), len(best)


def best_steps(rows: Sequence[Mapping], last: int | None = None) -> list[float]:
    """The best LR along the update (`_best_lr`) of each probed step among `rows` (the last `last` of them;
    all when None), the last first.

    >>> best_steps([{"lr": 0.1, "secant_slope": 1.0, "secant_curv": c} for c in (0.5, -1.0)])
    [inf, 0.2]
    """
    return [_best_lr(lr, slope, curv) for lr, slope, curv in _probed(rows, last)]


def _probed(rows: Sequence[Mapping], last: int | None = None) -> list[tuple[float, float, float]]:
    """(lr, secant slope, secant curvature) of the probed steps among `rows`, the last `last` of them
    (all when None), the last first."""
    found = []
    for row in reversed(rows):
        lr, slope, curv = (_number(row.get(key)) for key in ("lr", "secant_slope", "secant_curv"))
        if slope is not None and curv is not None and (lr or 0.0) > 0:
            found.append((lr, slope, curv))
        if last is not None and len(found) == last:
            break
    return found


def _best_lr(lr: float, slope: float, curv: float) -> float:
    """The LR of the best step along an update taken at `lr`: lr·slope/curv; any LR (inf) where the
    batch loss curves down along it, none (0) where the step went uphill."""
    if slope <= 0:
        return 0.0
    return math.inf if curv <= 0 else lr * slope / curv
