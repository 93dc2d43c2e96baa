"""The run store: atomic run.json, torn-tail tolerance, corrupt-store errors, truncation for resume."""

import json

import pytest

from smoothprobe.errors import SmoothprobeError
from smoothprobe.store import RunStore, load_run


def make_store(tmp_path):
    store = RunStore.create(tmp_path / "run", {"config": {"lr": 1.0}, "task": {"f_star": 0.5}})
    for step in range(5):
        store.append("steps", {"step": step, "loss": 1.0 / (step + 1)})
    store.append("evals", {"step": 5, "val_loss": 0.3})
    store.flush()
    return store


def test_round_trip(tmp_path):
    make_store(tmp_path)
    run = load_run(tmp_path / "run")
    assert run.config == {"lr": 1.0} and run.f_star == 0.5
    assert run.steps.loss.tolist() == [1.0, 0.5, 1 / 3, 0.25, 0.2]
    assert run.evals.val_loss.tolist() == [0.3] and run.tensors.empty and not run.warnings


def test_unflushed_rows_are_not_on_disk_and_torn_tail_is_dropped(tmp_path):
    store = make_store(tmp_path)
    store.append("steps", {"step": 5, "loss": 9.0})
    assert len(load_run(tmp_path / "run").steps) == 5
    with open(tmp_path / "run" / "steps.jsonl", "a") as f:
        f.write('{"step": 5, "lo')
    run = load_run(tmp_path / "run")
    assert len(run.steps) == 5 and "truncated" in run.warnings[0]


def test_corrupt_middle_line_and_bad_dirs_are_one_line_errors(tmp_path):
    make_store(tmp_path)
    path = tmp_path / "run" / "steps.jsonl"
    lines = path.read_text().splitlines()
    lines[2] = "garbage"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(SmoothprobeError, match="line 3 is not valid JSON"):
        load_run(tmp_path / "run")
    with pytest.raises(SmoothprobeError, match="not found"):
        load_run(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SmoothprobeError, match="no run.json"):
        load_run(tmp_path / "empty")
    (tmp_path / "run" / "run.json").write_text("{")
    with pytest.raises(SmoothprobeError, match="unreadable run.json"):
        load_run(tmp_path / "run")


def test_existing_directory_is_refused_without_overwrite(tmp_path):
    make_store(tmp_path)
    with pytest.raises(SmoothprobeError, match="pass resume"):
        RunStore.create(tmp_path / "run", {})
    RunStore.create(tmp_path / "run", {"config": {}}, overwrite=True)
    assert load_run(tmp_path / "run").steps.empty


def test_truncate_keeps_history_before_checkpoint(tmp_path):
    store = make_store(tmp_path)
    store.truncate(3)
    run = load_run(tmp_path / "run")
    assert run.steps.step.tolist() == [0, 1, 2] and run.evals.empty


def test_checkpoint_round_trip_and_corruption(tmp_path):
    import torch

    store = make_store(tmp_path)
    assert store.load_checkpoint() is None
    store.save_checkpoint({"step": 3, "w": torch.arange(3.0)})
    state = RunStore.open(tmp_path / "run").load_checkpoint()
    assert state["step"] == 3 and state["w"].tolist() == [0.0, 1.0, 2.0]
    (tmp_path / "run" / "checkpoints" / "last.pt").write_bytes(b"junk")
    with pytest.raises(SmoothprobeError, match="corrupt checkpoint"):
        store.load_checkpoint()


def test_schema_version_is_checked(tmp_path):
    make_store(tmp_path)
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    info["schema_version"] = 99
    (tmp_path / "run" / "run.json").write_text(json.dumps(info))
    with pytest.raises(SmoothprobeError, match="schema version 99"):
        load_run(tmp_path / "run")
