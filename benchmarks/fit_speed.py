"""Time `smoothprobe fit` on 100k records with 1,000 block-bootstrap resamples (goal: ≤ 10 s).

Data: a planted envelope K = (1 + 2Δ + 3Δ²)·U with U ~ Uniform(0.7, 1) made autocorrelated
(AR(1) Gaussian copula, φ = 0.5), Δ decaying like a loss curve. Each resample is an exact LP
solve, warm-started at the full-data fit with far rows fixed (see smoothprobe.fit.quantile);
`--jobs` splits the resamples over processes. Prints the full fit time, the bootstrap alone,
and both as a ratio to the 10 s goal (< 1 meets it).

    python benchmarks/fit_speed.py [--records 100000] [--resamples 1000] [--jobs 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from smoothprobe.fit import fit_frame
from smoothprobe.fit.bootstrap import bootstrap_envelope
from smoothprobe.fit.models import rho_design

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from planted import planted_steps

GOAL_S = 10.0


def main() -> None:
    """Run the timing and print one line per measurement and the ratio to the goal."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    steps = planted_steps(args.records)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"records {args.records}, resamples {args.resamples}, jobs {args.jobs}, "
          f"cores available {cores}")

    start = time.perf_counter()
    fit = fit_frame(steps, f_star=2.0, bootstrap=args.resamples, n_jobs=args.jobs)
    full = time.perf_counter() - start
    print(f"fit_frame (envelope, LS, CV comparison, f* band, bootstrap): {full:.2f} s")
    print(f"  K0 {fit.K0:.4f} K1 {fit.K1:.4f} K2 {fit.K_rho:.4f} (planted 0.97, 1.94, 2.91); "
          f"block {fit.bootstrap['block_length']}")

    design = rho_design(steps["loss"].to_numpy() - 2.0, steps["secant_K"].to_numpy(), 2.0)
    beta = np.array([fit.K0, fit.K1, fit.K_rho]) / design.constants(np.ones(3))
    start = time.perf_counter()
    bootstrap_envelope(design, beta, fit.quantile, args.resamples,
                       fit.bootstrap["block_length"], 1, args.jobs)
    boot = time.perf_counter() - start
    print(f"bootstrap alone: {boot:.2f} s ({1e3 * boot / args.resamples:.1f} ms per resample)")
    print(f"ratio to the {GOAL_S:g} s goal: bootstrap {boot / GOAL_S:.2f}, "
          f"full fit {full / GOAL_S:.2f}")


if __name__ == "__main__":
    main()
