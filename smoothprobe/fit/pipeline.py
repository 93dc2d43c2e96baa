"""The stages of `fit_frame`, in the order it runs them: f*, the (Δ, K) pairs, ρ and its design, the
envelope, the bootstrap and its intervals, the verdict, and the f* sensitivity."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd

from smoothprobe.errors import SmoothprobeError
from smoothprobe.fit.bootstrap import block_length, bootstrap_envelope
from smoothprobe.fit.compare import ModelScore, Verdict, compare_models, trend_test, verdict
from smoothprobe.fit.data import FitData, fit_data
from smoothprobe.fit.fstar import FStarEstimate, estimate_f_star
from smoothprobe.fit.models import (
    RhoDesign,
    envelope,
    least_squares,
    rho_design,
    select_rho,
    time_folds,
)
from smoothprobe.fit.schema import RHO_RANGE
from smoothprobe.smoothness import FStar, delta_peak, eta_max, is_physical, k_model

SENSITIVITY_OFFSETS = (-1.0, -0.5, 0.0, 0.5, 1.0)
SENSITIVITY_WIDTH = 0.1
"""f* band: ± the larger of the f* interval's half-width and this share of the median Δ."""
MAX_BOOTSTRAP = 10_000
"""Most block-bootstrap resamples a fit takes (memory and time grow with it; 200 is plenty)."""
MAX_SEED = 2**32 - 1
GAP_SPREAD = 1e-3
"""Least spread (max − min) of the gaps Δ, relative to the largest, a fit accepts: an f* far below
the losses makes every Δ about the same and the envelope ill-conditioned."""


def check_args(rho: float | str, quantile: float, bootstrap: int, level: float, seed: int = 0) -> None:
    """Raise SmoothprobeError naming the first bad argument (ρ within the range a fit.json may
    hold, so a fit this writes is one a schedule reads)."""
    if not (rho == "auto" or (isinstance(rho, (int, float)) and math.isfinite(rho)
                              and RHO_RANGE[0] < rho <= RHO_RANGE[1])):
        raise SmoothprobeError(f"rho must be a number in ({RHO_RANGE[0]:g}, {RHO_RANGE[1]:g}] or 'auto'; got {rho!r}",
                               params=["rho"])
    if not 0 < quantile < 1:
        raise SmoothprobeError(f"quantile must be in (0, 1); got {quantile!r}", params=["quantile"])
    if not (isinstance(bootstrap, (int, np.integer)) and 0 <= bootstrap <= MAX_BOOTSTRAP):
        raise SmoothprobeError(f"bootstrap must be an integer in [0, {MAX_BOOTSTRAP}]; got {bootstrap!r:.40}",
                               params=["bootstrap"])
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed <= MAX_SEED:
        raise SmoothprobeError(f"seed must be an integer in [0, {MAX_SEED}]; got {seed!r:.40}", params=["seed"])
    if not 0 < level < 1:
        raise SmoothprobeError(f"level must be in (0, 1); got {level!r}")


def resolve_f_star(steps: pd.DataFrame, f_star: FStar | None) -> tuple[float, str, FStarEstimate | None]:
    """f* as a number with its source: the given one, or "auto" estimated from the loss curve."""
    if f_star is None:
        raise SmoothprobeError("f_star must be a number or 'auto', got None", params=["f_star"])
    if not f_star.auto:
        return f_star.value, f_star.source, None
    if "loss" not in steps.columns or "step" not in steps.columns:
        raise SmoothprobeError("f_star='auto' needs 'step' and 'loss' columns", params=["f_star"])
    estimate = estimate_f_star(steps["step"].to_numpy(), steps["loss"].to_numpy())
    if estimate.degenerate is not None:
        warnings.warn(f"f_star='auto' is degenerate: {estimate.degenerate}; pass f_star "
                      "explicitly", RuntimeWarning, stacklevel=3)
    return FStar.parse(estimate.value).value, "auto", estimate


def gaps(steps: pd.DataFrame, column: str, f_star: float, window, delta_from: str) -> FitData:
    """The (Δ, K) pairs of the window, refused when f* leaves the gaps too alike to fit."""
    data = fit_data(steps, column, f_star, window, delta_from)
    if len(data.delta) and np.ptp(data.delta) <= GAP_SPREAD * np.max(data.delta):
        raise SmoothprobeError(f"f_star {f_star:g} puts every gap at about {np.max(data.delta):.6g}: they differ by "
                               f"less than {GAP_SPREAD:g} of their size, too little to fit K(Delta); f* must lie "
                               "nearer the losses")
    return data


def design_at_rho(data: FitData, rho: float | str, quantile: float, rho_grid: tuple[float, ...]
                  ) -> tuple[RhoDesign, int, np.ndarray, dict[float, float] | None]:
    """The design at ρ (given, or "auto": the grid's least time-blocked CV loss), with the bootstrap
    block length and CV folds (from least-squares residuals at ρ = 2 for "auto") and ρ's profile."""
    base = rho_design(data.delta, data.k, 2.0 if rho == "auto" else float(rho))
    ls_constants, _ = least_squares(base)
    block = block_length(data.k - k_model(data.delta, *ls_constants, base.rho))
    folds = time_folds(len(data.k), block)
    profile = None
    if rho == "auto":
        rho, profile = select_rho(data.delta, data.k, quantile, tuple(rho_grid), folds)
    return rho_design(data.delta, data.k, float(rho)), block, folds, profile


def peaks(constants: np.ndarray, rho: float) -> tuple[np.ndarray, np.ndarray]:
    """Δ' and η_max for constants of shape (..., 3)."""
    k0, k1, k_rho = np.moveaxis(np.asarray(constants), -1, 0)
    return delta_peak(k0, k_rho, rho), eta_max(k0, k1, k_rho, rho)


def check_physical(constants: np.ndarray, rho: float, what: str) -> None:
    """Verify the exact condition the cutting planes imposed: K(Δ) > 0 on Δ ≥ 0 and Kρ > 0."""
    bad = ~is_physical(*np.moveaxis(np.atleast_2d(constants), -1, 0), rho)
    if bad.any():
        raise SmoothprobeError(f"{what}: {int(bad.sum())} fitted envelope(s) have K(Δ) <= 0 "
                               "for some Δ >= 0 despite the constraint; report this run")


def fit_envelope(design: RhoDesign, quantile: float) -> np.ndarray:
    """The τ-quantile upper envelope's (K0, K1, Kρ), checked physical."""
    constants = envelope(design, quantile)
    check_physical(constants, design.rho, "fit")
    return constants


def least_squares_summary(design: RhoDesign) -> dict[str, float]:
    """Least-squares constants and R² on the same rows, for comparison with the envelope."""
    constants, r2 = least_squares(design)
    return {"K0": float(constants[0]), "K1": float(constants[1]), "K_rho": float(constants[2]), "r2": r2}


def growth(constants: np.ndarray, data: FitData, rho: float) -> np.ndarray:
    """Rise of the envelope K(Δ_95%) − K(Δ_5%) over the observed gaps."""
    lo, hi = np.percentile(data.delta, [5, 95])
    k0, k1, k_rho = np.moveaxis(np.asarray(constants), -1, 0)
    return k_model(hi, k0, k1, k_rho, rho) - k_model(lo, k0, k1, k_rho, rho)


def bootstrap_refits(design: RhoDesign, constants: np.ndarray, quantile: float, resamples: int,
                     block: int, seed: int, n_jobs: int) -> np.ndarray | None:
    """(K0, K1, Kρ) refitted on circular block-bootstrap resamples, checked physical (None without)."""
    if not resamples:
        return None
    beta = constants / design.constants(np.ones(3))
    boot = bootstrap_envelope(design, beta, quantile, resamples, block, seed, n_jobs)
    check_physical(boot, design.rho, "bootstrap")
    return boot


def percentile_intervals(boot: np.ndarray | None, data: FitData, rho: float, f_star: float,
                         level: float) -> dict[str, tuple[float, float]]:
    """Percentile intervals at `level` of the constants, Δ', η_max, the switch loss and the growth."""
    if boot is None:
        return {}
    b_peak, b_top = peaks(boot, rho)
    tails = [50 * (1 - level), 50 * (1 + level)]
    columns = {"K0": boot[:, 0], "K1": boot[:, 1], "K_rho": boot[:, 2], "delta_peak": b_peak,
               "eta_max": b_top, "switch_loss": f_star + b_peak, "growth": growth(boot, data, rho)}
    return {k: tuple(float(q) for q in np.percentile(v, tails, method="inverted_cdf"))
            for k, v in columns.items()}


def judge(data: FitData, design: RhoDesign, constants: np.ndarray, quantile: float, folds: np.ndarray,
          intervals: dict, f_star: float, delta_from: str, estimate: FStarEstimate | None
          ) -> tuple[Verdict, float, float, float, list[ModelScore]]:
    """The verdict (status, its cause and reason, the sentence) from the Spearman trend, the
    envelope's rise and the model comparison; also the Spearman correlation, its p-value discounted for
    autocorrelation, the effective number of rows behind it, and the scores."""
    rs, p, n_eff = trend_test(data)
    scores = compare_models(data, design, constants, quantile, folds)
    said = verdict(data, scores, rs, p, float(growth(constants, data, design.rho)),
                   intervals.get("growth"), quantile=quantile, f_star=f_star, delta_from=delta_from,
                   f_star_problem=estimate.degenerate if estimate else None)
    return said, rs, p, n_eff, scores


def sensitivity_width(estimate: FStarEstimate | None, data: FitData) -> float:
    """Half-width of the f* band the sensitivity scans: the f* interval's, or a share of the median Δ."""
    return max((estimate.interval[1] - estimate.interval[0]) / 2 if estimate else 0.0,
               SENSITIVITY_WIDTH * float(np.median(data.delta)))


def sensitivity(steps: pd.DataFrame, f_star: float, width: float, column: str, window,
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
        peak, top = peaks(constants, rho)
        out.append({"f_star": f, "delta_peak": float(peak), "eta_max": float(top),
                    "switch_loss": f + float(peak), "rows_used": len(data.k)})
    return out


def f_star_record(estimate: FStarEstimate | None) -> dict | None:
    """fit.json's record of the loss-curve fit behind an "auto" f* (None for a given f*)."""
    if estimate is None:
        return None
    return {"interval": list(estimate.interval), "a": estimate.a, "b": estimate.b, "t0": estimate.t0,
            "bins": estimate.bins, "degenerate": estimate.degenerate,
            "model": "L(t) = f* + a*(t + t0)^(-b) on binned loss"}
