"""What every probe returns: one row of named floats plus an optional long per-tensor table."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ProbeResult:
    """Columns for the per-step record (`row`) and rows for the per-tensor table (`per_tensor`)."""

    row: dict[str, float]
    per_tensor: list[dict[str, float | str]] = field(default_factory=list)


def ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, or NaN when the denominator is zero (no step, no curvature)."""
    return numerator / denominator if denominator != 0 else float("nan")
