"""Self-contained HTML curvature reports: `write_report(runs, out)` reads run directories (and fits)
and writes one HTML file with embedded figures that opens from disk without network access."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from smoothprobe.errors import SmoothprobeError
from smoothprobe.fit import SmoothnessFit
from smoothprobe.report.data import build_view
from smoothprobe.report.figures import run_colors
from smoothprobe.report.html import render
from smoothprobe.store import load_run, refuse_replacing, replace_atomically

__all__ = ["default_report_path", "write_report"]


def default_report_path(runs: Sequence[str | Path]) -> Path:
    """RUN_DIR/report.html for one run; for n runs `report-<n>-runs.html` in the deepest folder that
    holds them all (their common path's folder, e.g. a sweep's folder for runs from two of its arms),
    or in the current folder where only the filesystem's root holds them all.

    >>> default_report_path(["/r/sweep/a/seed-0", "/r/sweep/b/seed-0"]).as_posix()
    '/r/sweep/report-2-runs.html'
    >>> default_report_path(["/r/a", "/s/b"]) == Path.cwd() / "report-2-runs.html"
    True
    """
    if len(runs) == 1:
        return Path(runs[0]) / "report.html"
    folder = Path(os.path.commonpath([Path(r).resolve().parent for r in runs]))
    return (Path.cwd() if folder == Path(folder.anchor) else folder) / f"report-{len(runs)}-runs.html"


def write_report(
    runs: Sequence[str | Path],
    out: str | Path | None = None,
    fits: Sequence[str | Path | SmoothnessFit | None] | None = None,
    title: str | None = None,
    labels: Sequence[str] | None = None,
) -> Path:
    """Write the HTML report of `runs` to `out` (default: `default_report_path(runs)`) and return
    its path.

    fits: the i-th entry (a fit.json path or a SmoothnessFit) belongs to the i-th run; runs
    without one (None entries, or beyond the list) are fitted here with the task's f* (else
    f* = 'auto'), and a run that cannot be fitted says why. labels: run names shown in the
    report (default: the run directories' names).
    """
    if isinstance(runs, (str, Path)) or not runs:
        raise SmoothprobeError(f"runs must be a non-empty list of run directories; got {runs!r}")
    fits = list(fits or [])
    if len(fits) > len(runs):
        raise SmoothprobeError(f"fits has {len(fits)} entries for {len(runs)} runs")
    labels = list(labels) if labels is not None else [Path(r).name or str(r) for r in runs]
    if len(labels) != len(runs):
        raise SmoothprobeError(f"labels has {len(labels)} entries for {len(runs)} runs")
    out = Path(out) if out is not None else default_report_path(runs)
    if out.is_dir():
        raise SmoothprobeError(f"out must be a file path, not a directory: {out}")
    refuse_replacing(out, b'content="smoothprobe"', "report")
    fits += [None] * (len(runs) - len(fits))
    colors = run_colors(len(runs))
    views = [build_view(load_run(path), label, color, fit)
             for path, label, color, fit in zip(runs, labels, colors, fits)]
    page = render(views, title or f"smoothprobe report: {', '.join(labels)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    replace_atomically(out, lambda tmp: tmp.write_text(page, encoding="utf-8"))  # a full disk leaves the old one
    return out
