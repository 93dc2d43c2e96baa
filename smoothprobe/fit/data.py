"""Select and validate the (Δ, K) pairs of a run's step table for a fit."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from smoothprobe.errors import SmoothprobeError

MIN_POINTS = 30
"""Fewest rows a fit runs on; it gives a verdict (not "not identifiable": few rows) from VERDICT_ROWS."""
VERDICT_ROWS = 50
"""Rows at which the default τ = 0.9 envelope has five rows above it (`fit.compare.MIN_ROWS_ABOVE`), the
fewest that place its three constants: fewer give constants but no verdict."""
LOSS_COLUMNS = ("loss", "loss_after")


def verdict_every(steps: int) -> int:
    """The probe interval that gives a run of `steps` steps VERDICT_ROWS probed rows (at least 1)."""
    return max(1, steps // VERDICT_ROWS)


@dataclass(frozen=True)
class FitData:
    """Time-ordered pairs used by the fit, plus what was dropped and why."""

    step: np.ndarray
    delta: np.ndarray
    k: np.ndarray
    grad_dual: np.ndarray | None
    window: tuple[int, int]
    rows_in_window: int
    dropped_nan: int
    dropped_nonpositive: int

    def summary(self) -> dict:
        """Plain counts and ranges for the fit report."""
        return {
            "rows_in_window": self.rows_in_window, "rows_used": len(self.k),
            "dropped_nan": self.dropped_nan, "dropped_nonpositive_delta": self.dropped_nonpositive,
            "delta_range": [float(self.delta.min()), float(self.delta.max())],
            "k_range": [float(self.k.min()), float(self.k.max())],
        }


def window_rows(steps: pd.DataFrame, window: tuple[int | None, int | None] | None) -> pd.DataFrame:
    """Rows with start ≤ step < end, sorted by step; errors when the window misses the run."""
    if "step" not in steps.columns:
        raise SmoothprobeError("the run's steps have no 'step' column")
    step = pd.to_numeric(steps["step"], errors="coerce").to_numpy(dtype=float)
    if not np.isfinite(step).all():
        bad = int((~np.isfinite(step)).sum())
        raise SmoothprobeError(f"the run's steps hold {bad} row(s) whose 'step' is not a finite number; "
                               "every row needs its step (drop those rows)")
    repeated = pd.Series(step).duplicated()
    if repeated.any():
        raise SmoothprobeError(f"the run's steps hold {int(repeated.sum())} repeated step(s) (first: step "
                               f"{step[repeated.to_numpy()][0]:g}); each step must appear once, or it counts twice in the "
                               "fit (keep the last row of each step)")
    rows = steps.sort_values("step", kind="stable")
    if window is None:
        return rows
    start, end = window
    first, last = int(rows["step"].min()), int(rows["step"].max())
    if (start is not None and end is not None and start >= end) or \
            (start is not None and start > last) or (end is not None and end <= first):
        raise SmoothprobeError(f"window {'' if start is None else start}:{'' if end is None else end} does not "
                               f"overlap the run's steps {first}..{last}" if start is None or end is None or start < end
                               else f"window {start}:{end} is empty: its start must be below its end")
    keep = np.ones(len(rows), dtype=bool)
    if start is not None:
        keep &= rows["step"].to_numpy() >= start
    if end is not None:
        keep &= rows["step"].to_numpy() < end
    return rows[keep]


def fit_data(
    steps: pd.DataFrame, column: str, f_star: float, window: tuple[int | None, int | None] | None,
    delta_from: str = "loss",
) -> FitData:
    """Δ = `delta_from` − f* and K = `column` on the window; rows with NaN or Δ ≤ 0 are counted
    and dropped (never floored), and fewer than MIN_POINTS left is an error."""
    if delta_from not in LOSS_COLUMNS:
        raise SmoothprobeError(f"delta_from must be one of {LOSS_COLUMNS}; got {delta_from!r}")
    from smoothprobe.probes import k_columns  # the columns the registered probes offer as K

    if not any(c in steps.columns for c in k_columns()):
        raise SmoothprobeError(f"the run has no probe columns (expected one of {k_columns()}); "
                               "record it with a probe enabled")
    for name in (column, delta_from):
        if name not in steps.columns:
            raise SmoothprobeError(f"unknown column {name!r}; the run has {list(steps.columns)}")
        if steps[name].isna().all():
            raise SmoothprobeError(f"column {name!r} is all NaN in this run")
    if column not in k_columns():
        raise SmoothprobeError(f"column {column!r} is not a curvature a probe measures; the fit takes one of "
                               f"{', '.join(c for c in k_columns() if c in steps.columns)} (a probe's k_columns)",
                               params=["column"])
    rows = window_rows(steps, window)
    k = rows[column].to_numpy(dtype=float)
    delta = rows[delta_from].to_numpy(dtype=float) - f_star
    finite = np.isfinite(k) & np.isfinite(delta)
    positive = finite & (delta > 0)
    if positive.sum() < MIN_POINTS:
        span = int(rows["step"].max() - rows["step"].min() + 1) if len(rows) else 0
        below = int((finite & ~positive).sum())
        if below > (~finite).sum():  # most probed rows lie at or below f*: more steps cannot help
            fix = (f"f* = {f_star:g} is not below the losses (least {delta_from} in the window "
                   f"{np.nanmin(rows[delta_from].to_numpy(dtype=float)):.6g}): give an f* below them")
            params = ["f_star"]
        else:
            fix = (f"record probes on at least {MIN_POINTS} steps (a verdict at τ = 0.9 needs {VERDICT_ROWS}): "
                   f"every {verdict_every(span)} over these {span} steps, or every 2 over "
                   f"{2 * VERDICT_ROWS} steps")
            params = ["every"]
        raise SmoothprobeError(
            f"too few points to fit: {int(positive.sum())} rows with finite {column} and "
            f"{delta_from} > f*={f_star:g} in the window (need {MIN_POINTS}; "
            f"{int((~finite).sum())} NaN, {below} with Δ ≤ 0); {fix}", params=params)
    grad = rows["grad_norm_dual"].to_numpy(dtype=float)[positive] \
        if "grad_norm_dual" in rows.columns else None
    step = rows["step"].to_numpy()
    return FitData(step[positive], delta[positive], k[positive],
                   grad if grad is not None and np.isfinite(grad).any() else None,
                   (int(step.min()), int(step.max())) if len(step) else (0, 0), len(rows),
                   int((~finite).sum()), int((finite & ~positive).sum()))
