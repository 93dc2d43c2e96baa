"""Fit (ρ, K0, K1, Kρ)-smoothness to a run: `fit_frame` on a step table, `fit_run` on a run."""

from __future__ import annotations

import dataclasses
import warnings

import pandas as pd

from smoothprobe.fit import pipeline as stage
from smoothprobe.fit.fstar import estimate_f_star
from smoothprobe.fit.models import RHO_GRID
from smoothprobe.fit.result import SmoothnessFit, schedule_problem_of
from smoothprobe.smoothness import FStar

__all__ = ["SmoothnessFit", "estimate_f_star", "fit_frame", "fit_run", "schedule_problem_of"]


def fit_frame(
    steps: pd.DataFrame,
    *,
    f_star: float | str | FStar,
    column: str = "secant_K",
    rho: float | str = 2.0,
    window: tuple[int | None, int | None] | None = None,
    quantile: float = 0.9,
    bootstrap: int = 200,
    seed: int = 0,
    delta_from: str = "loss",
    level: float = 0.95,
    rho_grid: tuple[float, ...] = RHO_GRID,
    n_jobs: int = 1,
) -> SmoothnessFit:
    """Fit the smoothness envelope to a step table (columns as written by the recorder).

    f_star: a number, or "auto" to estimate it from the `loss` curve of the whole table (or an
    `FStar`, which also says where a number came from).
    rho: fixed, or "auto" for the grid value with the least time-blocked CV pinball loss.
    window: steps start ≤ step < end (None ends are open). Δ = `delta_from` − f*; rows with NaN
    or Δ ≤ 0 are dropped and counted. Bootstrap intervals are conditional on ρ and f*. The stages
    (`smoothprobe.fit.pipeline`) run in the order below.

    Exact data on K(Δ) = 1 + 2Δ + 3Δ² give back the constants and Δ' = √(K0/Kρ):

    >>> import numpy as np, pandas as pd
    >>> delta = np.geomspace(3.0, 0.2, 200)
    >>> steps = pd.DataFrame({"step": np.arange(200), "loss": 2.0 + delta,
    ...                       "secant_K": 1 + 2 * delta + 3 * delta**2})
    >>> fit = fit_frame(steps, f_star=2.0, bootstrap=0)
    >>> round(fit.K0, 3), round(fit.K1, 3), round(fit.K_rho, 3), round(fit.delta_peak, 4)
    (1.0, 2.0, 3.0, 0.5774)
    >>> fit.status
    'supported'
    """
    stage.check_args(rho, quantile, bootstrap, level, seed)
    f_star, f_star_source, estimate = stage.resolve_f_star(steps, FStar.parse(f_star))
    data = stage.gaps(steps, column, f_star, window, delta_from)
    design, block, folds, profile = stage.design_at_rho(data, rho, quantile, rho_grid)
    constants = stage.fit_envelope(design, quantile)
    peak, top = stage.peaks(constants, design.rho)
    boot = stage.bootstrap_refits(design, constants, quantile, bootstrap, block, seed, n_jobs)
    intervals = stage.percentile_intervals(boot, data, design.rho, f_star, level)
    said, rs, p, n_eff, scores = stage.judge(data, design, constants, quantile, folds, intervals, f_star, delta_from,
                                      estimate)
    width = stage.sensitivity_width(estimate, data)
    return SmoothnessFit(
        rho=design.rho, K0=float(constants[0]), K1=float(constants[1]), K_rho=float(constants[2]),
        f_star=f_star, f_star_source=f_star_source, delta_peak=float(peak), eta_max=float(top),
        column=column, delta_from=delta_from, quantile=quantile, window=data.window,
        data={**data.summary(), "spearman_n_eff": n_eff},
        verdict=said.sentence, status=said.status, status_cause=said.cause, status_reason=said.reason,
        spearman=rs, spearman_p=p,
        least_squares=stage.least_squares_summary(design), comparison=[s.to_dict() for s in scores],
        sensitivity=stage.sensitivity(steps, f_star, width, column, window, delta_from, design.rho,
                                      quantile, constants),
        intervals=intervals, level=level,
        bootstrap={"resamples": bootstrap, "block_length": block, "seed": seed,
                   "scheme": "circular blocks over time, conditional on rho and f*",
                   "constants": None if boot is None else boot.tolist()},
        rho_profile=profile, f_star_fit=stage.f_star_record(estimate),
    )


def fit_run(
    run,
    *,
    column: str = "secant_K",
    f_star: float | str | None = None,
    rho: float | str = 2.0,
    window: tuple[int | None, int | None] | None = None,
    quantile: float = 0.9,
    bootstrap: int = 200,
    seed: int = 0,
    delta_from: str = "loss",
    n_jobs: int = 1,
) -> SmoothnessFit:
    """`fit_frame` on a loaded run (anything with `.steps` and `.info`, e.g. `load_run(path)`).

    f_star None takes the task's exact f* from `run.info["task"]["f_star"]`, or "auto" (with a
    warning) when the task does not know it; a number or "auto" is passed on.
    """
    given = FStar.parse(f_star)
    if given is None:
        known = ((getattr(run, "info", None) or {}).get("task") or {}).get("f_star")
        given = FStar.parse(known, source="task") or FStar(None, "auto")
        if given.auto:
            warnings.warn("f* is unknown for this run (no built-in task knows it): estimating it from the "
                          "loss curve (f_star='auto'); pass a number to fix it", UserWarning, stacklevel=2)
    fit = fit_frame(run.steps, f_star=given, column=column, rho=rho, window=window,
                    quantile=quantile, bootstrap=bootstrap, seed=seed, delta_from=delta_from, n_jobs=n_jobs)
    return dataclasses.replace(fit, source=run_source(getattr(run, "info", None) or {}))


def run_source(info: dict) -> dict | None:
    """What a fit's rows were measured on, from run.json: the task, the optimizer and the geometry family of
    its probes (None when the run records none of them, e.g. a Recorder without a task)."""
    def entry(section: str, key: str) -> object:
        part = info.get(section)
        return part.get(key) if isinstance(part, dict) else None

    found = {"task": entry("task", "name"), "optimizer": entry("optimizer", "name"), "family": entry("probes", "family")}
    found = {key: value for key, value in found.items() if isinstance(value, str)}
    return found or None
