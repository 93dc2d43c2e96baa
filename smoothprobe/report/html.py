"""Arrange run views, figures and tables into one self-contained HTML page (jinja2, autoescaped)."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path

import jinja2

from smoothprobe.probes import panels
from smoothprobe.report import figures
from smoothprobe.report.data import RunView, final_losses, probe_costs, schedule_note

TEMPLATES = Path(__file__).parent / "templates"
SECTIONS = (
    ("summary", "Runs"),
    ("config", "Configuration"),
    ("loss-lr", "Loss and learning rate"),
    ("k-vs-delta", "K against Δ"),
    ("residuals", "Residuals"),
    ("model-comparison", "Model comparison"),
    ("schedule", "Implied schedule"),
    ("tensor-norms", "Per-tensor norms"),
    ("curvature", "Curvature probes"),
    ("probe-cost", "Probe cost"),
    ("warnings", "Warnings"),
)
INTERVAL_ROWS = (("K0", "K0"), ("K1", "K1"), ("K_rho", "K_ρ"), ("delta_peak", "Δ'"),
                 ("eta_max", "η_max"), ("switch_loss", "switch loss f* + Δ'"))


def num(value: object, spec: str = ".4g") -> str:
    """A number for a table cell; 'n/a' for None and NaN, anything else as text."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return format(value, spec) if isinstance(value, (int, float)) else str(value)


def flatten(d: dict, prefix: str = "") -> list[tuple[str, object]]:
    """Nested dict as (dotted key, value) rows."""
    rows = []
    for key, value in d.items():
        if isinstance(value, dict) and value:
            rows += flatten(value, f"{prefix}{key}.")
        else:
            rows.append((f"{prefix}{key}", value))
    return rows


def config_rows(view: RunView) -> list[tuple[str, object]]:
    """What defines the run: config, task, optimizer split, probe set-up, machine."""
    info = view.run.info
    split = (info.get("optimizer") or {}).get("split") or {}
    probes = dict(info.get("probes") or {})
    probes.pop("tensors", None)
    rows = [("path", str(view.run.path))] + flatten(info.get("config") or {}, "config.")
    rows += flatten(info.get("task") or {}, "task.")
    rows += [(f"optimizer.split.{algo}", f"{len(names)} tensors") for algo, names in split.items()]
    rows += flatten(probes, "probes.")
    rows += [(k, info[k]) for k in ("parameters", "device", "created", "status") if k in info]
    rows += flatten(info.get("environment") or {}, "environment.")
    return rows


def fit_context(view: RunView) -> dict | None:
    """Constants with intervals, least squares, comparison rows and verdict of a run's fit."""
    fit = view.fit
    if fit is None:
        return None
    values = {"K0": fit.K0, "K1": fit.K1, "K_rho": fit.K_rho, "delta_peak": fit.delta_peak,
              "eta_max": fit.eta_max, "switch_loss": fit.f_star + fit.delta_peak}
    constants = [{"name": label, "value": values[key], "interval": fit.intervals.get(key)}
                 for key, label in INTERVAL_ROWS]
    scored = [m for m in fit.comparison if m.get("cv_pinball") is not None
              and not math.isnan(m["cv_pinball"])]
    best = min(scored, key=lambda m: m["cv_pinball"])["name"] if scored else None
    return {"fit": fit, "constants": constants, "level": round(100 * fit.level),
            "comparison": fit.comparison, "best": best}


def run_context(view: RunView) -> dict:
    """Everything the template shows about one run, figures included."""
    tensors = view.run.tensors
    if not tensors.empty and view.family is not None and "grad_dual" in tensors.columns:
        tensors = tensors[(tensors["family"] == view.family) & tensors["grad_dual"].notna()]
    has_tensors = not tensors.empty and "grad_dual" in tensors.columns
    has_points = view.points is not None
    no_schedule = view.fit_note if view.fit is None else schedule_note(view.fit)
    return {
        "view": view,
        "summary": final_losses(view),
        "config": config_rows(view),
        "fit": fit_context(view),
        "n_points": len(view.points) if has_points else 0,
        "k_vs_delta": figures.k_vs_delta(view) if has_points else None,
        "residuals": figures.residuals(view) if has_points and view.fit else None,
        "schedule": None if no_schedule else figures.schedule(view),
        "no_schedule": no_schedule,
        "schedule_problem": view.fit.schedule_problem() if view.fit is not None else None,
        "tensor_norms": figures.tensor_norms(view, tensors) if has_tensors else None,
        "costs": probe_costs(view.steps),
    }


def environment() -> jinja2.Environment:
    """Jinja environment: autoescape on everything, undefined names are errors."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True)
    env.filters["num"] = num
    return env


def render(views: Sequence[RunView], title: str) -> str:
    """The report page for `views` (one or several runs)."""
    runs = [run_context(v) for v in views]
    curvature = any(line.column in v.steps.columns for v in views for _, lines in panels()
                    for line in lines if line.alone)
    finals = [r["summary"]["final_val"] for r in runs if not math.isnan(r["summary"]["final_val"])]
    return environment().get_template("report.html.j2").render(
        title=title,
        sections=SECTIONS,
        runs=runs,
        best_val=min(finals) if len(finals) > 1 else None,
        loss_lr=figures.loss_lr(views) if any("loss" in v.steps.columns for v in views) else None,
        curvature=figures.curvature(views) if curvature else None,
        total_points=sum(r["n_points"] for r in runs),
        generated=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    )
