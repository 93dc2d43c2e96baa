"""Circular block bootstrap over time for the envelope constants."""

from __future__ import annotations

import os
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


def draw_blocks(n: int, block: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Start and length of each block of one circular block resample of n rows.

    Politis & Romano (1992): blocks of `block` consecutive rows, wrapping at the end, start at
    uniform positions until n rows are drawn (the last block is cut to fit), so every row is
    equally likely to be chosen.
    """
    starts = rng.integers(0, n, size=-(-n // block))
    lengths = np.full(len(starts), block)
    lengths[-1] = n - block * (len(starts) - 1)
    return starts, lengths


def block_cover(rows: np.ndarray, starts: np.ndarray, lengths: np.ndarray, n: int) -> np.ndarray:
    """How often each of `rows` is drawn by the blocks (starts, lengths) on a circle of n rows.

    A full-width block (width L) starting at s covers row r when s lies in (r − L, r] or, wrapped,
    in (r + n − L, r + n]: binary searches among the sorted starts count those; the short last
    block is checked row by row. (Comparing every row with every block costs rows × blocks.)
    """
    rows = np.asarray(rows)
    width = int(lengths[0])
    full = np.sort(starts[lengths == width])
    counts = (np.searchsorted(full, rows, "right") - np.searchsorted(full, rows - width, "right")
              + np.searchsorted(full, rows + n, "right") - np.searchsorted(full, rows + n - width, "right"))
    for start, length in zip(starts[lengths != width], lengths[lengths != width]):
        counts += (rows - start) % n < length
    return counts.astype(float)


def block_total(prefix: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Σ over the drawn rows of the per-row terms whose prefix sums (n + 1 rows) are `prefix`."""
    n = len(prefix) - 1
    ends = starts + lengths
    inner = prefix[np.minimum(ends, n)] - prefix[starts]
    wrapped = prefix[np.maximum(ends - n, 0)] - prefix[0]
    return (inner + wrapped).sum(axis=0)


def circular_block_counts(n: int, block: int, rng: np.random.Generator) -> np.ndarray:
    """How often each of n rows appears in one circular block resample of length n."""
    starts, lengths = draw_blocks(n, block, rng)
    rows = np.concatenate([(s + np.arange(length)) % n for s, length in zip(starts, lengths)])
    return np.bincount(rows, minlength=n).astype(float)


def _snap(band: float) -> float:
    """`band` rounded up to a power of 2^(1/4): few distinct bands, so their layouts are reused."""
    return float(2.0 ** (np.ceil(4 * np.log2(band)) / 4))


def _refit(design: RhoDesign, beta: np.ndarray, tau: float, block: int,
           seeds: list[tuple[int, int]]) -> np.ndarray:
    """Scaled coefficients of the envelope on the resamples drawn from `seeds`, shape (B, 3)."""
    n = len(design.y)
    out = np.empty((len(seeds), 3))
    solver = BandedQuantileLP(design.x, design.y, tau, design.g, design.h, beta, cut=design.cut)
    needed_seen: list[float] = []
    for i, seed in enumerate(seeds):
        starts, lengths = draw_blocks(n, block, np.random.default_rng(seed))
        if n <= DIRECT_MAX_ROWS:
            counts = block_cover(np.arange(n), starts, lengths, n)
            out[i] = quantile_regression(design.x, design.y, tau, g=design.g, h=design.h,
                                         weights=counts, cut=design.cut)
            continue
        if needed_seen:
            band = _snap(BAND_SAFETY * float(np.quantile(needed_seen, BAND_QUANTILE)))
        else:
            band = _snap(float(np.quantile(np.abs(solver.reach), DIRECT_MAX_ROWS / n)))
        out[i], needed = solver.solve_resample(
            lambda rows, s=starts, lg=lengths: block_cover(rows, s, lg, n),
            lambda prefix, s=starts, lg=lengths: block_total(prefix, s, lg), band)
        needed_seen.append(needed)
        if i + 1 == PILOT_RESAMPLES:
            shifts = out[: i + 1] - beta
            cov = shifts.T @ shifts / (i + 1) + 1e-12 * np.eye(3)
            solver = BandedQuantileLP(design.x, design.y, tau, solver.g, solver.h, beta, cov, design.cut)
            needed_seen = [solver.least_band(b) for b in out[: i + 1]]
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
    BAND_SAFETY times the BAND_QUANTILE of the bands needed so far (a miss only costs a re-solve),
    rounded up to a power of 2^(1/4). A resample is kept as its blocks: the LP's rows inside the
    band are weighed by the blocks covering them and the fixed rows enter through prefix sums, so
    no resample touches all n rows (`BandedQuantileLP.solve_resample`).
    Resample i is drawn from seed (seed, i), so the result does not depend on `n_jobs`.
    """
    seeds = [(seed, i) for i in range(resamples)]
    n_jobs = min(n_jobs, len(os.sched_getaffinity(0)), resamples // PILOT_RESAMPLES)  # each needs its pilot fits
    if n_jobs <= 1:
        return design.constants(_refit(design, beta, tau, block, seeds))
    chunks = [seeds[j::n_jobs] for j in range(n_jobs)]
    with ProcessPoolExecutor(n_jobs) as pool:
        parts = list(pool.map(_refit, *zip(*[(design, beta, tau, block, c) for c in chunks])))
    out = np.empty((resamples, 3))
    for j, part in enumerate(parts):
        out[j::n_jobs] = part
    return design.constants(out)
