"""Closed forms of the (ρ, K0, K1, Kρ) model: K(Δ), the peak gap Δ' and the peak step η_max."""

from __future__ import annotations

import numpy as np


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
        raise ValueError(f"rho must be > 1. Got {rho}.")
    k0, k_rho = np.asarray(k0, dtype=float), np.asarray(k_rho, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        peak = (k0 / ((rho - 1.0) * k_rho)) ** (1.0 / rho)
    return np.where(k_rho > 0, peak, np.inf)


def eta_max(k0, k1, k_rho, rho: float) -> np.ndarray:
    """η_max = sup_Δ>0 Δ/K(Δ); +inf when K(Δ) ≤ 0 somewhere on Δ > 0 (no finite peak).

    Closed form for every ρ: Δ'/K(Δ'), with the limits 1/K1 when Δ' is 0 or +inf; for ρ = 2 it
    equals 1/(K1 + 2√(K0·K2)).
    """
    k0, k1, k_rho = (np.asarray(v, dtype=float) for v in (k0, k1, k_rho))
    peak = delta_peak(k0, k_rho, rho)
    with np.errstate(divide="ignore", invalid="ignore"):
        interior = np.isfinite(peak) & (peak > 0)
        inner = np.where(interior, k_model(peak, k0, k1, k_rho, rho) / peak, k1)
        return np.where(inner > 0, 1.0 / inner, np.inf)
