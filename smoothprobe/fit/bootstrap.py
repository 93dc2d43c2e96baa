"""Circular block bootstrap over time for the envelope constants."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor

import numpy as np

from smoothprobe.fit.models import RhoDesign
from smoothprobe.fit.quantile import DIRECT_MAX_ROWS, BandedQuantileLP, quantile_regression

PILOT_RESAMPLES = 20
BAND_SAFETY = 1.1
BAND_QUANTILE = 0.9


def block_length(resid: np.ndarray) -> int:
    """Block length (2φ/(1−φ²))^(2/3)·n^(1/3) for lag-1 autocorrelation φ of the residuals.

    The AR(1) plug-in rule of Carlstein (1986, Ann. Statist. 14:1171) for block resampling
    of a dependent series; clipped to [1, n/10] so every resample holds at least ten blocks.
    """
    n = len(resid)
    r = resid - resid.mean()
    denom = float(r @ r)
    phi = float(r[1:] @ r[:-1]) / denom if denom > 0 else 0.0
    phi = min(max(phi, 0.0), 0.99)
    raw = (2.0 * phi / (1.0 - phi**2)) ** (2.0 / 3.0) * n ** (1.0 / 3.0)
    return int(np.clip(np.ceil(raw), 1, max(1, n // 10)))


def circular_block_counts(n: int, block: int, rng: np.random.Generator) -> np.ndarray:
    """How often each of n rows appears in one circular block resample of length n.

    Politis & Romano (1992): blocks of `block` consecutive rows, wrapping at the end, start at
    uniform positions until n rows are drawn, so every row is equally likely to be chosen.
    """
    starts = rng.integers(0, n, size=-(-n // block))
    rows = (starts[:, None] + np.arange(block)).ravel()[:n] % n
    return np.bincount(rows, minlength=n).astype(float)


def _refit(design: RhoDesign, beta: np.ndarray, tau: float, block: int,
           seeds: list[tuple[int, int]]) -> np.ndarray:
    """Scaled coefficients of the envelope on the resamples drawn from `seeds`, shape (B, 3)."""
    n = len(design.y)
    out = np.empty((len(seeds), 3))
    solver = BandedQuantileLP(design.x, design.y, tau, design.g, design.h, beta, cut=design.cut)
    needed_seen: list[float] = []
    for i, seed in enumerate(seeds):
        counts = circular_block_counts(n, block, np.random.default_rng(seed))
        if n <= DIRECT_MAX_ROWS:
            out[i] = quantile_regression(design.x, design.y, tau, g=design.g, h=design.h,
                                         weights=counts, cut=design.cut)
            continue
        band = BAND_SAFETY * float(np.quantile(needed_seen, BAND_QUANTILE)) if needed_seen else None
        out[i], needed = solver.solve(counts, band)
        needed_seen.append(needed)
        if i + 1 == PILOT_RESAMPLES:
            shifts = out[: i + 1] - beta
            cov = shifts.T @ shifts / (i + 1) + 1e-12 * np.eye(3)
            spread = np.sqrt(np.einsum("ij,jk,ik->i", design.x, cov, design.x))
            solver = BandedQuantileLP(design.x, design.y, tau, solver.g, solver.h, beta, spread,
                                      design.cut)
            needed_seen = list(np.max(np.abs(shifts @ design.x.T) / spread, axis=1))
    return out


def bootstrap_envelope(
    design: RhoDesign, beta: np.ndarray, tau: float, resamples: int, block: int, seed: int,
    n_jobs: int = 1,
) -> np.ndarray:
    """Envelope constants (K0, K1, Kρ) refitted on `resamples` block resamples, shape (B, 3).

    Every resample is solved exactly, warm-started at the full-data fit `beta`: rows whose
    residual lies far outside how much the fit moves between resamples are fixed on their side
    (see `quantile_regression`). That movement is learnt from the first PILOT_RESAMPLES fits,
    as the spread √(x_i S x_iᵀ) of the fitted value under their covariance S; the band is then
    BAND_SAFETY times the BAND_QUANTILE of the bands needed so far (a miss only costs a re-solve).
    Resample i is drawn from seed (seed, i), so the result does not depend on `n_jobs`.
    """
    seeds = [(seed, i) for i in range(resamples)]
    if n_jobs <= 1 or resamples < 2 * PILOT_RESAMPLES:
        return design.constants(_refit(design, beta, tau, block, seeds))
    chunks = [seeds[j::n_jobs] for j in range(n_jobs)]
    with ProcessPoolExecutor(n_jobs) as pool:
        parts = list(pool.map(_refit, *zip(*[(design, beta, tau, block, c) for c in chunks])))
    out = np.empty((resamples, 3))
    for j, part in enumerate(parts):
        out[j::n_jobs] = part
    return design.constants(out)
