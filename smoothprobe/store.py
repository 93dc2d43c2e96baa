"""The run directory: run.json, append-only JSON-lines tables, and the last checkpoint.

Layout::

    RUN_DIR/run.json            config, environment, task facts, status, schema version
    RUN_DIR/steps.jsonl         one record per optimizer step (probe columns on probed steps)
    RUN_DIR/evals.jsonl         one record per evaluation
    RUN_DIR/tensors.jsonl       long per-tensor table (probes)
    RUN_DIR/checkpoints/last.pt model, optimizer, scheduler and RNG state (atomic replace)

Rows are buffered and appended on `flush()`; a SIGKILL loses at most the rows since the last flush,
and a torn last line is dropped on read with a warning. An append that fails (a full disk) is cut
back, so no half line stays in the middle of a table.

Every line is strict JSON (RFC 8259), readable by any JSON parser: a NaN or infinite value is
written as null and named in the row's `"nonfinite"` object with its value as a string, e.g.
``{"step": 3, "loss": null, "nonfinite": {"loss": "nan"}}`` (values "nan", "inf", "-inf").
`read_table` restores them (and still reads files written with bare NaN/Infinity tokens). Rows
are validated when read: a line that is not an object with an integer `step`, or whose field
holds the wrong type, is an error naming the file, the line and the field.

One writer at a time: the writing RunStore holds an exclusive `flock` on the run directory itself
(an open descriptor, so deleting a file cannot release it) until `close()`; a second writer is
refused, naming the pid the holder wrote to RUN/.lock. The OS releases the lock when the process
dies, so a killed run does not block its resume. Before every write the writer checks that the
path still names the directory it locked (a directory removed or replaced under it stops it).
Files are replaced through temporaries (`.run.json.tmp`, `.steps.jsonl.tmp`,
`checkpoints/.last.pt.tmp`) that are removed if the write fails, and left-overs of a killed writer
are removed when the next writer takes the lock.

A full disk: the writer keeps a pre-allocated RUN/.reserve (64 KiB, removed on close); when a
write fails with ENOSPC it frees the reserve, so the status `crashed` with reason "disk full" still
reaches run.json.
"""

from __future__ import annotations

import errno
import fcntl
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from smoothprobe.errors import RunInUse, SmoothprobeError, one_line
from smoothprobe.fit.schema import MAX_DEPTH, json_depth_ok

SCHEMA_VERSION = 1
TABLES = ("steps", "evals", "tensors")
CHECKPOINT = Path("checkpoints") / "last.pt"
LOCK = ".lock"
RESERVE = ".reserve"
RESERVE_BYTES = 64 * 1024
"""Space kept free for the final status (run.json is a few kB) when the disk fills up."""
DISK_FULL = "disk full"
TEMPORARIES = ("*.tmp", ".run.json.*", "checkpoints/*.tmp")
OWN_FILES = ("run.json", "steps.jsonl", "evals.jsonl", "tensors.jsonl", "checkpoints", "fit.json",
             "fit.stale.json", "pilot_fit.json", "mlflow.json", "wandb.json", "report.html", RESERVE, "summary.csv")
"""What smoothprobe writes in a run directory: all that `overwrite` deletes (a user's own files stay)."""
NONFINITE = "nonfinite"
NUMERIC = ("loss", "lr", "grad_norm", "update_norm", "step_time_s", "time_s", "val_loss")
"""Columns that hold a number (or null) in every row that has them."""


KIND_NAMES = {float: "numbers", str: "strings", bool: "true/false flags"}


def _jsonable(value: Any) -> Any:
    """Plain Python numbers for JSON (tensors and numpy scalars become floats/ints)."""
    if isinstance(value, torch.Tensor):
        return value.item()
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return value.item()
    return value


def encode_row(row: dict) -> str:
    """One strict-JSON line: NaN/inf values become null and are named in `"nonfinite"`."""
    plain = {key: _jsonable(value) for key, value in row.items()}
    nonfinite = {key: str(value).lower() for key, value in plain.items()
                 if isinstance(value, float) and not math.isfinite(value)}
    if nonfinite:
        plain = {**plain, **dict.fromkeys(nonfinite), NONFINITE: nonfinite}
    return json.dumps(plain, allow_nan=False, default=_jsonable) + "\n"


def remove_own_checkpoints(folder: Path) -> None:
    """Delete what smoothprobe wrote in a run's checkpoints folder (the checkpoint and its temporaries);
    a user's own files there stay, and the folder goes only when nothing else is left."""
    for item in folder.iterdir():
        if item.name == CHECKPOINT.name or (item.name.startswith(f".{CHECKPOINT.name}") and item.is_file()):
            item.unlink()
    if not any(folder.iterdir()):
        folder.rmdir()


def replace_atomically(target: Path, write: Callable[[Path], Any]) -> None:
    """`write` a temporary sibling of `target`, then rename it over `target`: readers never see
    half a file. The temporary file is removed if writing fails (any exception, Ctrl-C, SIGTERM)."""
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        write(tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def refuse_replacing(target: Path, mark: bytes, what: str) -> None:
    """Refuse to overwrite an existing file that is not a `what` smoothprobe wrote (`mark` is not in its
    first 512 bytes), or anything that is not a regular file: a mistyped --out must not turn a run's rows,
    a checkpoint, a script or /dev/null into a fit or a report."""
    if not target.exists():
        return
    head = b""
    if target.is_file():
        with target.open("rb") as file:
            head = file.read(512)
    if mark not in head:
        raise SmoothprobeError(f"{target} exists and is not a {what} smoothprobe wrote: give another path, or "
                               "remove that file first")


def write_json_atomic(path: Path, data: dict) -> None:
    """Write JSON through a temporary file and rename, so readers never see half a file."""
    replace_atomically(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, default=_jsonable) + "\n"))


def save_torch(state: Any, path: Path) -> None:
    """`torch.save`, with the writer's failure on a full disk (a RuntimeError "unexpected pos" from
    its zip writer, not an OSError) raised as OSError ENOSPC naming `path`."""
    try:
        torch.save(state, path)
    except RuntimeError as exc:
        try:
            stat = os.statvfs(path.parent)
            free = stat.f_bavail * stat.f_frsize
        except OSError:
            free = None
        if "unexpected pos" in str(exc) or "write failed" in str(exc) or (free is not None and free < 2**20):
            raise OSError(errno.ENOSPC, "No space left on device", str(path)) from None
        raise


def disk_full(exc: BaseException) -> bool:
    """Whether `exc` is the OS saying the disk (or the user's quota) is full."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def load_json_text(text: str, source: str) -> Any:
    """`json.loads`, but a deeply nested file is a one-line SmoothprobeError, not a RecursionError."""
    if not json_depth_ok(text):
        raise SmoothprobeError(f"{source} nests deeper than {MAX_DEPTH} levels; not a file smoothprobe wrote")
    try:
        return json.loads(text)
    except RecursionError:
        raise SmoothprobeError(f"{source} nests too deeply; not a file smoothprobe wrote") from None


def check_split(split: Any, source: str) -> None:
    """run.json's `optimizer.split`: null or an object mapping each rule to a list of parameter names."""
    if split is None:
        return
    if not isinstance(split, dict) or not all(
            isinstance(k, str) and isinstance(v, list) and all(isinstance(n, str) for n in v) for k, v in split.items()):
        raise SmoothprobeError(f"{source}: field 'optimizer.split' must be null or an object mapping each rule to a "
                               f"list of parameter names; got {json.dumps(split)[:40]}")


def read_run_info(path: Path) -> dict:
    """run.json of a run directory, or a one-line SmoothprobeError saying what is wrong."""
    info_path = Path(path) / "run.json"
    if not Path(path).is_dir():
        raise SmoothprobeError(f"run directory not found: {path}")
    try:
        info = load_json_text(info_path.read_text(), str(info_path))
    except FileNotFoundError:
        raise SmoothprobeError(f"not a run directory (no run.json): {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SmoothprobeError(f"unreadable run.json in {path}: {exc}") from None
    if not isinstance(info, dict):
        raise SmoothprobeError(f"{info_path} must hold a JSON object; got {type(info).__name__}")
    version = info.get("schema_version")
    if version != SCHEMA_VERSION:
        raise SmoothprobeError(f"{info_path} has schema version {version}; this smoothprobe reads {SCHEMA_VERSION}")
    if not isinstance(info.get("config"), dict):
        raise SmoothprobeError(f"{info_path}: field 'config' must be an object; got "
                               f"{'nothing' if 'config' not in info else type(info['config']).__name__}")
    for key in ("task", "optimizer", "probes", "environment"):
        if not isinstance(info.get(key) or {}, dict):
            raise SmoothprobeError(f"{info_path}: field {key!r} must be an object or null; got {type(info[key]).__name__}")
    f_star, steps, status = (info.get("task") or {}).get("f_star"), info["config"].get("steps"), info.get("status")
    if f_star is not None and (isinstance(f_star, bool) or not isinstance(f_star, (int, float)) or not abs(f_star) <= 1e12):
        raise SmoothprobeError(f"{info_path}: field 'task.f_star' must be a finite number (|f*| <= 1e12) or null; got {f_star!r:.40}")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int)):
        raise SmoothprobeError(f"{info_path}: field 'config.steps' must be an integer; got {steps!r:.40}")
    if status is not None and not isinstance(status, str):
        raise SmoothprobeError(f"{info_path}: field 'status' must be a string; got {status!r:.40}")
    check_split((info.get("optimizer") or {}).get("split"), str(info_path))
    return info


def make_directory(path: Path) -> None:
    """mkdir -p, with an unusable path (a symlink loop, a name too long, a file in the way, no
    permission) refused in one line."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise SmoothprobeError(f"cannot create run directory {path}: it exists and is not a directory (a file, a "
                               "broken symlink or a symlink loop)") from None
    except OSError as exc:
        raise SmoothprobeError(f"cannot create run directory {path}: {exc.strerror or exc}") from None
    if not path.is_dir():
        raise SmoothprobeError(f"cannot create run directory {path}: not a directory")


def lock_holder(path: Path) -> str:
    """The pid a run directory's writer wrote to RUN/.lock ("unknown" when unreadable)."""
    try:
        return (Path(path) / LOCK).read_text().strip()[:20] or "unknown"
    except (OSError, UnicodeDecodeError):
        return "unknown"


def wait_for_writer(path: Path) -> None:
    """Block until no writer holds the run directory `path` (returns at once if none does)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
    finally:
        os.close(fd)


def _content(path: Path) -> list[Path]:
    """What a run directory holds besides its lock file and disk reserve (nothing for a missing directory)."""
    try:
        return [p for p in path.iterdir() if p.name not in (LOCK, RESERVE)] if path.is_dir() else []
    except OSError as exc:  # a name too long, no permission
        raise SmoothprobeError(f"cannot use run directory {path}: {exc.strerror or exc}") from None


class RunStore:
    """Writer of one run directory; the training loop is its only client."""

    def __init__(self, path: Path, info: dict, writer: bool = True) -> None:
        self.path, self.info, self.writer = Path(path), info, writer
        self._buffers: dict[str, list[dict]] = {name: [] for name in TABLES}
        self._lock: int | None = None  # descriptor of the locked run directory

    @classmethod
    def create(cls, path: str | Path, info: dict, overwrite: bool = False, writer: bool = True) -> RunStore:
        """Start a new run directory; refuses a non-empty one unless `overwrite`, which deletes the
        files smoothprobe wrote there (OWN_FILES: tables, checkpoints, fit.json, reports) and
        keeps any other file. A store with `writer=False` (ranks other than 0) keeps rows in
        memory only and touches no file."""
        path = Path(path)
        store = cls(path, {"schema_version": SCHEMA_VERSION, **info}, writer=writer)
        if not writer:
            return store
        holder = next((folder for folder in Path(os.path.abspath(path)).parents  # ".." collapsed, symlinks kept
                       if (folder / "run.json").is_file()), None)
        if holder is not None:
            raise SmoothprobeError(f"{path} lies inside run directory {holder}: a run directory holds one run; choose "
                                   "an out outside it", params=["out"])
        if _content(path) and not overwrite:
            if (path / "run.json").exists():
                raise SmoothprobeError(f"run directory {path} exists; pass resume (to continue it) or overwrite (to "
                                       "replace it)", params=["resume", "overwrite"])
            raise SmoothprobeError(f"{path} holds files but no run; choose another out, or pass overwrite to start a run "
                                   "there (it keeps files smoothprobe did not write)", params=["out", "overwrite"])
        make_directory(path)
        store.lock()
        try:
            if _content(path) and not (path / "run.json").is_file():
                raise SmoothprobeError(f"{path} holds files but no run.json; refusing to overwrite a directory "
                                       "smoothprobe did not write (choose another directory)")
            for item in _content(path):
                if item.name not in OWN_FILES:
                    continue
                if item.is_dir() and not item.is_symlink():
                    remove_own_checkpoints(item)
                else:
                    item.unlink()
            store.reserve()
            (path / CHECKPOINT.parent).mkdir(exist_ok=True)
            store.write_info()
            for table in TABLES:
                (path / f"{table}.jsonl").touch()
        except BaseException:
            store.close()
            raise
        return store

    @classmethod
    def open(cls, path: str | Path, writer: bool = True) -> RunStore:
        """Reopen an existing run directory for appending (resume); a writer takes the lock."""
        store = cls(Path(path), read_run_info(Path(path)), writer)
        if writer:
            store.lock()
            try:
                store.reserve()
            except BaseException:
                store.close()
                raise
        return store

    def lock(self) -> None:
        """Take an exclusive flock on the run directory for this process (refused, naming the
        holder's pid from RUN/.lock, while another writer lives; deleting RUN/.lock does not
        release it), write this pid to RUN/.lock and remove the temporaries a killed writer left."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            raise SmoothprobeError(f"cannot open run directory {self.path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise RunInUse(f"run directory {self.path} is in use by another writer (pid {lock_holder(self.path)}); "
                           "wait for it to end or stop it") from None
        self._lock = fd
        try:
            (self.path / LOCK).write_text(f"{os.getpid()}\n")
            for pattern in TEMPORARIES:
                for leftover in self.path.glob(pattern):
                    leftover.unlink(missing_ok=True)
        except OSError as exc:
            self.close()
            if disk_full(exc):
                raise SmoothprobeError(f"disk full: cannot start writing {self.path}") from None
            raise

    def reserve(self) -> None:
        """Pre-allocate RUN/.reserve, the space the final status needs when the disk fills up
        (refused in one line when even that does not fit)."""
        try:
            with open(self.path / RESERVE, "wb") as f:
                try:
                    os.posix_fallocate(f.fileno(), 0, RESERVE_BYTES)
                except OSError as exc:
                    if disk_full(exc):
                        raise
                    f.write(bytes(RESERVE_BYTES))  # a file system without fallocate
        except OSError as exc:
            (self.path / RESERVE).unlink(missing_ok=True)
            if disk_full(exc):
                raise SmoothprobeError(f"disk full: no room for a run in {self.path} (it needs at least "
                                       f"{RESERVE_BYTES // 1024} KiB free)") from None
            raise

    def check_identity(self) -> None:
        """Refuse to write unless the path still names the directory this writer locked (it was not
        removed, moved or replaced while the run wrote to it)."""
        if self._lock is None:
            return
        try:
            same = os.path.samestat(os.stat(self.path), os.fstat(self._lock))
        except OSError:
            same = False
        if not same:
            raise SmoothprobeError(f"run directory {self.path} was removed or replaced while this run wrote to it; "
                                   "stopped without writing into the new one")

    def close(self) -> None:
        """Release the lock and the disk reserve (the buffers should have been flushed); a no-op for
        a closed store."""
        if self._lock is not None:
            try:
                self.check_identity()
                (self.path / RESERVE).unlink(missing_ok=True)
            except (OSError, SmoothprobeError):
                pass
            os.close(self._lock)
            self._lock = None

    def __del__(self) -> None:
        """A store dropped without `close()` releases its lock (like the file object it once was)."""
        if getattr(self, "_lock", None) is not None:
            os.close(self._lock)
            self._lock = None

    def write_info(self, **updates: Any) -> None:
        """Merge `updates` into run.json and rewrite it atomically; on a full disk the reserve is
        freed and the write tried once more, so a final status still lands."""
        self.info.update(updates)
        if not self.writer:
            return
        self.check_identity()
        try:
            write_json_atomic(self.path / "run.json", self.info)
        except OSError as exc:
            if not disk_full(exc) or not (self.path / RESERVE).exists():
                raise
            (self.path / RESERVE).unlink()
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
            lines = "".join(encode_row(r) for r in rows)
            self.check_identity()
            with open(self.path / f"{table}.jsonl", "a") as f:
                end = f.tell()
                try:
                    f.write(lines)
                    f.flush()
                except BaseException:
                    f.truncate(end)
                    raise
            rows.clear()

    def discard(self) -> None:
        """Drop the buffered rows (they did not fit on a full disk)."""
        for rows in self._buffers.values():
            rows.clear()

    def truncate(self, step: int) -> None:
        """Keep only what happened before `step` (steps < step, evals <= step): resume from a checkpoint."""
        self.flush()
        if self.writer:
            self.check_identity()
        for table in TABLES if self.writer else ():
            rows, _ = read_table(self.path / f"{table}.jsonl")
            limit = step + 1 if table == "evals" else step
            kept = "".join(encode_row(r) for r in rows if r["step"] < limit)
            replace_atomically(self.path / f"{table}.jsonl", lambda tmp, text=kept: tmp.write_text(text))

    def last_time(self) -> float:
        """`time_s` of the last step row on disk (0 without rows): a resumed run's clock."""
        self.flush()
        rows, _ = read_table(self.path / "steps.jsonl") if self.writer else ([], [])
        times = [r.get("time_s") for r in rows]
        return float(next((t for t in reversed(times) if isinstance(t, (int, float))), 0.0))

    def save_checkpoint(self, state: dict) -> None:
        """Flush the tables, then atomically replace checkpoints/last.pt with `state`."""
        self.flush()
        if not self.writer:
            return
        self.check_identity()
        replace_atomically(self.path / CHECKPOINT, lambda tmp: save_torch(state, tmp))

    def load_checkpoint(self) -> dict | None:
        """The last checkpoint (loaded with weights_only=True), or None if there is none."""
        target = self.path / CHECKPOINT
        if not target.is_file():
            return None
        try:
            return torch.load(target, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unpickling failure means a corrupt file
            raise SmoothprobeError(f"checkpoint {target} cannot be read ({type(exc).__name__}: {one_line(exc)}), so the "
                                   "run cannot resume from it: pass overwrite to start it again") from None


def _decode_row(row: Any, where: str, kinds: dict[str, type]) -> dict:
    """A validated row with its non-finite values restored; `kinds` remembers whether each column
    held numbers or strings so far, so a value of the other kind is caught."""
    if not isinstance(row, dict):
        raise SmoothprobeError(f"{where} is not a record (a JSON object with a step); got {json.dumps(row)[:40]}")
    step = row.get("step")
    if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step < 2**53:
        raise SmoothprobeError(f"{where}: field 'step' must be an integer >= 0; got {json.dumps(step)[:40]}")
    nonfinite = row.pop(NONFINITE, {})
    if not isinstance(nonfinite, dict) or any(v not in ("nan", "inf", "-inf") or row.get(k, 0) is not None
                                              for k, v in nonfinite.items()):
        raise SmoothprobeError(f"{where}: field '{NONFINITE}' must map null fields to 'nan', 'inf' or '-inf'")
    row.update({key: float(value) for key, value in nonfinite.items()})
    for key, value in row.items():
        if value is None:
            continue
        kind = (bool if isinstance(value, bool) else str if isinstance(value, str)
                else float if isinstance(value, (int, float)) else None)
        if kind is None or (kind is not float and key in NUMERIC):
            raise SmoothprobeError(f"{where}: field {key!r} must be a number"
                                   f"{'' if key in NUMERIC else ', a string, true/false'} or null; got "
                                   f"{json.dumps(value)[:40]}")
        if kinds.setdefault(key, kind) is not kind:
            raise SmoothprobeError(f"{where}: field {key!r} holds {json.dumps(value)[:40]} where earlier rows "
                                   f"hold {KIND_NAMES[kinds[key]]}")
    return row


def read_table(path: Path) -> tuple[list[dict], list[str]]:
    """Validated rows of a JSON-lines table and warnings; a torn last line is dropped, a bad middle
    line (or a valid line that is not a proper record) is an error naming the line and field."""
    if not path.exists():
        return [], []
    try:
        lines = path.read_text().split("\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise SmoothprobeError(f"unreadable {path}: {exc}") from None
    complete, tail = lines[:-1], lines[-1]
    rows, warnings, kinds = [], [], {}
    for number, line in enumerate(complete, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            if number == len(complete) and not tail:
                warnings.append(f"{path.name}: dropped a truncated last record (line {number})")
                continue
            raise SmoothprobeError(f"{path} line {number} is not valid JSON; the run store is corrupt") from None
        rows.append(_decode_row(row, f"{path} line {number}", kinds))
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
    """Read a run directory (written by `train`/`record`, the Recorder or an adapter), also while it
    is running or after a crash."""
    path = Path(path)
    info = read_run_info(path)
    frames, warnings = {}, []
    for table in TABLES:
        rows, table_warnings = read_table(path / f"{table}.jsonl")
        frames[table] = pd.DataFrame.from_records(rows)
        warnings += table_warnings
    for table in ("steps", "evals"):
        frame = frames[table]
        repeated = frame.step.duplicated(keep="last") if not frame.empty else None
        if repeated is not None and repeated.any():
            steps = sorted(set(frame.step[repeated]))
            frames[table] = frame[~repeated].sort_values("step", kind="stable").reset_index(drop=True)
            warnings.append(f"{table}.jsonl repeats step(s) {', '.join(map(str, steps[:5]))}"
                            f"{' ...' if len(steps) > 5 else ''} ({int(repeated.sum())} rows): kept the last row of each")
    planned = (info.get("config") or {}).get("steps")
    beyond = frames["steps"].step >= planned if isinstance(planned, int) and not frames["steps"].empty else None
    if beyond is not None and beyond.any():
        warnings.append(f"steps.jsonl holds {int(beyond.sum())} row(s) past the run's {planned} steps (from step "
                        f"{int(frames['steps'].step[beyond].min())}): rows of another run may be mixed in")
    if info.get("status") == "running":
        warnings.append("run.json says the run is still running (or was killed): data may stop early")
    return Run(path, info, frames["steps"], frames["evals"], frames["tensors"], warnings)
