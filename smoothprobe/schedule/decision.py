"""What a fit says about the warm-up at the current gap: none is needed, the fit drives it, or the
data cannot tell yet.

η(Δ) = Δ / K(Δ) rises while Δ > Δ' and falls below it, so a warm-up exists only while the gap is
above the peak gap Δ'. The decision reads the bootstrap interval of Δ' against the current gap Δ
and the measured gap range [Δ_lo, Δ_hi]:

- the whole interval lies above Δ: the peak is behind us (or K grows at most linearly in Δ, Δ' = ∞),
  so no warm-up is needed: go to the peak LR now ("no-warmup");
- the interval lies inside the measured range: the data locate the peak, the fit drives the
  warm-up ("fit-driven");
- otherwise ("not yet"): the end of the warm-up would be an extrapolation below what was measured;
  keep measuring.

A fit that must not drive a schedule at all (`schedule_problem_of`: not supported, not physical, a
degenerate f*) is "not yet" too, with that reason; constants written by hand (no status) drive.

The data can place Δ' only once the gaps have reached it, so on a falling loss a located peak is
usually already behind the current gap: in practice the closed loop runs the practical warm-up
until the fit says the rise is over, or that there never was one (docs/design.md §5).

>>> fit = {"constants": {"rho": 2.0, "K0": 1.0, "K1": 0.0, "K_rho": 1.0}, "status": "supported",
...        "f_star": 0.0, "delta_peak": 1.0, "eta_max": 0.5, "delta_range": [0.5, 4.0],
...        "intervals": {"delta_peak": [0.8, 1.2]}}
>>> decide(fit, 3.0).branch, decide(fit, 0.6).branch
('fit-driven', 'no-warmup')
>>> decide({**fit, "intervals": {"delta_peak": [0.1, 1.2]}}, 3.0).branch
'not yet'
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from smoothprobe.fit.result import SmoothnessFit, schedule_problem_of

BRANCHES = ("no-warmup", "fit-driven", "not yet")


@dataclass(frozen=True)
class Decision:
    """The branch a fit takes at gap `delta`, why, and on what: Δ' (`delta_peak`), its interval and
    the measured gap range. `step` is the training step it was taken at (None outside a run)."""

    branch: str
    reason: str
    delta: float | None
    delta_peak: float | None
    interval: tuple[float, float] | None
    delta_range: tuple[float, float] | None
    step: int | None = None

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
    d = fit.to_dict() if isinstance(fit, SmoothnessFit) else fit
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

    problem = schedule_problem_of(d)
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
    if span[0] <= low and high <= span[1]:
        return out("fit-driven", f"the data locate Δ': its interval {_fmt(band)} lies inside the measured "
                                 f"range {_fmt(span)}")
    return out("not yet", f"Δ' interval {_fmt(band)} is not inside the measured range {_fmt(span)} nor above "
                          f"the current gap {delta:.4g}: the end of the warm-up would be an extrapolation")


def _fmt(pair: tuple[float, float]) -> str:
    return f"[{pair[0]:.4g}, {pair[1]:.4g}]"
