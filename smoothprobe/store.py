"""The run directory: run.json, append-only JSON-lines tables, and the last checkpoint.

Layout::

    RUN_DIR/run.json            config, environment, task facts, status, schema version
    RUN_DIR/steps.jsonl         one record per optimizer step (probe columns on probed steps)
    RUN_DIR/evals.jsonl         one record per evaluation
    RUN_DIR/tensors.jsonl       long per-tensor table (probes)
    RUN_DIR/checkpoints/last.pt model, optimizer, scheduler and RNG state (atomic replace)

Rows are buffered and appended on `flush()`; a SIGKILL loses at most the rows since the last flush,
and a torn last line is dropped on read with a warning.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from smoothprobe.errors import SmoothprobeError

SCHEMA_VERSION = 1
TABLES = ("steps", "evals", "tensors")
CHECKPOINT = Path("checkpoints") / "last.pt"


def _jsonable(value: Any) -> Any:
    """Plain Python numbers for JSON (tensors and numpy scalars become floats/ints)."""
    if isinstance(value, torch.Tensor):
        return value.item()
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return value.item()
    return value


def write_json_atomic(path: Path, data: dict) -> None:
    """Write JSON through a temporary file and rename, so readers never see half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2, default=_jsonable)
        f.write("\n")
    os.replace(tmp, path)


def read_run_info(path: Path) -> dict:
    """run.json of a run directory, or a one-line SmoothprobeError saying what is wrong."""
    info_path = Path(path) / "run.json"
    if not Path(path).is_dir():
        raise SmoothprobeError(f"run directory not found: {path}")
    try:
        info = json.loads(info_path.read_text())
    except FileNotFoundError:
        raise SmoothprobeError(f"not a run directory (no run.json): {path}") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise SmoothprobeError(f"unreadable run.json in {path}: {exc}") from None
    version = info.get("schema_version")
    if version != SCHEMA_VERSION:
        raise SmoothprobeError(f"{info_path} has schema version {version}; this smoothprobe reads {SCHEMA_VERSION}")
    return info


class RunStore:
    """Writer of one run directory; the training loop is its only client."""

    def __init__(self, path: Path, info: dict, writer: bool = True) -> None:
        self.path, self.info, self.writer = Path(path), info, writer
        self._buffers: dict[str, list[dict]] = {name: [] for name in TABLES}

    @classmethod
    def create(cls, path: str | Path, info: dict, overwrite: bool = False, writer: bool = True) -> RunStore:
        """Start a new run directory; refuses a non-empty one unless `overwrite`. A store with
        `writer=False` (ranks other than 0) keeps rows in memory only and touches no file."""
        path = Path(path)
        if not writer:
            return cls(path, {"schema_version": SCHEMA_VERSION, **info}, writer=False)
        if path.exists() and any(path.iterdir()):
            if not overwrite:
                raise SmoothprobeError(f"run directory {path} exists; pass resume (to continue it) or overwrite (to replace it)")
            for name in [*(f"{t}.jsonl" for t in TABLES), "run.json", str(CHECKPOINT)]:
                (path / name).unlink(missing_ok=True)
        (path / CHECKPOINT.parent).mkdir(parents=True, exist_ok=True)
        store = cls(path, {"schema_version": SCHEMA_VERSION, **info})
        store.write_info()
        for table in TABLES:
            (path / f"{table}.jsonl").touch()
        return store

    @classmethod
    def open(cls, path: str | Path, writer: bool = True) -> RunStore:
        """Reopen an existing run directory for appending (resume)."""
        return cls(Path(path), read_run_info(Path(path)), writer)

    def write_info(self, **updates: Any) -> None:
        """Merge `updates` into run.json and rewrite it atomically."""
        self.info.update(updates)
        if self.writer:
            write_json_atomic(self.path / "run.json", self.info)

    def append(self, table: str, row: dict) -> None:
        """Buffer one row for `table`; it reaches disk at the next `flush()`."""
        self._buffers[table].append(row)

    def flush(self) -> None:
        """Append buffered rows to their files and hand them to the OS (survives SIGKILL)."""
        for table, rows in self._buffers.items():
            if not self.writer:
                rows.clear()
            if not rows:
                continue
            lines = "".join(json.dumps(r, default=_jsonable) + "\n" for r in rows)
            with open(self.path / f"{table}.jsonl", "a") as f:
                f.write(lines)
            rows.clear()

    def truncate(self, step: int) -> None:
        """Keep only what happened before `step` (steps < step, evals <= step): resume from a checkpoint."""
        self.flush()
        for table in TABLES if self.writer else ():
            rows, _ = read_table(self.path / f"{table}.jsonl")
            limit = step + 1 if table == "evals" else step
            kept = "".join(json.dumps(r) + "\n" for r in rows if r.get("step", -1) < limit)
            tmp = self.path / f".{table}.jsonl.tmp"
            tmp.write_text(kept)
            os.replace(tmp, self.path / f"{table}.jsonl")

    def last_time(self) -> float:
        """`time_s` of the last step row on disk (0 without rows): a resumed run's clock."""
        self.flush()
        rows, _ = read_table(self.path / "steps.jsonl") if self.writer else ([], [])
        times = [r.get("time_s") for r in rows if isinstance(r, dict)]
        return float(next((t for t in reversed(times) if isinstance(t, (int, float))), 0.0))

    def save_checkpoint(self, state: dict) -> None:
        """Flush the tables, then atomically replace checkpoints/last.pt with `state`."""
        self.flush()
        if not self.writer:
            return
        target = self.path / CHECKPOINT
        tmp = target.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, target)

    def load_checkpoint(self) -> dict | None:
        """The last checkpoint (loaded with weights_only=True), or None if there is none."""
        target = self.path / CHECKPOINT
        if not target.exists():
            return None
        try:
            return torch.load(target, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unpickling failure means a corrupt file
            raise SmoothprobeError(f"corrupt checkpoint {target}: {exc}") from None


def read_table(path: Path) -> tuple[list[dict], list[str]]:
    """Rows of a JSON-lines table and warnings; a torn last line is dropped, a bad middle line is an error."""
    if not path.exists():
        return [], []
    lines = path.read_text().split("\n")
    complete, tail = lines[:-1], lines[-1]
    rows, warnings = [], []
    for number, line in enumerate(complete, start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(complete) and not tail:
                warnings.append(f"{path.name}: dropped a truncated last record (line {number})")
                continue
            raise SmoothprobeError(f"{path} line {number} is not valid JSON; the run store is corrupt") from None
    if tail.strip():
        warnings.append(f"{path.name}: dropped a truncated last record (line {len(lines)})")
    return rows, warnings


@dataclass
class Run:
    """A run directory read back: `config` (dict), `steps`/`evals`/`tensors` (DataFrames)."""

    path: Path
    info: dict
    steps: pd.DataFrame
    evals: pd.DataFrame
    tensors: pd.DataFrame
    warnings: list[str] = field(default_factory=list)

    @property
    def config(self) -> dict:
        return self.info.get("config", {})

    @property
    def f_star(self) -> float | None:
        """The task's exact f*, where the task knows it."""
        value = self.info.get("task", {}).get("f_star")
        return None if value is None or not math.isfinite(value) else float(value)


def load_run(path: str | Path) -> Run:
    """Read a run directory written by `train`/`record` (also while it is running or after a crash)."""
    path = Path(path)
    info = read_run_info(path)
    frames, warnings = {}, []
    for table in TABLES:
        rows, table_warnings = read_table(path / f"{table}.jsonl")
        frames[table] = pd.DataFrame.from_records(rows)
        warnings += table_warnings
    if info.get("status") == "running":
        warnings.append("run.json says the run is still running (or was killed): data may stop early")
    return Run(path, info, frames["steps"], frames["evals"], frames["tensors"], warnings)
