"""Step tables with a planted smoothness envelope: the known answer fits are checked against."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import norm

from smoothprobe.smoothness import k_model


def planted_steps(n: int, seed: int = 0, *, constants: tuple[float, float, float] = (1.0, 2.0, 3.0),
                  rho: float = 2.0, phi: float = 0.5, u_low: float = 0.7, f_star: float = 2.0) -> pd.DataFrame:
    """Steps whose secant K = (K0 + K1Δ + Kρ·Δ^ρ)·U with U ~ Uniform(u_low, 1), made autocorrelated by
    an AR(1) Gaussian copula (coefficient `phi`), and Δ decaying like a loss curve from 3.

    The τ-quantile of K given Δ is then exactly (u_low + (1 − u_low)·τ)·(K0 + K1Δ + KρΔ^ρ).
    """
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    delta = 3.0 * (1 + t / (n / 50)) ** -0.8
    z = np.empty(n)
    z[0] = rng.normal()
    shocks = rng.normal(size=n) * np.sqrt(1 - phi**2)
    for i in range(1, n):
        z[i] = phi * z[i - 1] + shocks[i]
    u = u_low + (1 - u_low) * norm.cdf(z)
    return pd.DataFrame({"step": t, "loss": f_star + delta, "lr": 1e-3, "grad_norm": 1.0,
                         "secant_K": k_model(delta, *constants, rho) * u})
