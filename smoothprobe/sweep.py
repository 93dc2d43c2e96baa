"""Warm-up grid against the adaptive schedule: same budget, same seeds, one summary table."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from smoothprobe.config import SEED_MAX, defaults
from smoothprobe.errors import RunInUse, SmoothprobeError
from smoothprobe.schedule.baseline import warmup_steps
from smoothprobe.store import load_run, lock_holder, replace_atomically, wait_for_writer
from smoothprobe.train import Diverged, TrainConfig, stored_config, train

SUMMARY = "summary.csv"


def run_label(warmup: float | None) -> str:
    """Directory/label of one configuration: `warmup-0.05` or `adaptive`."""
    return "adaptive" if warmup is None else f"warmup-{warmup:g}"


def final_val_loss(path: Path) -> float:
    """Last validation loss of a finished run (NaN when it diverged or never evaluated)."""
    run = load_run(path)
    if run.info.get("status") != "finished" or run.evals.empty:
        return math.nan
    return float(run.evals.val_loss.iloc[-1])


def sweep(base: TrainConfig, out: str | Path, warmups: list[float], seeds: int,
          adaptive: dict | None = None, progress: bool = True, overwrite: bool = False) -> pd.DataFrame:
    """Train every (warm-up, seed) and, with `adaptive`, the adaptive schedule per seed; finished runs
    already in `out` with the same config are reused, so an interrupted sweep continues. A run in
    `out` whose stored config differs is refused before anything is trained, unless `overwrite`
    (then it is trained again). A run another process is writing (a second sweep into the same
    `out`) is waited for, then re-read: its result is used if it finished with this config, else it
    is trained here. Only a diverged run counts as a result (NaN); any other refusal stops the
    sweep. Writes and returns the summary."""
    if seeds < 1 or not warmups:
        raise SmoothprobeError("a sweep needs at least one seed and one warm-up value")
    if not 0 <= base.seed <= SEED_MAX - (seeds - 1):
        raise SmoothprobeError(f"seed must leave room for {seeds} seeds below {SEED_MAX}; got {base.seed}")
    labels = [run_label(w) for w in warmups]
    if len(set(labels)) < len(labels):
        twice = sorted({label for label in labels if labels.count(label) > 1})
        raise SmoothprobeError(f"warm-ups must differ: {', '.join(twice)} given more than once (each would count "
                               "its seeds twice)", params=["warmups"])
    by_length: dict[int, list[float]] = {}  # negative warm-ups are refused with the arms' configs below
    for w in (w for w in warmups if w >= 0):
        by_length.setdefault(warmup_steps(w, base.steps), []).append(w)
    if clash := next(((n, ws) for n, ws in by_length.items() if len(ws) > 1), None):
        raise SmoothprobeError(f"warm-ups must differ: {' and '.join(f'{w:g}' for w in clash[1])} give the same "
                               f"{clash[0]} steps of the run's {base.steps} (each would be trained again)",
                               params=["warmups"])
    out = Path(out)
    plan = [(w, s) for w in warmups for s in range(seeds)]
    if adaptive is not None:
        plan += [(None, s) for s in range(seeds)]
    runs = []
    unshaped = {name: defaults(TrainConfig)[name] for name in ("schedule", "warmup_shape")}  # the grid's shape
    for warmup, seed in plan:
        path = out / run_label(warmup) / f"seed-{seed}"
        config = dataclasses.replace(base, seed=base.seed + seed, warmup=warmup or 0.0,
                                     adaptive=adaptive if warmup is None else None,
                                     **(unshaped if warmup is None else {}))
        config.validate()  # every arm is checked before the first one trains
        same = (path / "run.json").exists() and stored_config(path) == config
        if (path / "run.json").exists() and not same and not overwrite:
            raise SmoothprobeError(f"{path} holds a run with another config than this sweep's; pass overwrite "
                                   "to rerun it, or choose another out")
        runs.append((warmup, seed, path, config, same and load_run(path).info.get("status") == "finished"))
    records = []
    for warmup, seed, path, config, done in tqdm(runs, disable=not progress, desc="sweep", unit="run"):
        if not done:
            train_once(config, path, f"{run_label(warmup)} seed {seed}")
        records.append({"config": run_label(warmup), "seed": seed, "val_loss": final_val_loss(path)})
    summary = summarise(pd.DataFrame.from_records(records))
    out.mkdir(parents=True, exist_ok=True)
    replace_atomically(out / SUMMARY, lambda tmp: summary.to_csv(tmp, index=False))
    return summary


def finished_with(path: Path, config: TrainConfig) -> bool:
    """Whether `path` holds a finished run of exactly `config`."""
    try:
        return stored_config(path) == config and load_run(path).info.get("status") == "finished"
    except SmoothprobeError:
        return False


def train_once(config: TrainConfig, path: Path, label: str) -> None:
    """Train `config` into `path` unless another process is doing so: then wait for it and use its
    run if it finished with this config (else train it here). A diverged run is a result; every
    other failure propagates."""
    while True:
        try:
            train(config, path, overwrite=True, progress=False)
            return
        except Diverged as exc:  # a diverged run is a result (NaN), not a failure of the sweep
            tqdm.write(f"{label}: {exc}")
            return
        except RunInUse:
            tqdm.write(f"{label}: {path} is being written by another process (pid {lock_holder(path)}); waiting")
            wait_for_writer(path)
            if finished_with(path, config):
                return


def summarise(results: pd.DataFrame) -> pd.DataFrame:
    """Mean and std of final val loss per configuration; best grid point; adaptive − best in seed-σ."""
    table = results.groupby("config", sort=False).val_loss.agg(["mean", "std", "count"]).reset_index()
    table = table.rename(columns={"mean": "val_loss_mean", "std": "val_loss_std", "count": "seeds"})
    grid = table[table.config != "adaptive"]
    best = grid.loc[grid.val_loss_mean.idxmin()] if grid.val_loss_mean.notna().any() else None
    sigma = float(np.sqrt(np.nanmean(table.val_loss_std**2))) if table.seeds.max() > 1 else math.nan
    table["best_grid"] = table.config == (best.config if best is not None else None)
    table["minus_best_in_sigma"] = (
        (table.val_loss_mean - best.val_loss_mean) / sigma if best is not None and sigma > 0 else math.nan
    )
    table["grid_median"] = float(grid.val_loss_mean.median())
    return table
