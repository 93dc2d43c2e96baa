"""The report's figures (seaborn/matplotlib on the Agg canvas), each returned as a PNG data URI.

Figures are built with `matplotlib.figure.Figure`, never pyplot, so rendering a report neither
switches the caller's backend nor leaves figures open; styles apply through `rc_context` only.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import matplotlib as mpl
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from smoothprobe.fit import SmoothnessFit
from smoothprobe.probes import panels
from smoothprobe.report.data import RunView, delta_grid
from smoothprobe.smoothness import k_model

DPI = 96
WIDTH = 10.0
STYLE = {**sns.axes_style("whitegrid"), **sns.plotting_context("notebook", font_scale=0.85)}
DECADE = 10.0
"""Use a log axis when the positive values span more than this ratio."""
NATS_TASKS = ("markov", "lm")


def run_colors(n: int) -> list[str]:
    """One colour per run, the same in every figure."""
    return [mpl.colors.to_hex(c) for c in sns.color_palette("colorblind", max(n, 1))][:n]


def text(label: str) -> str:
    """A user string safe for matplotlib (a '$' would start mathtext)."""
    return label.replace("$", r"\$")


@contextmanager
def figure(rows: int = 1, cols: int = 1, height: float = 3.6, width: float = WIDTH
           ) -> Iterator[tuple[Figure, np.ndarray]]:
    """A styled figure and its axes array (always 2-D)."""
    with mpl.rc_context(STYLE):
        fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
        axes = fig.subplots(rows, cols, squeeze=False)
        yield fig, axes


def data_uri(fig: Figure) -> str:
    """The figure as a base64 PNG data URI (the report embeds it, no file or network)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def autoscale(ax, values: Sequence[float] | np.ndarray, axis: str = "y") -> None:
    """Log scale on `axis` when every finite value is positive and they span > DECADE."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) and v.min() > 0 and v.max() / v.min() > DECADE:
        (ax.set_yscale if axis == "y" else ax.set_xscale)("log")


def show_level(ax, y: float, margin: float = 0.06) -> None:
    """Keep the horizontal line at `y` at least `margin` of the axis height inside the y range,
    off the bottom and top edges where a spine would hide it (not drawable at y ≤ 0 on log)."""
    log = ax.get_yscale() == "log"
    if log and y <= 0:
        return
    scale, unscale = (np.log10, lambda v: 10.0 ** v) if log else (float, float)
    lo, hi = (scale(v) for v in ax.get_ylim())
    at = scale(y)
    if at - lo < margin * (hi - lo):  # solve at - lo = margin · (hi - lo) for lo
        lo = (at - margin * hi) / (1 - margin)
    if hi - at < margin * (hi - lo):
        hi = (at - margin * lo) / (1 - margin)
    ax.set_ylim(unscale(lo), unscale(hi))


def loss_unit(views: Sequence[RunView]) -> str:
    """Axis unit of the loss: nats per token for the language tasks."""
    tasks = {v.run.config.get("task") for v in views}
    return " (nats/token)" if tasks and tasks <= set(NATS_TASKS) else ""


def loss_lr(views: Sequence[RunView]) -> str:
    """Train loss (lines), validation loss (markers) and the LR per step, runs overlaid."""
    with figure(1, 2) as (fig, axes):
        ax_loss, ax_lr = axes[0]
        losses, lrs = [], []
        for v in views:
            s = v.steps
            if "loss" in s.columns:
                ax_loss.plot(s["step"], s["loss"], color=v.color, lw=1, alpha=0.85,
                             label=f"{text(v.label)} train")
                losses += list(s["loss"])
            ev = v.run.evals
            if "val_loss" in ev.columns:
                ax_loss.plot(ev["step"], ev["val_loss"], color=v.color, ls="--", marker="o",
                             ms=4, label=f"{text(v.label)} val")
                losses += list(ev["val_loss"])
            if "lr" in s.columns:
                ax_lr.plot(s["step"], s["lr"], color=v.color, lw=1.2, label=text(v.label))
                lrs += list(s["lr"])
        f_stars = {v.f_star for v in views if v.f_star is not None}
        f_star = f_stars.pop() if len(f_stars) == 1 else None
        autoscale(ax_loss, losses + ([f_star] if f_star is not None else []))
        autoscale(ax_lr, lrs)
        if f_star is not None:
            ax_loss.axhline(f_star, color="0.15", ls=":", lw=1.6, zorder=3, label=f"f* = {f_star:.4g}")
            show_level(ax_loss, f_star)
        ax_loss.set(xlabel="step", ylabel="loss" + loss_unit(views), title="loss")
        ax_lr.set(xlabel="step", ylabel="learning rate", title="learning rate used")
        ax_loss.legend(fontsize="small")
        return data_uri(fig)


def k_label(view: RunView) -> str:
    """Y label of the K axis: the probed column and its geometry."""
    column = view.fit.column if view.fit is not None else "secant_K"
    if column == "secant_K":
        return f"secant K = ‖Δg‖* / ‖Δx‖  ({view.family or '?'} geometry)"
    if column == "secant_K_euclid":
        return "secant K = ‖Δg‖₂ / ‖Δx‖₂  (Euclidean)"
    return column


def delta_label(view: RunView) -> str:
    """X label of the Δ axis."""
    source = view.fit.delta_from if view.fit is not None else "loss"
    return f"Δ = {source} − f*" + loss_unit([view])


def k_vs_delta(view: RunView) -> str:
    """K against Δ coloured by step, with the envelope, its bootstrap band and least squares
    (drawn over the data's Δ only, and clipped to the axes the points and envelope set)."""
    pts, fit = view.points, view.fit
    with figure(height=4.2, width=7.5) as (fig, axes):
        ax = axes[0, 0]
        art = ax.scatter(pts["delta"], pts["k"], c=pts["step"], cmap="viridis", s=14,
                         alpha=0.85, linewidths=0)
        fig.colorbar(art, ax=ax, label="step")
        if fit is not None:
            grid = delta_grid(pts, fit)
            if view.band is not None:
                g, low, high = view.band
                ax.fill_between(g, low, high, color=view.color, alpha=0.2,
                                label=f"{round(100 * fit.level)}% bootstrap band")
            ax.plot(grid, fit.predict(grid), color=view.color, lw=2,
                    label=f"envelope (τ = {fit.quantile:g}, ρ = {fit.rho:g})")
        autoscale(ax, pts["delta"], "x")
        autoscale(ax, pts["k"])
        if ax.get_yscale() == "log":  # a band reaching towards 0 must not squash the points
            ax.set_ylim(bottom=max(ax.get_ylim()[0], pts["k"].min() / 3))
        if fit is not None:
            limits = ax.get_xlim(), ax.get_ylim()
            ls = fit.least_squares
            seen = np.geomspace(pts["delta"].min(), pts["delta"].max(), 200)
            ax.plot(seen, k_model(seen, ls["K0"], ls["K1"], ls["K_rho"], fit.rho), color="0.2",
                    ls="--", lw=1.3, label=f"least squares (R² = {ls['r2']:.3f}, over the data's Δ)")
            ax.set(xlim=limits[0], ylim=limits[1])
            ax.legend(fontsize="small")
        ax.set(xlabel=delta_label(view), ylabel=k_label(view), title=text(view.label))
        return data_uri(fig)


def residuals(view: RunView) -> str:
    """K over the envelope K(Δ), against Δ and against step (above 1: outside the envelope)."""
    pts, fit = view.points, view.fit
    envelope = fit.predict(pts["delta"].to_numpy())
    ratio = pts["k"].to_numpy() / np.where(envelope > 0, envelope, np.nan)  # K ≤ 0: no ratio
    above = float(np.mean(ratio > 1))
    with figure(1, 2, height=3.4) as (fig, axes):
        for ax, x, xlabel in ((axes[0, 0], pts["delta"], delta_label(view)),
                              (axes[0, 1], pts["step"], "step")):
            ax.scatter(x, ratio, color=view.color, s=12, alpha=0.8, linewidths=0)
            ax.axhline(1.0, color="0.2", lw=1)
            autoscale(ax, ratio)
            ax.set(xlabel=xlabel, ylabel="K / envelope K(Δ)")
        autoscale(axes[0, 0], pts["delta"], "x")
        fig.suptitle(f"{text(view.label)}: {100 * above:.0f}% of points above the envelope "
                     f"(target {100 * (1 - fit.quantile):.0f}%)", fontsize="medium")
        return data_uri(fig)


def switch_step(view: RunView, switch_loss: float) -> int | None:
    """First step where the schedule switched (adaptive runs) or the smoothed loss fell below
    the switch loss f* + Δ' (other runs)."""
    s = view.steps
    if "phase" in s.columns:
        decay = s[s["phase"] == "decay"]
        return int(decay["step"].iloc[0]) if len(decay) else None
    if not np.isfinite(switch_loss) or "loss" not in s.columns:
        return None
    smooth = s["loss"].rolling(10, min_periods=1).mean()
    below = s[smooth <= switch_loss]
    return int(below["step"].iloc[0]) if len(below) else None


def lr_at_gap(steps: pd.DataFrame, fit: SmoothnessFit) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The gap Δ > 0, the LR and the step of each row, Δ read from the loss column the fit read
    (`loss_after` exists on probed rows only); empty arrays where the run has no such column or no LR."""
    if not {fit.delta_from, "lr"} <= set(steps.columns):
        return np.array([]), np.array([]), np.array([])
    delta = steps[fit.delta_from].to_numpy(dtype=float) - fit.f_star
    used = delta > 0  # NaN (an unprobed row) is not
    return delta[used], steps["lr"].to_numpy(dtype=float)[used], steps["step"].to_numpy()[used]


def schedule(view: RunView) -> str:
    """η(Δ) implied by a physical fit (`schedule_note` is None) with Δ', the LR actually used at
    each Δ, and the LR per step (each drawn when the run recorded loss and LR)."""
    fit, s = view.fit, view.steps
    peak = fit.delta_peak
    with figure(1, 2, height=3.8) as (fig, axes):
        ax_eta, ax_step = axes[0]
        grid = delta_grid(view.points, fit) if view.points is not None else np.geomspace(
            *fit.delta_range, 200)
        grid = np.geomspace(min(grid[0], peak / 2), max(grid[-1], 2 * peak), 300)
        implied = fit.eta(grid)
        ax_eta.plot(grid, implied, color=view.color, lw=2, label="η(Δ) = Δ / K(Δ) of the fit")
        ax_eta.axvline(peak, color="0.2", ls="--", lw=1,
                       label=f"Δ' = {peak:.4g} (switch loss {fit.f_star + peak:.4g})")
        delta, lr, steps = lr_at_gap(s, fit)
        if len(delta):
            ax_eta.scatter(delta, lr, c=steps, cmap="viridis", s=6, alpha=0.6, label="LR used (colour: step)")
        if "delta_peak" in s.columns and s["delta_peak"].notna().any():
            own = float(s["delta_peak"].dropna().iloc[-1])
            ax_eta.axvline(own, color=view.color, ls=":", lw=1.5,
                           label=f"Δ' of the run's adaptive schedule = {own:.4g}")
        autoscale(ax_eta, np.concatenate([grid, delta]), "x")
        autoscale(ax_eta, np.concatenate([implied, lr]))
        ax_eta.set(xlabel=delta_label(view), ylabel="step size η (primal norm)",
                   title="implied η(Δ) and the LR used")
        ax_eta.legend(fontsize="small")
        if "lr" in s.columns:
            ax_step.plot(s["step"], s["lr"], color=view.color, lw=1.3, label="LR used")
            autoscale(ax_step, s["lr"])
        when = switch_step(view, fit.f_star + peak)
        if when is not None:
            ax_step.axvline(when, color="0.2", ls="--", lw=1, label=f"switch at step {when}")
        ax_step.set(xlabel="step", ylabel="learning rate", title="schedule used")
        if ax_step.get_legend_handles_labels()[0]:
            ax_step.legend(fontsize="small")
        fig.suptitle(text(view.label), fontsize="medium")
        return data_uri(fig)


def tensor_norms(view: RunView, tensors: pd.DataFrame) -> str:
    """Heatmaps (log colour) of each tensor's gradient dual norm and update primal norm per step."""
    names = list(dict.fromkeys(tensors["tensor"]))
    height = 2.4 + 0.16 * len(names)
    with figure(1, 2, height=height, width=WIDTH + 2) as (fig, axes):
        for ax, column, what in ((axes[0, 0], "grad_dual", "gradient dual norm ‖g_i‖*"),
                                 (axes[0, 1], "update_primal", "update primal norm ‖Δx_i‖")):
            grid = tensors.pivot_table(index="tensor", columns="step", values=column,
                                       aggfunc="first").reindex(names)
            positive = grid.where(grid > 0)
            finite = positive.to_numpy()[np.isfinite(positive.to_numpy())]
            norm = LogNorm(finite.min(), finite.max()) if len(finite) else None
            sns.heatmap(positive, ax=ax, cmap="magma", norm=norm, yticklabels=ax is axes[0, 0],
                        xticklabels=max(1, grid.shape[1] // 12))
            ax.set(xlabel="step", ylabel="", title=what)
            ax.tick_params(axis="y", labelsize=7)
        fig.suptitle(f"{text(view.label)} ({view.family} geometry)", fontsize="medium")
        return data_uri(fig)


def negative_share(steps: pd.DataFrame) -> str | None:
    """How much negative curvature Lanczos saw: steps with λ_min < 0 and median |λ_min| / ‖H‖₂."""
    if "bottom_eig" not in steps.columns or "hessian_norm" not in steps.columns:
        return None
    rows = steps[steps.bottom_eig.notna() & steps.hessian_norm.notna()]
    rows = rows[np.isfinite(rows.bottom_eig.astype(float)) & (rows.hessian_norm.astype(float) > 0)]
    if rows.empty:
        return None
    negative = rows.bottom_eig.astype(float) < 0
    share = float(np.median(np.maximum(-rows.bottom_eig.astype(float), 0) / rows.hessian_norm.astype(float)))
    return f"λ_min < 0 on {int(negative.sum())}/{len(rows)} steps, median |λ_min|/‖H‖₂ {share:.2f}"


def mark_unconverged(ax, rows: pd.DataFrame, column: str, color: str) -> None:
    """Ring the Lanczos values whose `<column>_converged` flag is false: there they are bounds."""
    flag = f"{column}_converged"
    if flag not in rows.columns:
        return
    missed = rows[rows[flag].notna() & ~rows[flag].fillna(True).astype(bool)]
    if len(missed):
        labelled = any(h.get_label() == "not converged (a bound)" for h in ax.get_lines())
        ax.plot(missed["step"], missed[column].astype(float), ls="none", marker="o", ms=6,
                mfc="none", mec=color, label=None if labelled else "not converged (a bound)")


def curvature(views: Sequence[RunView]) -> str:
    """The curvature probes over time, one panel per `smoothprobe.probes.panels()` entry (the
    built-in ones: spectrum ends, trace, curvature along the update, smoothness in the optimizer's
    own norm), runs overlaid."""
    layout = panels()
    with figure(1, len(layout), height=3.6, width=WIDTH + 5) as (fig, axes):
        for ax, (title, lines) in zip(axes[0], layout):
            values = []
            for v in views:
                s = v.steps
                for line in lines:
                    if line.column not in s.columns:
                        continue
                    rows = s[s[line.column].notna()]
                    y = rows[line.column].astype(float)
                    if line.style == ".":
                        ax.plot(rows["step"], y, color=v.color, marker=".", ls="none", ms=3)
                    else:
                        ax.plot(rows["step"], y, color=v.color, ls=line.style, lw=1, marker=".", ms=2,
                                label=text(v.label) if line is lines[0] else None)
                    values += list(y)
                    mark_unconverged(ax, rows, line.column, v.color)
                    if line.band is not None and line.band in rows.columns:
                        se = rows[line.band].astype(float)
                        ax.fill_between(rows["step"], y - 2 * se, y + 2 * se, color=v.color, alpha=0.2)
            autoscale(ax, values)
            lanczos = any(line.column == "bottom_eig" for line in lines)
            notes = [n for v in views if lanczos and (n := negative_share(v.steps))]
            ax.set(xlabel="step", ylabel="curvature", title=title + ("\n" + notes[0] if notes else ""))
            ax.title.set_fontsize("small")
        if axes[0, 0].get_legend_handles_labels()[0]:
            axes[0, 0].legend(fontsize="small")
        return data_uri(fig)
