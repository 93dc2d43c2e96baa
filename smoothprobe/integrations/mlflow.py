"""MLflow view of a run: every numeric column of `steps` as the metric `smoothprobe/<column>`.

The same names and values as the TensorBoard view. Use `MlflowSink` live (the callbacks'
`mlflow=` argument, or `write` from your own loop) or `export_mlflow` on a finished run
directory. Needs the `mlflow` or `mlflow-skinny` package (`pip install smoothprobe[mlflow]`).
The sink talks to its tracking URI through an `MlflowClient` and never touches the active run,
so it sits beside a framework's own MLflow logging. Any tracking URI works; a local SQLite
database (`sqlite:///mlflow.db`) needs no server and no environment variable.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from smoothprobe.errors import SmoothprobeError
from smoothprobe.integrations.tensorboard import scalars
from smoothprobe.store import load_run

RUN_ID_FILE = "mlflow.json"


class MlflowSink:
    """Logs step rows as metrics of one MLflow run.

    With `run_dir`, the tracking URI and run id are kept in RUN_DIR/mlflow.json and a later sink
    on the same directory and URI continues that run (a new one if the stored run is gone).
    MLflow cannot delete logged points, so a resumed run or a re-export skips the steps the
    MLflow run already holds: each step is logged once.
    """

    def __init__(self, tracking_uri: str, *, run_dir: str | Path | None = None,
                 experiment: str = "smoothprobe", run_name: str | None = None) -> None:
        try:
            from mlflow.tracking import MlflowClient
        except ImportError as err:
            raise SmoothprobeError(
                "mlflow logging needs the mlflow package: pip install mlflow-skinny"
            ) from err
        self.tracking_uri = str(tracking_uri)
        self._client = MlflowClient(tracking_uri=self.tracking_uri)
        self._id_file = Path(run_dir) / RUN_ID_FILE if run_dir is not None else None
        self.run_id = self._stored_run_id()
        self._logged_up_to = -1
        if self.run_id is not None and not self._run_exists():
            self.run_id = None
        if self.run_id is None:
            found = self._client.get_experiment_by_name(experiment)
            experiment_id = found.experiment_id if found else self._client.create_experiment(experiment)
            name = run_name or (Path(run_dir).name if run_dir is not None else None)
            self.run_id = self._client.create_run(experiment_id, run_name=name).info.run_id
            if self._id_file is not None:
                self._id_file.parent.mkdir(parents=True, exist_ok=True)
                self._id_file.write_text(json.dumps({"tracking_uri": self.tracking_uri,
                                                     "run_id": self.run_id}))
        else:
            self._logged_up_to = self._last_logged_step()
            self._client.update_run(self.run_id, status="RUNNING")

    def _stored_run_id(self) -> str | None:
        """The run id RUN_DIR/mlflow.json holds for this tracking URI, if any."""
        if self._id_file is None or not self._id_file.exists():
            return None
        stored = json.loads(self._id_file.read_text())
        return stored["run_id"] if stored.get("tracking_uri") == self.tracking_uri else None

    def _run_exists(self) -> bool:
        """True when the tracking store still holds the stored run (not deleted, same database)."""
        from mlflow.exceptions import MlflowException

        try:
            return self._client.get_run(self.run_id).info.lifecycle_stage != "deleted"
        except MlflowException:
            return False

    def _last_logged_step(self) -> int:
        """The highest step any metric of the run holds (-1 for none)."""
        keys = self._client.get_run(self.run_id).data.metrics
        steps = [m.step for key in keys for m in self._client.get_metric_history(self.run_id, key)]
        return max(steps, default=-1)

    def write(self, step: int, row: Mapping[str, Any]) -> None:
        """Log every finite numeric column of `row` at step `step` (steps already logged are skipped)."""
        from mlflow.entities import Metric

        if step <= self._logged_up_to:
            return
        now = int(time.time() * 1000)
        metrics = [Metric(tag, value, now, step) for tag, value in scalars(row).items()]
        if metrics:
            self._client.log_batch(self.run_id, metrics=metrics)

    def close(self, status: str = "FINISHED") -> None:
        """Mark the MLflow run ended (`FINISHED`, `FAILED` or `KILLED`)."""
        self._client.set_terminated(self.run_id, status=status)


def export_mlflow(run_dir: str | Path, tracking_uri: str, experiment: str = "smoothprobe") -> str:
    """Log a run directory's steps table to MLflow as one run; returns the MLflow run id.

    Idempotent: a second export to the same URI continues the run in RUN_DIR/mlflow.json and
    logs only steps it does not hold yet.
    """
    run = load_run(run_dir)
    if run.steps.empty:
        raise SmoothprobeError(f"run directory {run_dir} has no steps to export")
    sink = MlflowSink(tracking_uri, run_dir=run_dir, experiment=experiment)
    for row in run.steps.to_dict("records"):
        sink.write(int(row["step"]), row)
    sink.close()
    return sink.run_id
