"""Nuclear norm: Gram-eigenvalue estimate vs exact SVD, relative error and speed, one run.

Run from the repository root: PYTHONPATH=. python benchmarks/nuclear_estimate.py [--device cuda]
"""

from __future__ import annotations

import argparse
import time

import torch

from smoothprobe.geometry import nuclear_norm_estimate


def seconds(fn, device: torch.device, repeats: int) -> float:
    """Best wall time of `repeats` calls, synchronising CUDA around each."""
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = torch.device(args.device)
    generator = torch.Generator(device=device).manual_seed(0)
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(
        f"{'shape':>12} {'rel.err':>9} {'bound/Σσ':>9} {'svd32 s':>8} {'svd64 s':>8} "
        f"{'est s':>7} {'×svd32':>7} {'×svd64':>7}"
    )
    for shape in [(50304, 768), (768, 768)]:
        g = torch.randn(*shape, generator=generator, device=device)
        g[:, :8] *= 30.0
        reference = torch.linalg.svdvals(g.double()).sum().item()
        estimate, bound = nuclear_norm_estimate(g)
        error = abs(estimate.item() - reference) / reference
        t32 = seconds(lambda g=g: torch.linalg.svdvals(g), device, args.repeats)
        t64 = seconds(lambda g=g: torch.linalg.svdvals(g.double()), device, 1)
        test = seconds(lambda g=g: nuclear_norm_estimate(g), device, args.repeats)
        print(
            f"{shape!s:>12} {error:9.1e} {bound.item() / reference:9.1e} {t32:8.2f} "
            f"{t64:8.2f} {test:7.2f} {t32 / test:7.1f} {t64 / test:7.1f}"
        )


if __name__ == "__main__":
    main()
