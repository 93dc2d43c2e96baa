"""The (ρ, K0, K1, Kρ)-smoothness model in one place: K(Δ), η(Δ), the peak gap Δ', η_max, and
the paper's practical parametrisation with its Δ' search.

Riabinin et al., "Where Does Warm-Up Come From?" (arXiv 2602.05813): under
‖∇f(x) − ∇f(y)‖_* ≤ K(Δ)·‖x − y‖ with K(Δ) = K0 + K1·Δ + Kρ·Δ^ρ and Δ = f(x) − f*, the step size
η(Δ) = Δ / K(Δ) rises while Δ is large and decays near f*. `Constants` is one set of constants with
all of this as methods (the scheduler's and a fit's); the functions below take arrays of constants
too (a fit's bootstrap refits). Derivations are in docs/design.md.

>>> round(float(eta_max(1.0, 0.0, 1.0, 2.0)), 6)   # ρ = 2: 1 / (K1 + 2·sqrt(K0·Kρ))
0.5
>>> round(float(delta_peak(1.0, 1.0, 2.0)), 6)      # Δ' = (K0 / ((ρ−1)·Kρ))^(1/ρ)
1.0
>>> float(min_k(1.0, -1.0, 1.0, 2.0))               # ρ = 2: K0 − K1²/(4·Kρ) at Δ* = −K1/(2Kρ)
0.75
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import minimize_scalar

from smoothprobe.errors import SmoothprobeError

SIGMA_F = 1e-3
F_STAR_LIMIT = 1e12
"""|f*| above this is a typo or an overflow, not a loss."""


@dataclasses.dataclass(frozen=True)
class FStar:
    """f*, the optimum that every gap Δ = f − f* is measured from: a number (`source` "given", or
    "task" for a task's exact value) or "auto", estimated from the loss curve (by a fit, or online
    during training) and so without a value until then. `parse` is the one reader of a user's f*.

    >>> FStar.parse("auto").auto, FStar.parse("2.5"), FStar.parse(None)
    (True, FStar(value=2.5, source='given'), None)
    >>> FStar.parse(1.0, source="task").to_json()
    1.0
    """

    value: float | None
    source: str = "given"

    @classmethod
    def parse(cls, value: float | str | FStar | None, source: str = "given") -> FStar | None:
        """A number (or its text), "auto", an FStar (kept) or None (not given); anything else is refused
        in one line naming f_star."""
        if value is None or isinstance(value, FStar):
            return value
        if isinstance(value, str) and value.strip().lower() == "auto":
            return cls(None, "auto")
        try:
            number = float(value) if not isinstance(value, bool) else math.nan
        except (TypeError, ValueError):
            number = math.nan
        if isinstance(value, str) and math.isnan(number):
            raise SmoothprobeError(f"f_star must be a number or 'auto', got {value!r:.40}", params=["f_star"])
        if not (math.isfinite(number) and abs(number) <= F_STAR_LIMIT):
            raise SmoothprobeError(f"f_star must be a finite number with |f*| <= {F_STAR_LIMIT:g}, got {value!r:.40}",
                                   params=["f_star"])
        return cls(number, source)

    @property
    def auto(self) -> bool:
        """Estimated from the loss curve rather than known."""
        return self.value is None

    def to_json(self) -> float | str:
        """As a user writes it: the number, or "auto"."""
        return "auto" if self.value is None else self.value

_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(16)
_PANELS = 64
_WINDOW = 10.0  # half-width of the quadrature window around Δ', in Gaussian standard deviations


def k_model(delta: np.ndarray | float, k0, k1, k_rho, rho: float) -> np.ndarray:
    """K(Δ) = K0 + K1·Δ + Kρ·Δ^ρ; constants may be arrays that broadcast against Δ."""
    delta = np.asarray(delta, dtype=float)
    return k0 + k1 * delta + k_rho * delta**rho


def delta_peak(k0, k_rho, rho: float) -> np.ndarray:
    """Δ' = (K0 / ((ρ−1)·Kρ))^(1/ρ), where η(Δ) = Δ/K(Δ) peaks; +inf when Kρ = 0.

    Δ/K(Δ) is maximal where K(Δ)/Δ = K0/Δ + K1 + KρΔ^(ρ−1) is minimal, i.e. where its
    derivative −K0/Δ² + (ρ−1)KρΔ^(ρ−2) vanishes.
    """
    if rho <= 1:
        raise SmoothprobeError(f"rho must be > 1. Got {rho}.")
    k0, k_rho = np.asarray(k0, dtype=float), np.asarray(k_rho, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        peak = (k0 / ((rho - 1.0) * k_rho)) ** (1.0 / rho)
    return np.where(k_rho > 0, peak, np.inf)


def k_argmin(k0, k1, k_rho, rho: float) -> np.ndarray:
    """Δ* ≥ 0 where K(Δ) is least on Δ ≥ 0: 0 when K1 ≥ 0, (−K1/(ρ·Kρ))^(1/(ρ−1)) when K1 < 0 < Kρ,
    +inf when K1 < 0 and Kρ ≤ 0 (K falls without bound)."""
    if rho <= 1:
        raise SmoothprobeError(f"rho must be > 1. Got {rho}.")
    k0, k1, k_rho = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (k0, k1, k_rho)))
    with np.errstate(divide="ignore", invalid="ignore"):
        interior = (-k1 / (rho * k_rho)) ** (1.0 / (rho - 1.0))
    return np.where(k1 >= 0, 0.0, np.where(k_rho > 0, interior, np.inf))


def min_k(k0, k1, k_rho, rho: float) -> np.ndarray:
    """min over Δ ≥ 0 of K(Δ) = K0 + K1·Δ + Kρ·Δ^ρ; −inf when Kρ < 0, or Kρ = 0 and K1 < 0.

    K is convex on Δ ≥ 0 when Kρ ≥ 0 (ρ > 1), so the least value is K0 when K1 ≥ 0 and otherwise
    K(Δ*) at the stationary point of `k_argmin`; for ρ = 2 that is K0 − K1²/(4·Kρ).
    """
    k0, k1, k_rho = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (k0, k1, k_rho)))
    at = k_argmin(k0, k1, k_rho, rho)
    with np.errstate(invalid="ignore", over="ignore"):
        inner = k_model(np.where(np.isfinite(at), at, 0.0), k0, k1, k_rho, rho)
    return np.where((k_rho < 0) | ~np.isfinite(at), -np.inf, inner)


def is_physical(k0, k1, k_rho, rho: float, floor: float = 0.0) -> np.ndarray:
    """Finite constants with K(Δ) > floor for every Δ ≥ 0 and Kρ > 0: the warm-up shape, with
    0 < Δ' < ∞ and 0 < η_max < ∞ (for ρ = 2: K0 > floor, Kρ > 0, K1 > −2·sqrt((K0 − floor)·Kρ))."""
    k0, k1, k_rho = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (k0, k1, k_rho)))
    finite = np.isfinite(k0) & np.isfinite(k1) & np.isfinite(k_rho)
    least = min_k(*(np.where(finite, v, 0.0) for v in (k0, k1, k_rho)), rho)
    return finite & (k_rho > 0) & (least > floor)


def eta_max(k0, k1, k_rho, rho: float) -> np.ndarray:
    """η_max = sup_Δ>0 Δ/K(Δ); +inf when K(Δ) ≤ 0 somewhere on Δ > 0 (no finite peak).

    Closed form for every ρ: Δ'/K(Δ'), with the limits 1/K1 when Δ' is 0 or +inf; for ρ = 2 it
    equals 1/(K1 + 2√(K0·K2)).

    >>> float(eta_max(1.0, 2.0, 1.0, 2.0)), float(eta_max(-1.0, 1.0, 1.0, 2.0)), float(eta_max(0.0, 2.0, 1.0, 2.0))
    (0.25, inf, 0.5)
    """
    k0, k1, k_rho = (np.asarray(v, dtype=float) for v in (k0, k1, k_rho))
    peak = delta_peak(k0, k_rho, rho)
    least = min_k(k0, k1, k_rho, rho)  # over Δ ≥ 0: below 0, or 0 where K0 > 0 (so at some Δ > 0), means K ≤ 0 there
    with np.errstate(divide="ignore", invalid="ignore"):
        interior = np.isfinite(peak) & (peak > 0)
        inner = np.where(interior, k_model(peak, k0, k1, k_rho, rho) / peak, k1)
        return np.where((inner > 0) & ~((least < 0) | ((least <= 0) & (k0 > 0))), 1.0 / inner, np.inf)


def eta(delta: ArrayLike, k0, k1, k_rho, rho: float) -> np.ndarray:
    """Step size η(Δ) = Δ / K(Δ) for gaps Δ > 0; constants may be arrays that broadcast against Δ."""
    delta = np.asarray(delta, dtype=float)
    return delta / k_model(delta, k0, k1, k_rho, rho)


@dataclasses.dataclass(frozen=True)
class Constants:
    """(ρ, K0, K1, Kρ)-smoothness constants and what they imply: K(Δ) = K0 + K1·Δ + Kρ·Δ^ρ, the
    step size η(Δ) = Δ/K(Δ), its peak gap Δ' and height η_max, and the same shape at another peak.

    K(Δ) = 1 + 2Δ + Δ² (ρ = 2) peaks at Δ' = sqrt(K0/Kρ) = 1 with η_max = Δ'/K(Δ') = 1/4; over
    measured gaps [3, 5] the largest η is η(3) = 3/16, and halving every K doubles every η:

    >>> c = Constants(K0=1.0, K1=2.0, K_rho=1.0, rho=2.0)
    >>> c.delta_peak, c.eta_max, float(c.K(3.0)), float(c.eta(3.0))
    (1.0, 0.25, 16.0, 0.1875)
    >>> c.peak_within((3.0, 5.0))
    (3.0, 0.1875)
    >>> c.rescaled(0.375, (3.0, 5.0))
    Constants(K0=0.5, K1=1.0, K_rho=0.5, rho=2.0)
    >>> c.physical(), Constants(1.0, -2.5, 1.0, 2.0).physical()   # K1 < −2·sqrt(K0·Kρ): K < 0 at Δ = 1
    (True, False)
    """

    K0: float
    K1: float
    K_rho: float
    rho: float

    def __post_init__(self) -> None:
        for name in ("K0", "K1", "K_rho", "rho"):  # plain floats, whatever numeric type came in
            object.__setattr__(self, name, float(getattr(self, name)))

    def K(self, delta: ArrayLike) -> np.ndarray:
        """K(Δ) = K0 + K1·Δ + Kρ·Δ^ρ."""
        return k_model(delta, self.K0, self.K1, self.K_rho, self.rho)

    def eta(self, delta: ArrayLike) -> np.ndarray:
        """The step size η(Δ) = Δ / K(Δ)."""
        return eta(delta, self.K0, self.K1, self.K_rho, self.rho)

    @property
    def delta_peak(self) -> float:
        """Δ', the gap where η peaks (+inf when Kρ = 0)."""
        return float(delta_peak(self.K0, self.K_rho, self.rho))

    @property
    def eta_max(self) -> float:
        """η_max = sup over Δ > 0 of η(Δ) (+inf when K(Δ) ≤ 0 somewhere on Δ > 0)."""
        return float(eta_max(self.K0, self.K1, self.K_rho, self.rho))

    @property
    def min_k(self) -> float:
        """The least K(Δ) over Δ ≥ 0."""
        return float(min_k(self.K0, self.K1, self.K_rho, self.rho))

    def physical(self, floor: float = 0.0) -> bool:
        """Finite, Kρ > 0 and K(Δ) > floor for every Δ ≥ 0: the warm-up shape (`is_physical`)."""
        return bool(is_physical(self.K0, self.K1, self.K_rho, self.rho, floor))

    def problem(self) -> str | None:
        """Why these constants give no warm-up shape, in one line, or None when they are physical."""
        if not all(math.isfinite(v) for v in dataclasses.astuple(self)):
            return f"constants must be finite numbers; got {self}"
        if self.rho <= 1:
            return f"rho = {self.rho:g} must be > 1"
        if not self.physical():
            return (f"K0 = {self.K0:.4g}, K1 = {self.K1:.4g}, K_rho = {self.K_rho:.4g} are not "
                    f"physical: min over Δ ≥ 0 of K(Δ) is {self.min_k:.4g} (needs > 0, and K_rho > 0)")
        return None

    def checked(self) -> Constants:
        """These constants, or a SmoothprobeError saying why they cannot drive a schedule."""
        problem = self.problem()
        if problem is not None:
            raise SmoothprobeError(f"constants need rho > 1, K0 > 0, K_rho > 0 and K(Δ) > 0 for every "
                                   f"Δ ≥ 0 (a warm-up peak): {problem}")
        return self

    def peak_within(self, delta_range: tuple[float, float] | None) -> tuple[float, float]:
        """(Δ, η(Δ)) at the largest η over the measured gaps `delta_range`: Δ' clipped to the range
        (η is unimodal), so a peak the data never reached is not extrapolated; (Δ', η_max) without
        a range."""
        if delta_range is None:
            return self.delta_peak, self.eta_max
        at = min(max(self.delta_peak, float(delta_range[0])), float(delta_range[1]))
        return at, float(self.eta(at))

    def rescaled(self, lr: float, delta_range: tuple[float, float] | None = None) -> Constants:
        """The same shape with its largest η over `delta_range` (or η_max) at `lr`: every K
        divided by lr/η there."""
        if not (math.isfinite(lr) and lr > 0):
            raise SmoothprobeError(f"lr must be a finite number > 0. Got {lr}.")
        scale = lr / self.peak_within(delta_range)[1]
        return Constants(self.K0 / scale, self.K1 / scale, self.K_rho / scale, self.rho)


def practical_constants(lr: float, div: float, delta0: float, delta_peak: float) -> Constants:
    """ρ = 2 constants with η(Δ0) = lr/div, η(Δ') = lr and η'(Δ') = 0 (docs/design.md §3)."""
    if not lr > 0 or not div > 1:
        raise SmoothprobeError(
            f"practical schedule needs lr > 0 and div > 1. Got lr={lr}, div={div}."
        )
    if not 0 < delta_peak < delta0:
        raise SmoothprobeError(
            f"practical schedule needs 0 < delta_peak < delta0. Got delta_peak={delta_peak}, "
            f"delta0={delta0}."
        )
    K2 = delta0 * (div - 1.0) / (lr * (delta0 - delta_peak) ** 2)
    return Constants(K2 * delta_peak**2, 1.0 / lr - 2.0 * K2 * delta_peak, K2, 2.0)


def _gauss_legendre(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Composite 16-point Gauss–Legendre nodes and weights on each row's interval [a_i, b_i]."""
    h = ((b - a) / _PANELS)[:, None, None]
    left = a[:, None, None] + h * np.arange(_PANELS)[None, :, None]
    x = left + h * (_GL_NODES + 1.0) / 2.0
    w = np.broadcast_to(h * _GL_WEIGHTS / 2.0, x.shape)
    return x.reshape(len(a), -1), w.reshape(len(a), -1)


def practical_mismatch(
    delta_peaks: ArrayLike, div: float, delta0: float, kappa: float, sigma_f: float = SIGMA_F
) -> np.ndarray:
    """Gaussian-weighted squared mismatch J(Δ') of the practical η to the paper's target shape.

    J(Δ') = (1/Δ0)·∫_0^Δ0 w(Δ)·((η(Δ) − T(Δ))/lr)² dΔ, w = exp(−(Δ − Δ')²·σ_F·κ/2); the target T
    rises as a half cosine from 0 at Δ = 0 to lr at Δ', then falls linearly to lr/div at Δ0.
    Scale-free in lr. Integrated by fixed composite Gauss–Legendre on ±10 standard deviations
    of w around Δ', split at the kink Δ', so a narrow weight is never missed.
    """
    p = np.atleast_1d(np.asarray(delta_peaks, dtype=np.float64))
    precision = sigma_f * kappa
    half = _WINDOW / math.sqrt(precision)
    total = np.zeros_like(p)
    for rising in (True, False):
        a = np.maximum(0.0, p - half) if rising else p
        b = p if rising else np.minimum(delta0, p + half)
        x, w = _gauss_legendre(a, b)
        q = p[:, None]
        shape = 1.0 / (1.0 + (div - 1.0) * (delta0 / x) * ((x - q) / (delta0 - q)) ** 2)
        if rising:
            target = 0.5 * (1.0 - np.cos(np.pi * x / q))
        else:
            target = 1.0 + (1.0 / div - 1.0) * (x - q) / (delta0 - q)
        weight = np.exp(-0.5 * precision * (x - q) ** 2)
        total += np.sum(w * weight * (shape - target) ** 2, axis=1)
    return total / delta0


def practical_delta_peak(
    div: float, delta0: float, kappa: float, sigma_f: float = SIGMA_F, n_scan: int = 500
) -> float:
    """Peak gap Δ' of the practical schedule: argmin of `practical_mismatch` over (0, Δ0).

    The paper's n_scan-point scan (Riabinin et al., arXiv 2602.05813), then a bounded Brent
    refinement inside the best scan cell, so Δ' moves continuously with Δ0 instead of in
    grid steps.
    """
    if not div > 1 or not delta0 > 0 or not kappa > 0 or not sigma_f > 0 or n_scan < 3:
        raise SmoothprobeError(
            f"delta-peak scan needs div > 1, delta0 > 0, kappa > 0, sigma_f > 0, n_scan >= 3. "
            f"Got div={div}, delta0={delta0}, kappa={kappa}, sigma_f={sigma_f}, n_scan={n_scan}."
        )
    grid = delta0 * np.arange(1, n_scan + 1) / (n_scan + 1)
    chunks = np.array_split(grid, max(1, n_scan // 100))
    values = np.concatenate([practical_mismatch(c, div, delta0, kappa, sigma_f) for c in chunks])
    i = int(np.argmin(values))
    edges = np.concatenate([[0.0], grid, [delta0]])
    found = minimize_scalar(
        lambda q: float(practical_mismatch(q, div, delta0, kappa, sigma_f)[0]),
        bounds=(edges[i], edges[i + 2]),
        method="bounded",
        options={"xatol": 1e-10 * delta0},
    )
    return float(found.x) if found.fun <= values[i] else float(grid[i])


@dataclasses.dataclass(frozen=True)
class PracticalRule:
    """The paper's practical parametrisation by (lr, div, Δ'), finalised once Δ0 is known.

    Riabinin et al., "Where Does Warm-Up Come From?" (arXiv 2602.05813). Δ' is given, or chosen
    by `practical_delta_peak` from the geometry's κ = Σ c_i.
    """

    lr: float
    div: float
    delta_peak: float | None = None
    kappa: float | None = None
    sigma_f: float = SIGMA_F
    n_scan: int = 500

    def __post_init__(self) -> None:
        if not self.lr > 0 or not self.div > 1:
            raise SmoothprobeError(
                f"practical needs lr > 0 and div > 1. Got lr={self.lr}, div={self.div}."
            )
        if self.delta_peak is None and self.kappa is None:
            raise SmoothprobeError(
                "practical needs delta_peak or kappa (to choose it). Got neither."
            )
        if self.delta_peak is not None and not self.delta_peak > 0:
            raise SmoothprobeError(f"delta_peak must be > 0. Got {self.delta_peak}.")

    def constants(self, delta0: float) -> Constants:
        """Constants for the start gap Δ0 (Δ' scanned here when not given)."""
        peak = self.delta_peak
        if peak is None:
            peak = practical_delta_peak(self.div, delta0, self.kappa, self.sigma_f, self.n_scan)
        return practical_constants(self.lr, self.div, delta0, peak)
