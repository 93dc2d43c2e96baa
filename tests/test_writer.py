"""One run writer: train, the Recorder in a user's loop and the adapters leave the same run.json keys
and the same always-present step columns, and every exit leaves a status."""

import math

import pytest
import torch

from smoothprobe import Recorder, TrainConfig, load_run, train
from smoothprobe.distributed import update_norm
from smoothprobe.tasks.quadratic import QuadraticTask
from smoothprobe.writer import ALWAYS, describe_optimizer

RUN_KEYS = {"source", "config", "task", "optimizer", "parameters", "device", "environment", "created",
            "world_size", "probes", "status", "status_reason", "finished", "schema_version"}


def own_loop(path, steps=4, fail_at=None):
    task = QuadraticTask(dtype=torch.float64, cond=10.0)
    model = task.build_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    with Recorder(model, opt, path, loss_fn=task.loss, every=2) as rec:
        for step in range(steps):
            if step == fail_at:
                raise RuntimeError("boom")
            batch = task.train_batch(step)
            loss = task.loss(model, batch)
            loss.backward()
            rec.before_step(step, batch, loss=loss.item())
            opt.step()
            opt.zero_grad()
            rec.after_step()
    return load_run(path)


def test_train_and_own_loop_write_the_same_run_json_keys_and_columns(tmp_path):
    built = load_run(train(TrainConfig(task="quadratic", steps=4, probes={"every": 2}), tmp_path / "t",
                           progress=False))
    mine = own_loop(tmp_path / "r")
    assert set(built.info) == set(mine.info) == RUN_KEYS
    for run in (built, mine):
        assert set(ALWAYS) <= set(run.steps.columns)
        assert run.steps[list(ALWAYS)].notna().all().all()
        assert run.info["status"] == "finished"
        assert run.info["probes"]["family"] and run.info["optimizer"]["class"]
    assert mine.info["source"] == "recorder" and mine.info["optimizer"]["hyperparameters"]["momentum"] == 0.9
    assert mine.steps.time_s.is_monotonic_increasing


def test_own_loop_crash_keeps_rows_and_says_crashed(tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        own_loop(tmp_path / "r", steps=6, fail_at=3)
    run = load_run(tmp_path / "r")
    assert run.steps.step.tolist() == [0, 1, 2]
    assert run.info["status"] == "crashed" and "boom" in run.info["status_reason"]


def test_update_norm_is_the_euclidean_step_length():
    params = {"a": torch.tensor([3.0, 0.0]), "b": torch.tensor([[4.0]])}
    before = {"a": torch.zeros(2), "b": torch.zeros(1, 1)}
    assert update_norm(params, before) == pytest.approx(5.0)
    assert math.isnan(update_norm(params, {}))


def test_describe_optimizer_keeps_plain_hyperparameters():
    opt = torch.optim.AdamW(torch.nn.Linear(2, 2).parameters(), lr=3e-4, betas=(0.9, 0.95))
    d = describe_optimizer(opt)
    assert d["name"] == "adamw" and d["lr"] == 3e-4 and d["hyperparameters"]["betas"] == [0.9, 0.95]
    assert d["split"] is None
