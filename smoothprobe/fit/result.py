"""The fitted smoothness model as a plain-attribute object, its fit.json and its terminal table."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from smoothprobe.errors import SmoothprobeError
from smoothprobe.fit.schema import (
    SCHEMA_VERSION,
    check_fit,
    check_schedule_fit,
    read_fit_json,
    upgrade_fit,
)
from smoothprobe.smoothness import Constants, k_model

CONSTANTS = ("K0", "K1", "K_rho")


def _clean(value):
    """JSON-safe copy: numpy scalars to Python, non-finite floats to None, tuples to lists."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_clean(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _fmt(value, spec: str) -> str:
    """Format a number, or 'n/a' for None/NaN (as read back from JSON)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return format("n/a", spec.rstrip("gfe").split(".")[0] or "")
    return format(value, spec)


def _num(value) -> float:
    """Float back from JSON, None read as NaN."""
    return float("nan") if value is None else float(value)


def _finite(value) -> float | None:
    """A finite real number as float, else None (missing, null, NaN, inf, bool, text)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        return None
    return float(value) if math.isfinite(value) else None


def schedule_problem_of(d: Mapping) -> str | None:
    """Why the fit in `d` (fit.json content) must not drive a learning-rate schedule, in one
    line, or None when it may: non-finite or non-physical constants, a degenerate f*, or a
    status other than "supported". Whether the peak Δ' calls for a warm-up at the current gap is
    `smoothprobe.schedule.decision.decide`'s question. Constants without a status (written by
    hand) only need to be physical. Never raises on malformed input; that is a reason too."""
    if not isinstance(d, Mapping):
        return f"the fit is not a JSON object (got {type(d).__name__})"
    raw = d.get("constants")
    if not isinstance(raw, Mapping):
        return "the fit has no 'constants' object"
    c = {key: _finite(raw.get(key)) for key in ("rho", *CONSTANTS)}
    missing = [key for key, value in c.items() if value is None]
    if missing:
        return f"constants {', '.join(missing)} are missing or not finite numbers"
    problem = Constants(c["K0"], c["K1"], c["K_rho"], c["rho"]).problem()
    if problem is not None:
        return problem
    status = d.get("status")
    if status is None:  # constants written by hand: being physical is all that can be checked
        return None
    for key in ("f_star", "delta_peak", "eta_max"):
        if _finite(d.get(key)) is None:
            return f"{key} is missing or not finite"
    fstar_fit = d.get("f_star_fit")
    if isinstance(fstar_fit, Mapping) and fstar_fit.get("degenerate"):
        return f"f* was estimated from a degenerate loss-curve fit: {fstar_fit['degenerate']}"
    if status != "supported":
        why = d.get("status_reason")
        return f"the fit's status is {status!r}, not 'supported'" + (f": {why}" if isinstance(why, str) and why else "")
    return None


@dataclass
class SmoothnessFit:
    """(ρ, K0, K1, Kρ)-smoothness fitted to a run (arXiv 2602.05813), read like a scikit-learn fit.

    Constants are those of the τ-quantile upper envelope; `intervals` are block-bootstrap
    percentile intervals at `level`, conditional on ρ and f*. Non-finite numbers (Δ' when
    Kρ = 0, an unbounded η_max) are written to JSON as null and read back as NaN.
    """

    rho: float
    K0: float
    K1: float
    K_rho: float
    f_star: float
    f_star_source: str
    delta_peak: float
    eta_max: float
    column: str
    delta_from: str
    quantile: float
    window: tuple[int, int]
    data: dict
    verdict: str
    status: str
    status_cause: str
    status_reason: str
    spearman: float
    spearman_p: float
    least_squares: dict
    comparison: list[dict]
    sensitivity: list[dict]
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    level: float = 0.95
    bootstrap: dict = field(default_factory=dict)
    rho_profile: dict[float, float] | None = None
    f_star_fit: dict | None = None
    source: dict | None = None
    """The recorded run's task, optimizer and geometry family (`fit_run`; None for a fit of a table): a
    schedule on another setup would read K measured in another norm, on another loss."""

    @property
    def delta_range(self) -> tuple[float, float]:
        """Smallest and largest Δ among the rows used."""
        return tuple(self.data["delta_range"])

    @property
    def constants(self) -> Constants:
        """The fitted (ρ, K0, K1, Kρ) with K(Δ), η(Δ), Δ' and η_max as methods."""
        return Constants(self.K0, self.K1, self.K_rho, self.rho)

    def predict(self, delta: np.ndarray | float) -> np.ndarray:
        """The envelope K(Δ)."""
        return self.constants.K(delta)

    def eta(self, delta: np.ndarray | float) -> np.ndarray:
        """The model's step size η(Δ) = Δ / K(Δ)."""
        return self.constants.eta(delta)

    @property
    def bootstrap_constants(self) -> np.ndarray | None:
        """(K0, K1, Kρ) of every bootstrap refit, shape (B, 3); None when the fit has none (no
        bootstrap, or a fit.json written before they were stored)."""
        rows = (self.bootstrap or {}).get("constants")
        if not rows:
            return None
        return np.array([[_num(v) for v in row] for row in rows], dtype=float)

    def band(self, delta: np.ndarray, level: float | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
        """Pointwise (low, high) percentile band of the envelope K(Δ) over the bootstrap refits,
        at `level` (default: the fit's), conditional on ρ and f* like the intervals; percentiles
        interpolate linearly between neighbouring refits."""
        boot = self.bootstrap_constants
        if boot is None:
            raise SmoothprobeError("band: this fit has no bootstrap refits; fit with "
                                   "bootstrap > 0")
        level = self.level if level is None else level
        if not 0 < level < 1:
            raise SmoothprobeError(f"band: level must be in (0, 1); got {level!r}")
        delta = np.asarray(delta, dtype=float)
        shape = (-1,) + (1,) * delta.ndim  # refits along a new first axis
        curves = k_model(delta, *(boot[:, i].reshape(shape) for i in range(3)), self.rho)
        low, high = np.percentile(curves, [50 * (1 - level), 50 * (1 + level)], axis=0)
        return low, high

    def schedule_problem(self) -> str | None:
        """Why this fit must not drive a learning-rate schedule from the start of a run (one line),
        or None if it may: `schedule_problem_of`, then the decision at its largest measured gap
        (`smoothprobe.schedule.decision.decide`), which is what `AdaptiveWarmup.from_fit` applies."""
        from smoothprobe.schedule.decision import decide  # the schedule layer reads fits, not back

        decision = decide(self, None)
        return None if decision.decided else decision.reason

    def to_dict(self) -> dict:
        """fit.json content: the keys the scheduler reads at top level, the rest in sections."""
        body = asdict(self)
        out = {
            "schema_version": SCHEMA_VERSION,
            "constants": {"rho": self.rho, "K0": self.K0, "K1": self.K1, "K_rho": self.K_rho},
            "f_star": self.f_star, "delta_peak": self.delta_peak, "eta_max": self.eta_max,
            "delta_range": list(self.delta_range), "window": list(self.window),
        }
        for key in ("rho", "K0", "K1", "K_rho", "f_star", "delta_peak", "eta_max", "window"):
            body.pop(key)
        out.update(body)
        if self.rho_profile is not None:
            out["rho_profile"] = [[r, v] for r, v in self.rho_profile.items()]
        return _clean(out)

    def to_json(self, path: str | Path) -> None:
        """Write fit.json (strict JSON), checked as `from_dict` reads it: a fit that could not be read back
        is refused here, in one line, not written."""
        # the store reads fit.schema: imported here, not above
        from smoothprobe.store import refuse_replacing, replace_atomically

        data = self.to_dict()
        check_fit(data, str(path))
        refuse_replacing(Path(path), b'"constants"', "fit.json")
        text = json.dumps(data, indent=2, allow_nan=False) + "\n"
        replace_atomically(Path(path), lambda tmp: tmp.write_text(text))  # a full disk leaves the old fit.json

    @classmethod
    def from_dict(cls, d: dict) -> SmoothnessFit:
        """Inverse of `to_dict` (a version-1 dict is upgraded first: `schema.upgrade_fit`)."""
        d = upgrade_fit(d)
        check_fit(d)
        if d.get("schema_version") != SCHEMA_VERSION:
            raise SmoothprobeError(f"fit.json schema_version must be {SCHEMA_VERSION}; "
                                   f"got {d.get('schema_version')!r}")
        c = d["constants"]
        profile = d.get("rho_profile")
        return cls(
            rho=float(c["rho"]), K0=_num(c["K0"]), K1=_num(c["K1"]), K_rho=_num(c["K_rho"]),
            f_star=_num(d["f_star"]), f_star_source=d["f_star_source"],
            delta_peak=_num(d["delta_peak"]), eta_max=_num(d["eta_max"]), column=d["column"],
            delta_from=d["delta_from"], quantile=float(d["quantile"]),
            window=tuple(d["window"]), data=d["data"], verdict=d["verdict"],
            status=d["status"], status_cause=d["status_cause"], status_reason=d["status_reason"],
            spearman=_num(d["spearman"]), spearman_p=_num(d["spearman_p"]),
            least_squares=d["least_squares"], comparison=d["comparison"],
            sensitivity=d["sensitivity"],
            intervals={k: (_num(v[0]), _num(v[1])) for k, v in d["intervals"].items()},
            level=float(d["level"]), bootstrap=d["bootstrap"],
            rho_profile=None if profile is None else {float(r): _num(v) for r, v in profile},
            f_star_fit=d.get("f_star_fit"), source=d.get("source"),
        )

    @classmethod
    def from_json(cls, path: str | Path) -> SmoothnessFit:
        """Read a fit.json written by `to_json`."""
        data = read_fit_json(str(path))
        try:
            return cls.from_dict(data)
        except KeyError as err:
            raise SmoothprobeError(f"cannot read fit file {path}: {err!r}") from None

    @staticmethod
    def schedule_content(source: SmoothnessFit | str | os.PathLike | Mapping) -> Mapping:
        """What a schedule reads from a fit: this fit's fit.json content, or a fit.json (a path or
        its loaded content, upgraded to the current schema; constants written by hand need only the
        schedule's keys), refused in one line naming the field."""
        if isinstance(source, SmoothnessFit):
            return source.to_dict()
        name = "fit" if isinstance(source, Mapping) else str(source)
        data = upgrade_fit(dict(source)) if isinstance(source, Mapping) else read_fit_json(name)
        check_schedule_fit(data, name)
        if "schema_version" in data and data["schema_version"] != SCHEMA_VERSION:  # version 1 was upgraded above
            raise SmoothprobeError(f"{name}: field 'schema_version' must be {SCHEMA_VERSION} (or absent, for constants "
                                   f"written by hand); got {data['schema_version']!r:.40}")
        return data

    def summary_table(self) -> str:
        """Readable multi-line table of the fit for the terminal."""
        d = self.data
        pct = round(100 * self.level)
        lines = [
            (f"smoothprobe fit: {self.column} vs Δ = {self.delta_from} − f*   "
             f"(steps {self.window[0]}..{self.window[1]}, {d['rows_used']} of "
             f"{d['rows_in_window']} rows; dropped {d['dropped_nan']} NaN, "
             f"{d['dropped_nonpositive_delta']} with Δ ≤ 0)"),
            (f"f* = {self.f_star:.6g} ({self.f_star_source})   envelope quantile "
             f"{self.quantile:g}   rho = {self.rho:g}   Δ in [{self.delta_range[0]:.4g}, "
             f"{self.delta_range[1]:.4g}]"),
            "",
            f"{'':<22}{'estimate':>12}   {pct}% interval",
        ]
        rows = [(name, getattr(self, name)) for name in CONSTANTS]
        rows += [("Δ' (delta_peak)", self.delta_peak), ("eta_max", self.eta_max),
                 ("switch loss f*+Δ'", self.f_star + self.delta_peak)]
        keys = (*CONSTANTS, "delta_peak", "eta_max", "switch_loss")
        for (label, value), key in zip(rows, keys):
            lo, hi = self.intervals.get(key, (float("nan"), float("nan")))
            ci = f"[{_fmt(lo, '.4g')}, {_fmt(hi, '.4g')}]" if self.intervals else "(no bootstrap)"
            lines.append(f"{label:<22}{_fmt(value, '>12.4g')}   {ci}")
        ls = self.least_squares
        lines += ["", (f"least squares: K0 {ls['K0']:.4g}  K1 {ls['K1']:.4g}  K_rho "
                       f"{ls['K_rho']:.4g}  R² {ls['r2']:.3f}"), "",
                  f"{'model':<30}{'coverage':>10}{'CV pinball':>12}"]
        for m in self.comparison:
            tail = f"  skipped: {m['skipped']}" if m["skipped"] else ""
            lines.append(f"{m['name']:<30}{_fmt(m['coverage'], '>10.3f')}"
                         f"{_fmt(m['cv_pinball'], '>12.4g')}{tail}")
        n_eff = self.data.get("spearman_n_eff")  # absent from a fit.json written before it was kept
        rows = f", effective rows {n_eff:.0f} of {self.data['rows_used']}" if n_eff is not None else ""
        lines += ["", f"Spearman(K, Δ) = {self.spearman:+.3f} (p = {self.spearman_p:.2g}{rows})"]
        if self.sensitivity:
            lines += ["", (f"{'f*':>10}{'Δ' + chr(39):>10}{'eta_max':>12}"
                           f"{'switch loss':>13}{'rows':>8}")]
            for s in self.sensitivity:
                lines.append("".join(_fmt(s[k], f) for k, f in (
                    ("f_star", ">10.5g"), ("delta_peak", ">10.4g"), ("eta_max", ">12.4g"),
                    ("switch_loss", ">13.4g"), ("rows_used", ">8"))))
        problem = self.schedule_problem()
        tail = [] if problem is None else [f"Not for a learning-rate schedule: {problem}."]
        return "\n".join([*lines, "", self.verdict, *tail])
