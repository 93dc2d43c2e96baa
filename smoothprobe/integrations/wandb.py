"""Weights & Biases view of a run: every numeric column of `steps` as `smoothprobe/<column>`.

The same names and values as the TensorBoard and MLflow views, plotted against the training
step (`smoothprobe/step`, declared as their step metric) rather than W&B's own `_step`. Use
`WandbSink` live (the callbacks' `wandb=` argument, or `write` from your own loop) or
`export_wandb` on a finished run directory. Needs the `wandb` package (`pip install
smoothprobe[wandb]`); `mode="offline"` (or WANDB_MODE=offline) needs no network. The sink opens
a run of its own (`reinit="create_new"`) and never touches `wandb.run`, so it sits beside a
framework's own W&B logging.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from smoothprobe.errors import SmoothprobeError, one_line
from smoothprobe.integrations.tensorboard import PREFIX, scalars
from smoothprobe.store import load_run

RUN_ID_FILE = "wandb.json"
STEP_METRIC = PREFIX + "step"


def _created(run_dir: str | Path | None) -> str | None:
    """When the run directory's run.json was created: tells a replaced (`overwrite`) run apart."""
    info = Path(run_dir) / "run.json" if run_dir is not None else None
    return json.loads(info.read_text()).get("created") if info is not None and info.exists() else None


def _stored(run_dir: str | Path | None, project: str) -> dict[str, Any]:
    """What RUN_DIR/wandb.json holds for `project` and this run ({} for nothing, another project,
    or a run directory that was since overwritten)."""
    if run_dir is None or not (Path(run_dir) / RUN_ID_FILE).exists():
        return {}
    stored = json.loads((Path(run_dir) / RUN_ID_FILE).read_text())
    same = stored.get("project") == project and stored.get("created") == _created(run_dir)
    return stored if same else {}


class WandbSink:
    """Logs step rows as the history of one W&B run.

    With `run_dir`, the project, run id and last logged step are kept in RUN_DIR/wandb.json; a
    later sink on the same directory (not overwritten since) and project resumes that run
    (`resume="allow"`) and skips the steps it already logged, so each step is logged once (a
    deterministic resume re-computes the same values for them). `mode`, `entity` and `dir` go to
    `wandb.init` unchanged.
    """

    def __init__(self, project: str = "smoothprobe", *, run_dir: str | Path | None = None,
                 name: str | None = None, entity: str | None = None, mode: str | None = None,
                 dir: str | Path | None = None, config: Mapping[str, Any] | None = None) -> None:
        try:
            import wandb
        except ImportError as err:
            raise SmoothprobeError("wandb logging needs the wandb package: pip install wandb") from err
        self.project, self._created = project, _created(run_dir)
        self._id_file = Path(run_dir) / RUN_ID_FILE if run_dir is not None else None
        stored = _stored(run_dir, project)
        self._logged_up_to = int(stored.get("last_step", -1))
        options: dict[str, Any] = {"project": project, "entity": entity, "mode": mode,
                                   "dir": str(dir) if dir is not None else None,
                                   "config": dict(config) if config else None,
                                   "reinit": "create_new",
                                   "settings": wandb.Settings(console="off")}
        if stored.get("run_id"):
            options.update(id=stored["run_id"], resume="allow")
        else:
            options["name"] = name or (Path(run_dir).name if run_dir is not None else None)
        try:
            self._run = wandb.init(**{k: v for k, v in options.items() if v is not None})
        except Exception as err:  # wandb raises its own types (login, network, bad settings)
            raise SmoothprobeError(f"wandb.init failed: {one_line(err)} (log in with `wandb login`, "
                                   "or pass mode='offline')") from err
        self._run.define_metric(STEP_METRIC, hidden=True)
        self._run.define_metric(PREFIX + "*", step_metric=STEP_METRIC)
        self.run_id: str = self._run.id
        self._save()

    @property
    def logged_up_to(self) -> int:
        """The last step this W&B run holds (-1 for none)."""
        return self._logged_up_to

    def _save(self) -> None:
        if self._id_file is None:
            return
        self._id_file.parent.mkdir(parents=True, exist_ok=True)
        record = {"project": self.project, "run_id": self.run_id, "last_step": self._logged_up_to,
                  "created": self._created}
        partial = self._id_file.with_suffix(".json.tmp")
        partial.write_text(json.dumps(record))
        partial.replace(self._id_file)

    def write(self, step: int, row: Mapping[str, Any]) -> None:
        """Log every finite numeric column of `row` at step `step` (steps already logged are skipped)."""
        if step <= self._logged_up_to:
            return
        values = scalars(row)
        if values:
            self._run.log({STEP_METRIC: step, **values})
        self._logged_up_to = step
        self._save()

    def close(self, exit_code: int = 0) -> None:
        """Finish the W&B run (`exit_code` 0: finished, else failed)."""
        self._run.finish(exit_code=exit_code)


def export_wandb(run_dir: str | Path, project: str = "smoothprobe", *, entity: str | None = None,
                 mode: str | None = None, dir: str | Path | None = None) -> str:
    """Log a run directory's steps table to W&B as one run; returns the W&B run id.

    Idempotent: a run already holding every step is left alone, and a partial one (a live
    mirror, an export of an unfinished run) gets only the steps it lacks.
    """
    run = load_run(run_dir)
    if run.steps.empty:
        raise SmoothprobeError(f"run directory {run_dir} has no steps to export")
    stored = _stored(run_dir, project)
    last = int(run.steps["step"].max())
    if stored.get("run_id") and int(stored.get("last_step", -1)) >= last:
        return str(stored["run_id"])
    sink = WandbSink(project, run_dir=run_dir, entity=entity, mode=mode, dir=dir,
                     config=run.info.get("config"))
    for row in run.steps.to_dict("records"):
        sink.write(int(row["step"]), row)
    sink.close()
    return sink.run_id
