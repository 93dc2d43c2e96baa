"""The report page of a schedule benchmark: peak LR × warm-up heatmaps with the adaptive schedules
beside the grid, and the table behind them, in one self-contained HTML file.

Input is one row per finished run: optimizer, kind ("grid" or an adaptive/alternative schedule),
lr (the peak LR it was given; NaN for a schedule that picks its own), warmup, seed, status and
val_loss. Cells average over seeds; a cell where any seed diverged shows "div", one where a seed's
schedule was refused (it never ran: a miss of another kind) shows "refused".
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from smoothprobe.report.figures import data_uri, figure

DIVERGED = "div"
REFUSED = "refused"


def cell_table(results: pd.DataFrame, optimizer: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Mean val loss and labels, rows = peak LR given, columns = warm-ups then the other kinds."""
    part = results[results.optimizer == optimizer].copy()
    part["column"] = [(f"{w:g}" if w < 1 else f"{w:g} steps") if k == "grid" else k  # warm-up: fraction or steps
                      for k, w in zip(part.kind, part.warmup)]
    part["row"] = pd.to_numeric(part.lr).map(lambda m: "own peak" if pd.isna(m) else f"{m:.3g}")
    part["bad"] = ~part.status.isin(("finished", "refused"))
    part["refused"] = part.status == "refused"
    grouped = part.groupby(["row", "column"], sort=False)
    means = grouped.val_loss.mean().unstack("column")
    bad = grouped.bad.any().unstack("column")
    refused = grouped.refused.any().unstack("column")
    grid_cols = list(dict.fromkeys(c for _, _, c in sorted((w >= 1, w, c) for c, k, w in
                                                        zip(part.column, part.kind, part.warmup) if k == "grid")))
    other = [c for c in dict.fromkeys(part.column) if c not in grid_cols]
    order = sorted(means.index, key=lambda r: math.inf if r == "own peak" else float(r))
    means = means.reindex(index=order, columns=grid_cols + other)
    labels = means.map(lambda v: "" if pd.isna(v) else f"{v:.3f}")
    labels = labels.where(~refused.reindex_like(means).fillna(False).astype(bool), REFUSED)
    labels = labels.where(~bad.reindex_like(means).fillna(False).astype(bool), DIVERGED)
    return means, labels


def heatmap(results: pd.DataFrame, optimizer: str) -> str:
    """Val loss over peak LR × warm-up, the adaptive schedules as extra columns right of a line."""
    import seaborn as sns

    means, labels = cell_table(results, optimizer)
    n_grid = sum(1 for c in means.columns if _is_number(c))
    with figure(width=1.1 * len(means.columns) + 2.5, height=0.55 * len(means) + 1.6) as (fig, axes):
        ax = axes[0, 0]
        sns.heatmap(means.astype(float), annot=labels.to_numpy(), fmt="", cmap="viridis_r", ax=ax,
                    cbar_kws={"label": "final val loss"}, linewidths=0.5, linecolor="white")
        ax.axvline(n_grid, color="black", lw=2.5)
        ax.set_xlabel("warm-up (fraction of steps)  |  adaptive and alternative schedules")
        ax.set_ylabel("peak LR given")
        ax.set_title(f"{optimizer}: lower is better; '{DIVERGED}' = a seed diverged, '{REFUSED}' = a seed's "
                     "schedule was refused")
        return data_uri(fig)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _bullets(notes: Sequence[str]) -> str:
    """Markdown bullet lines ("- " at the top, "  - " nested under it; **bold**) as nested HTML lists."""
    parts, depth = [], 0
    for line in notes:
        level = min((len(line) - len(line.lstrip(" "))) // 2 + 1, depth + 1)
        parts += ["</li></ul>"] * (depth - level) + (["</li>"] if 0 < level <= depth else [])
        parts += ["<ul>"] * (level - depth)
        depth = level
        text = html.escape(line.strip().removeprefix("- "))
        parts.append("<li>" + re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text))
    return "".join(parts + ["</li></ul>"] * depth)


def write_grid_report(results: pd.DataFrame, summary: pd.DataFrame, out: str | Path, title: str,
                      notes: Sequence[str] = ()) -> Path:
    """One HTML page: the notes (markdown bullets: the goals), a heatmap per optimizer and the summary
    table (no network needed)."""
    style = ("body{font-family:sans-serif;max-width:1100px;margin:auto}"
             "table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px}"
             "td.n{text-align:right}")
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{style}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>",
             f"<p>{len(results)} runs. Cells: final validation loss, mean over seeds.</p>", _bullets(notes)]
    for optimizer in dict.fromkeys(results.optimizer):
        parts.append(f"<h2>{html.escape(optimizer)}</h2><img alt='heatmap' src='{heatmap(results, optimizer)}'>")
    parts.append("<h2>Summary</h2><table><tr>" + "".join(f"<th>{html.escape(str(c))}</th>" for c in summary.columns)
                 + "</tr>")
    for row in summary.itertuples(index=False):
        cells = "".join(f"<td class='n'>{v:.4g}</td>" if isinstance(v, (float, np.floating))
                        else f"<td>{html.escape(str(v))}</td>" for v in row)
        parts.append(f"<tr>{cells}</tr>")
    parts.append("</table></body></html>")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(parts), encoding="utf-8")
    return out
