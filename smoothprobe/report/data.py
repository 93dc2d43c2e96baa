"""What a report shows about one run: its fit, the K-vs-Δ points, costs, final losses, warnings."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from smoothprobe.errors import SmoothprobeError
from smoothprobe.fit import SmoothnessFit, fit_run, schedule_problem_of
from smoothprobe.probes.top_eig import CONVERGED_TOL
from smoothprobe.store import Run

AUTO_BOOTSTRAP = 100
"""Resamples of the fit the report makes itself when none is given."""
FINAL_WINDOW = 10
"""Final train loss = mean over this many last steps (one mini-batch loss is noisy)."""
COVERAGE_SLACK = 0.1
"""Warn when the envelope's in-sample coverage misses its quantile by more than this."""


@dataclass
class RunView:
    """One run as the report sees it: label, colour, fit (or why there is none) and K-vs-Δ data."""

    label: str
    run: Run
    color: str
    fit: SmoothnessFit | None
    fit_note: str
    points: pd.DataFrame | None = None
    points_note: str = ""
    band: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    band_note: str = ""
    warnings: list[str] = field(default_factory=list)

    @property
    def steps(self) -> pd.DataFrame:
        return self.run.steps

    @property
    def family(self) -> str | None:
        """Geometry family the probes measured in (None without probes)."""
        return (self.run.info.get("probes") or {}).get("family")

    @property
    def f_star(self) -> float | None:
        """f* the report uses: the fit's, else the task's exact one."""
        return self.fit.f_star if self.fit is not None else self.run.f_star


def numeric_columns(steps: pd.DataFrame) -> pd.DataFrame:
    """The step table with every column of numbers and nulls as floats: a probe column that is
    null on every row is read back as objects, which numpy's isfinite and log axes reject."""
    out = steps.copy()
    for column in out.columns[out.dtypes == object]:
        values = out[column].dropna()
        if values.map(lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)).all():
            out[column] = pd.to_numeric(out[column], errors="coerce").astype(float)
    return out


def schedule_note(fit: SmoothnessFit) -> str | None:
    """Why the fit's η(Δ) = Δ/K(Δ) cannot be drawn as a schedule (K ≤ 0 at some Δ ≥ 0, or no
    finite peak), or None when it can."""
    if fit.constants.physical():
        return None
    return schedule_problem_of(fit.to_dict())


def load_fit(given: str | Path | SmoothnessFit) -> SmoothnessFit:
    """A fit object, or one read from a fit.json path."""
    if isinstance(given, SmoothnessFit):
        return given
    if isinstance(given, (str, Path)):
        return SmoothnessFit.from_json(given)
    raise SmoothprobeError(f"fits entries must be fit.json paths or SmoothnessFit; got {given!r}")


def auto_fit(run: Run) -> tuple[SmoothnessFit | None, str]:
    """Fit the run with the task's f* (or f* = 'auto'); on failure None and the reason."""
    known = run.f_star is not None
    try:
        fit = fit_run(run, f_star=None if known else "auto", bootstrap=AUTO_BOOTSTRAP)
    except SmoothprobeError as err:
        return None, f"no fit: {err}"
    source = "the task's exact f*" if known else "f* estimated from the loss curve"
    return fit, (f"fitted by the report ({fit.column}, {source}, {AUTO_BOOTSTRAP} bootstrap "
                 "resamples); pass a fit.json to use your own")


def scatter_points(run: Run, fit: SmoothnessFit | None) -> tuple[pd.DataFrame | None, str]:
    """(step, delta, k) of probed rows with finite K and Δ > 0, within the fit's steps (its `window`: the
    rows it saw, first and last included) where there is a fit, or None and why not."""
    column = fit.column if fit is not None else "secant_K"
    delta_from = fit.delta_from if fit is not None else "loss"
    f_star = fit.f_star if fit is not None else run.f_star
    steps = run.steps
    if column not in steps.columns:
        return None, f"no {column} column: record the run with the secant probe"
    if delta_from not in steps.columns:
        return None, f"no {delta_from} column: Δ = {delta_from} − f* cannot be computed"
    if f_star is None:
        return None, "f* is unknown for this task and there is no fit: Δ cannot be computed"
    points = pd.DataFrame({
        "step": steps["step"].to_numpy(),
        "delta": steps[delta_from].to_numpy(dtype=float) - f_star,
        "k": steps[column].to_numpy(dtype=float),
    })
    keep = np.isfinite(points["k"]) & np.isfinite(points["delta"]) & (points["delta"] > 0)
    if fit is not None:
        keep &= (points["step"] >= fit.window[0]) & (points["step"] <= fit.window[1])
    points = points[keep].reset_index(drop=True)
    if points.empty:
        return None, f"no probed row has a finite {column} and {delta_from} above f* = {f_star:g}"
    return points, ""


def envelope_band(fit: SmoothnessFit, grid: np.ndarray
                  ) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray] | None, str]:
    """The fit's own pointwise bootstrap band (grid, low, high) of K(Δ), or None and why not."""
    boot = fit.bootstrap_constants
    if boot is None:
        return None, ("no bootstrap band: the fit has no stored bootstrap refits (fit with "
                      "bootstrap > 0)")
    low, high = fit.band(grid)
    return (grid, low, high), (f"{round(100 * fit.level)}% pointwise band from {len(boot)} "
                               "block-bootstrap refits")


def delta_grid(points: pd.DataFrame, fit: SmoothnessFit | None, n: int = 200) -> np.ndarray:
    """Log-spaced Δ from the smallest to the largest observed gap (and the fit's range)."""
    lo, hi = float(points["delta"].min()), float(points["delta"].max())
    if fit is not None:
        lo, hi = min(lo, fit.delta_range[0]), max(hi, fit.delta_range[1])
    return np.geomspace(lo, hi, n) if hi > lo else np.array([lo])


def probed(steps: pd.DataFrame) -> pd.DataFrame:
    """Rows on which the probes ran."""
    if "probe_time_s" not in steps.columns:
        return steps.iloc[:0]
    return steps[steps["probe_time_s"].notna()]


def final_losses(view: RunView) -> dict:
    """Steps done, final train loss (mean of the last FINAL_WINDOW) and last validation loss."""
    steps, evals = view.steps, view.run.evals
    loss = steps["loss"].to_numpy(dtype=float) if "loss" in steps.columns else np.array([])
    tail = loss[-FINAL_WINDOW:]
    tail = tail[np.isfinite(tail)]
    val = evals["val_loss"].to_numpy(dtype=float) if "val_loss" in evals.columns else []
    wall = steps["time_s"].max() if "time_s" in steps.columns else math.nan
    return {
        "steps_done": len(steps),
        "final_loss": float(tail.mean()) if len(tail) else math.nan,
        "min_loss": float(np.nanmin(loss)) if np.isfinite(loss).any() else math.nan,
        "final_val": float(val[-1]) if len(val) else math.nan,
        "best_val": float(np.nanmin(val)) if len(val) else math.nan,
        "wall_s": float(wall),
    }


def probe_costs(steps: pd.DataFrame) -> list[dict]:
    """Per probe: calls, seconds per call, total seconds and overhead over the training compute.

    Overhead divides by the step time without probes (step_time_s includes the probes' time).
    """
    if "probe_time_s" not in steps.columns:
        return []
    probe_total = float(steps["probe_time_s"].sum())
    train = math.nan
    if "step_time_s" in steps.columns:
        train = float(steps["step_time_s"].sum()) - probe_total
    columns = [c for c in steps.columns
               if c.startswith("time_") and c.endswith("_s") and c != "time_s"]
    rows = []
    for name, column in [(c[5:-2], c) for c in columns] + [("all probes", "probe_time_s")]:
        values = steps[column].dropna()
        total = float(values.sum())
        rows.append({"probe": name, "calls": len(values),
                     "per_call_s": total / len(values) if len(values) else math.nan,
                     "total_s": total,
                     "overhead": total / train if train > 0 else math.nan})
    return rows


SPECTRUM_ENDS = (("top_eig", "λ_max", "a lower bound on"), ("bottom_eig", "λ_min", "an upper bound on"))


def unconverged_ends(rows: pd.DataFrame) -> list[str]:
    """A warning per Lanczos end whose `<end>_converged` flag is false on some probed step."""
    out = []
    for end, name, bound in SPECTRUM_ENDS:
        column = f"{end}_converged"
        if column not in rows.columns:
            continue
        flags = rows[column].dropna()
        if (missed := int((~flags.astype(bool)).sum())):
            out.append(f"{end} did not converge on {missed} of {len(flags)} heavy probe steps (Ritz "
                       f"residual above {100 * CONVERGED_TOL:g}% of |θ|): there it is only {bound} "
                       f"{name}")
    return out


def run_warnings(view: RunView) -> list[str]:
    """Everything a reader should distrust: store problems, NaNs, stopped runs, poor fits."""
    run, steps = view.run, view.steps
    out = list(run.warnings)
    status, planned = run.info.get("status"), run.config.get("steps")
    if status not in (None, "finished", "running"):  # load_run already warns about "running"
        out.append(f"run status is {status!r}")
    if planned is not None and len(steps) < planned:
        out.append(f"the store holds {len(steps)} of {planned} planned steps")
    if "loss" in steps.columns and (bad := int((~np.isfinite(steps["loss"])).sum())):
        out.append(f"{bad} steps have a non-finite loss")
    rows = probed(steps)
    if "secant_K" in rows.columns and (bad := int((~np.isfinite(rows["secant_K"])).sum())):
        out.append(f"{bad} probed steps have a non-finite secant K")
    out += unconverged_ends(rows)
    for column, what in (("nan_count", "non-finite losses"), ("nonpos_count", "losses ≤ f*")):
        if column in steps.columns and steps[column].notna().any() and steps[column].max() > 0:
            out.append(f"the adaptive schedule skipped {int(steps[column].max())} {what}")
    fit = view.fit
    if fit is None:
        out.append(view.fit_note if view.fit_note.startswith("no fit") else
                   f"no fit: {view.fit_note}")
        return out
    if (problem := fit.schedule_problem()) is not None:
        out.append(f"this fit must not drive a learning-rate schedule: {problem}")
    elif fit.status not in (None, "supported"):  # `decision._rises`: the gaps' ratio is all that is missing
        out.append(f"the model is {fit.status} on this run: `train --fit` drives a schedule from it only because "
                   "K's rise with Δ is significant while the gaps span a narrow ratio")
    data = fit.data
    dropped = data["dropped_nonpositive_delta"]
    if dropped:
        out.append(f"{dropped} fit rows have Δ ≤ 0 (loss ≤ f* = {fit.f_star:g}): f* may be too high")
    if data["rows_in_window"] and data["rows_used"] < 0.5 * data["rows_in_window"]:
        out.append(f"poor coverage: the fit uses {data['rows_used']} of {data['rows_in_window']} "
                   "rows in its window")
    model = fit.comparison[-1] if fit.comparison else {}
    coverage = model.get("coverage")
    if coverage is not None and abs(coverage - fit.quantile) > COVERAGE_SLACK:
        out.append(f"poor coverage: the envelope lies above {100 * coverage:.0f}% of the points, "
                   f"not the {100 * fit.quantile:.0f}% it targets")
    return out


def check_fit_is_of(fit: SmoothnessFit, run: Run, source: object) -> None:
    """Refuse a fit that cannot have been made on `run`: its column is not one of the run's, or its steps
    (the window it saw) lie outside the run's, so a report would show another run's verdict as this one's."""
    steps = run.steps["step"] if "step" in run.steps.columns else pd.Series(dtype=float)
    name = source if isinstance(source, (str, Path)) else "the fit given"
    if fit.column not in run.steps.columns:
        raise SmoothprobeError(f"{name} fits column {fit.column}, which run {run.path} does not have: it was "
                               "made on another run; fit this one (smoothprobe fit RUN_DIR)")
    if steps.empty or fit.window[0] < steps.min() or fit.window[1] > steps.max():
        raise SmoothprobeError(f"{name} saw steps {fit.window[0]}..{fit.window[1]}, outside run {run.path}'s steps: "
                               "it was made on another run; fit this one (smoothprobe fit RUN_DIR)")


def build_view(run: Run, label: str, color: str, given: str | Path | SmoothnessFit | None
               ) -> RunView:
    """Resolve the fit, the K-vs-Δ points, the band and the warnings of one run (its step table
    read as floats, see `numeric_columns`)."""
    run.steps = numeric_columns(run.steps)
    if given is None:
        fit, note = auto_fit(run)
    else:
        fit = load_fit(given)
        check_fit_is_of(fit, run, given)
        note = f"fit given ({fit.column}, f* = {fit.f_star:g}, {fit.f_star_source})"
    view = RunView(label, run, color, fit, note)
    view.points, view.points_note = scatter_points(run, fit)
    if fit is not None and view.points is not None:
        view.band, view.band_note = envelope_band(fit, delta_grid(view.points, fit))
    view.warnings = run_warnings(view)
    return view
