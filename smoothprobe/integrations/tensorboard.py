"""TensorBoard view of a run: every numeric column of `steps` as the scalar `smoothprobe/<column>`.

Use `TensorBoardSink` live (the callbacks' `tensorboard=` argument) or `export_tensorboard` on a
finished run directory. Needs the `tensorboard` package (`pip install smoothprobe[tensorboard]`).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from smoothprobe.errors import SmoothprobeError
from smoothprobe.store import load_run

PREFIX = "smoothprobe/"
SKIPPED = ("step",)


def scalars(row: Mapping[str, Any]) -> dict[str, float]:
    """The row's finite real numbers (booleans and text left out), keyed by their TensorBoard tag."""
    out = {}
    for key, value in row.items():
        if key in SKIPPED or isinstance(value, bool) or not isinstance(value, numbers.Real):
            continue
        if math.isfinite(value):
            out[PREFIX + key] = float(value)
    return out


EXPORT_SUFFIX = ".smoothprobe-export"
"""Suffix of the event file `export_tensorboard` writes (an export replaces the previous one)."""


class TensorBoardSink:
    """Writes step rows to TensorBoard event files in `log_dir`.

    A run resumed at `start_step` opens a new event file that purges the earlier files' events
    from that step on, so TensorBoard shows each re-run step once; `purge=True` purges from
    `start_step` even when it is 0 (an export that replaces everything before it).
    """

    def __init__(self, log_dir: str | Path, start_step: int = 0, *, purge: bool = False,
                 filename_suffix: str = "") -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:
            raise SmoothprobeError(
                "tensorboard logging needs the tensorboard package: pip install tensorboard"
            ) from err
        self.log_dir = Path(log_dir)
        purge_step = start_step if purge or start_step else None
        self._writer = SummaryWriter(log_dir=str(self.log_dir), purge_step=purge_step,
                                     filename_suffix=filename_suffix)

    def write(self, step: int, row: Mapping[str, Any]) -> None:
        """Log every finite numeric column of `row` at global step `step`."""
        for tag, value in scalars(row).items():
            self._writer.add_scalar(tag, value, global_step=step)

    def close(self) -> None:
        """Flush and close the event file."""
        self._writer.close()


def export_tensorboard(run_dir: str | Path, log_dir: str | Path | None = None) -> Path:
    """Write a run directory's steps table as TensorBoard scalars; default log dir RUN_DIR/tb.

    Idempotent: the event file of an earlier export to the same log dir is deleted first, and
    the new file purges every earlier point (a live mirror's too), so each step shows once.
    """
    run = load_run(run_dir)
    target = Path(log_dir) if log_dir is not None else Path(run_dir) / "tb"
    if run.steps.empty:
        raise SmoothprobeError(f"run directory {run_dir} has no steps to export")
    for earlier in target.glob(f"events.out.tfevents.*{EXPORT_SUFFIX}"):
        earlier.unlink()
    sink = TensorBoardSink(target, purge=True, filename_suffix=EXPORT_SUFFIX)
    for row in run.steps.to_dict("records"):
        sink.write(int(row["step"]), row)
    sink.close()
    return target
