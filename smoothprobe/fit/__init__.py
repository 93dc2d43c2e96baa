"""Fit (ρ, K0, K1, Kρ)-smoothness to a run: `fit_frame` on a step table, `fit_run` on a run."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from smoothprobe.errors import SmoothprobeError
from smoothprobe.fit.bootstrap import block_length, bootstrap_envelope
from smoothprobe.fit.compare import compare_models, verdict
from smoothprobe.fit.data import FitData, fit_data
from smoothprobe.fit.fstar import FStarEstimate, estimate_f_star
from smoothprobe.fit.models import (
    RHO_GRID,
    envelope,
    least_squares,
    rho_design,
    select_rho,
    time_folds,
)
from smoothprobe.fit.result import SmoothnessFit, schedule_problem_of
from smoothprobe.fit.schema import F_STAR_LIMIT, RHO_RANGE
from smoothprobe.smoothness import delta_peak, eta_max, is_physical, k_model

__all__ = ["SmoothnessFit", "estimate_f_star", "fit_frame", "fit_run", "schedule_problem_of"]

SENSITIVITY_OFFSETS = (-1.0, -0.5, 0.0, 0.5, 1.0)
SENSITIVITY_WIDTH = 0.1
"""f* band: ± the larger of the f* interval's half-width and this share of the median Δ."""


MAX_BOOTSTRAP = 10_000
"""Most block-bootstrap resamples a fit takes (memory and time grow with it; 200 is plenty)."""
MAX_SEED = 2**32 - 1
GAP_SPREAD = 1e-3
"""Least spread (max − min) of the gaps Δ, relative to the largest, a fit accepts: an f* far below
the losses makes every Δ about the same and the envelope ill-conditioned."""


def _check_args(rho: float | str, quantile: float, bootstrap: int, level: float, seed: int = 0) -> None:
    """Raise SmoothprobeError naming the first bad argument (ρ within the range a fit.json may
    hold, so a fit this writes is one a schedule reads)."""
    if not (rho == "auto" or (isinstance(rho, (int, float)) and math.isfinite(rho)
                              and RHO_RANGE[0] < rho <= RHO_RANGE[1])):
        raise SmoothprobeError(f"rho must be a number in ({RHO_RANGE[0]:g}, {RHO_RANGE[1]:g}] or 'auto'; got {rho!r}")
    if not 0 < quantile < 1:
        raise SmoothprobeError(f"quantile must be in (0, 1); got {quantile!r}")
    if not (isinstance(bootstrap, (int, np.integer)) and 0 <= bootstrap <= MAX_BOOTSTRAP):
        raise SmoothprobeError(f"bootstrap must be an integer in [0, {MAX_BOOTSTRAP}]; got {bootstrap!r:.40}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed <= MAX_SEED:
        raise SmoothprobeError(f"seed must be an integer in [0, {MAX_SEED}]; got {seed!r:.40}")
    if not 0 < level < 1:
        raise SmoothprobeError(f"level must be in (0, 1); got {level!r}")


def _peak(constants: np.ndarray, rho: float) -> tuple[np.ndarray, np.ndarray]:
    """Δ' and η_max for constants of shape (..., 3)."""
    k0, k1, k_rho = np.moveaxis(np.asarray(constants), -1, 0)
    return delta_peak(k0, k_rho, rho), eta_max(k0, k1, k_rho, rho)


def _check_physical(constants: np.ndarray, rho: float, what: str) -> None:
    """Verify the exact condition the cutting planes imposed: K(Δ) > 0 on Δ ≥ 0 and Kρ > 0."""
    bad = ~is_physical(*np.moveaxis(np.atleast_2d(constants), -1, 0), rho)
    if bad.any():
        raise SmoothprobeError(f"{what}: {int(bad.sum())} fitted envelope(s) have K(Δ) <= 0 "
                               "for some Δ >= 0 despite the constraint; report this run")


def _growth(constants: np.ndarray, data: FitData, rho: float) -> np.ndarray:
    """Rise of the envelope K(Δ_95%) − K(Δ_5%) over the observed gaps."""
    lo, hi = np.percentile(data.delta, [5, 95])
    k0, k1, k_rho = np.moveaxis(np.asarray(constants), -1, 0)
    return k_model(hi, k0, k1, k_rho, rho) - k_model(lo, k0, k1, k_rho, rho)


def _sensitivity(steps: pd.DataFrame, f_star: float, width: float, column: str, window,
                 delta_from: str, rho: float, quantile: float, fitted: np.ndarray) -> list[dict]:
    """Δ', η_max and the switch loss f*+Δ' refitted for f* across f* ± width (`fitted`: the
    constants at f* itself, reused)."""
    out = []
    for offset in SENSITIVITY_OFFSETS:
        f = f_star + offset * width
        try:
            data = fit_data(steps, column, f, window, delta_from)
        except SmoothprobeError:
            out.append({"f_star": f, "delta_peak": np.nan, "eta_max": np.nan,
                        "switch_loss": np.nan, "rows_used": 0})
            continue
        shift = offset * width  # Δ at f* + shift is Δ − shift: K's constants re-expressed there start it
        near = fitted if rho != 2.0 else np.array([fitted[0] + fitted[1] * shift + fitted[2] * shift**2,
                                                   fitted[1] + 2 * fitted[2] * shift, fitted[2]])
        constants = fitted if offset == 0 else envelope(rho_design(data.delta, data.k, rho), quantile, near)
        peak, top = _peak(constants, rho)
        out.append({"f_star": f, "delta_peak": float(peak), "eta_max": float(top),
                    "switch_loss": f + float(peak), "rows_used": len(data.k)})
    return out


def fit_frame(
    steps: pd.DataFrame,
    *,
    f_star: float | str,
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
    f_star_source: str = "given",
) -> SmoothnessFit:
    """Fit the smoothness envelope to a step table (columns as written by the recorder).

    f_star: a number, or "auto" to estimate it from the `loss` curve of the whole table.
    rho: fixed, or "auto" for the grid value with the least time-blocked CV pinball loss.
    window: steps start ≤ step < end (None ends are open). Δ = `delta_from` − f*; rows with NaN
    or Δ ≤ 0 are dropped and counted. Bootstrap intervals are conditional on ρ and f*.

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
    _check_args(rho, quantile, bootstrap, level, seed)
    estimate: FStarEstimate | None = None
    if isinstance(f_star, str):
        if f_star != "auto":
            raise SmoothprobeError(f"f_star must be a number or 'auto'; got {f_star!r}")
        if "loss" not in steps.columns or "step" not in steps.columns:
            raise SmoothprobeError("f_star='auto' needs 'step' and 'loss' columns")
        estimate = estimate_f_star(steps["step"].to_numpy(), steps["loss"].to_numpy())
        f_star, f_star_source = estimate.value, "auto"
        if estimate.degenerate is not None:
            warnings.warn(f"f_star='auto' is degenerate: {estimate.degenerate}; pass f_star "
                          "explicitly", RuntimeWarning, stacklevel=2)
    f_star = float(f_star)
    if not (math.isfinite(f_star) and abs(f_star) <= F_STAR_LIMIT):
        raise SmoothprobeError(f"f_star must be a finite number with |f*| <= {F_STAR_LIMIT:g}; got {f_star:g}")
    data = fit_data(steps, column, f_star, window, delta_from)
    if len(data.delta) and np.ptp(data.delta) <= GAP_SPREAD * np.max(data.delta):
        raise SmoothprobeError(f"f_star {f_star:g} puts every gap at about {np.max(data.delta):.6g}: they differ by "
                               f"less than {GAP_SPREAD:g} of their size, too little to fit K(Delta); f* must lie "
                               "nearer the losses")
    base = rho_design(data.delta, data.k, 2.0 if rho == "auto" else float(rho))
    ls_constants, _ = least_squares(base)
    block = block_length(data.k - k_model(data.delta, *ls_constants, base.rho))
    folds = time_folds(len(data.k), block)
    profile = None
    if rho == "auto":
        rho, profile = select_rho(data.delta, data.k, quantile, tuple(rho_grid), folds)
    design = rho_design(data.delta, data.k, float(rho))
    constants = envelope(design, quantile)
    _check_physical(constants, design.rho, "fit")
    ls_constants, r2 = least_squares(design)
    peak, top = _peak(constants, design.rho)
    growth = float(_growth(constants, data, design.rho))

    intervals, growth_interval, boot = {}, None, None
    if bootstrap:
        beta = constants / design.constants(np.ones(3))
        boot = bootstrap_envelope(design, beta, quantile, bootstrap, block, seed, n_jobs)
        _check_physical(boot, design.rho, "bootstrap")
        b_peak, b_top = _peak(boot, design.rho)
        tails = [50 * (1 - level), 50 * (1 + level)]
        columns = {"K0": boot[:, 0], "K1": boot[:, 1], "K_rho": boot[:, 2], "delta_peak": b_peak,
                   "eta_max": b_top, "switch_loss": f_star + b_peak,
                   "growth": _growth(boot, data, design.rho)}
        intervals = {k: tuple(float(q) for q in np.percentile(v, tails, method="inverted_cdf"))
                     for k, v in columns.items()}
        growth_interval = intervals["growth"]

    rs, p = spearmanr(data.delta, data.k)
    scores = compare_models(data, design, constants, quantile, folds)
    status, sentence = verdict(data, scores, float(rs), float(p), growth, growth_interval,
                               quantile=quantile, f_star=f_star, delta_from=delta_from,
                               f_star_problem=estimate.degenerate if estimate else None)
    width = max((estimate.interval[1] - estimate.interval[0]) / 2 if estimate else 0.0,
                SENSITIVITY_WIDTH * float(np.median(data.delta)))
    return SmoothnessFit(
        rho=design.rho, K0=float(constants[0]), K1=float(constants[1]),
        K_rho=float(constants[2]), f_star=f_star, f_star_source=f_star_source,
        delta_peak=float(peak), eta_max=float(top), column=column, delta_from=delta_from,
        quantile=quantile, window=data.window, data=data.summary(), verdict=sentence,
        status=status, spearman=float(rs), spearman_p=float(p),
        least_squares={"K0": float(ls_constants[0]), "K1": float(ls_constants[1]),
                       "K_rho": float(ls_constants[2]), "r2": r2},
        comparison=[s.to_dict() for s in scores],
        sensitivity=_sensitivity(steps, f_star, width, column, window, delta_from,
                                 design.rho, quantile, constants),
        intervals=intervals, level=level,
        bootstrap={"resamples": bootstrap, "block_length": block, "seed": seed,
                   "scheme": "circular blocks over time, conditional on rho and f*",
                   "constants": None if boot is None else boot.tolist()},
        rho_profile=profile,
        f_star_fit=None if estimate is None else {
            "interval": list(estimate.interval), "a": estimate.a, "b": estimate.b,
            "t0": estimate.t0, "bins": estimate.bins, "degenerate": estimate.degenerate,
            "model": "L(t) = f* + a*(t + t0)^(-b) on binned loss"},
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
    source = "given"
    if f_star is None:
        f_star = ((getattr(run, "info", None) or {}).get("task") or {}).get("f_star")
        source = "task"
        if f_star is None:
            warnings.warn("f* is unknown for this run (no built-in task knows it): estimating it from the "
                          "loss curve (f_star='auto'); pass a number to fix it", UserWarning, stacklevel=2)
            f_star = "auto"
    return fit_frame(run.steps, f_star=f_star, column=column, rho=rho, window=window,
                     quantile=quantile, bootstrap=bootstrap, seed=seed, delta_from=delta_from,
                     n_jobs=n_jobs, f_star_source=source)
