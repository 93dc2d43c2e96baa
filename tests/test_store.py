"""The run store: atomic run.json, torn-tail tolerance, corrupt-store errors, truncation for resume."""

import json
import pickle

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
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    with pytest.raises(SmoothprobeError, match="holds files but no run; choose another out, or pass overwrite") as err:
        RunStore.create(tmp_path / "notes", {})  # resume, once suggested here, has no run to continue
    assert "resume" not in str(err.value)


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
    store.close()
    state = RunStore.open(tmp_path / "run").load_checkpoint()
    assert state["step"] == 3 and state["w"].tolist() == [0.0, 1.0, 2.0]
    (tmp_path / "run" / "checkpoints" / "last.pt").write_bytes(b"junk")
    with pytest.raises(SmoothprobeError, match="cannot be read .*pass overwrite"):
        store.load_checkpoint()


def test_schema_version_is_checked(tmp_path):
    make_store(tmp_path)
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    info["schema_version"] = 99
    (tmp_path / "run" / "run.json").write_text(json.dumps(info))
    with pytest.raises(SmoothprobeError, match="schema version 99"):
        load_run(tmp_path / "run")


def strict(line):
    """json.loads as a strict RFC 8259 reader (no NaN/Infinity tokens)."""
    return json.loads(line, parse_constant=lambda token: pytest.fail(f"non-JSON token {token}"))


def test_non_finite_values_are_strict_json_and_come_back(tmp_path):
    import math

    store = RunStore.create(tmp_path / "run", {"config": {}})
    store.append("steps", {"step": 0, "loss": float("nan"), "lr": float("inf"), "grad_norm": -math.inf})
    store.append("steps", {"step": 1, "loss": 1.0, "lr": 0.1, "grad_norm": None})
    store.flush()
    lines = (tmp_path / "run" / "steps.jsonl").read_text().splitlines()
    assert strict(lines[0]) == {"step": 0, "loss": None, "lr": None, "grad_norm": None,
                                "nonfinite": {"loss": "nan", "lr": "inf", "grad_norm": "-inf"}}
    store.truncate(2)  # rewriting keeps the encoding
    assert strict((tmp_path / "run" / "steps.jsonl").read_text().splitlines()[0])["nonfinite"]["lr"] == "inf"
    steps = load_run(tmp_path / "run").steps
    assert math.isnan(steps.loss[0]) and steps.lr[0] == math.inf and steps.grad_norm[0] == -math.inf
    assert "nonfinite" not in steps.columns and steps.loss[1] == 1.0
    # files written before the encoding (bare NaN tokens) still read
    (tmp_path / "run" / "steps.jsonl").write_text('{"step": 0, "loss": NaN, "lr": Infinity}\n')
    steps = load_run(tmp_path / "run").steps
    assert math.isnan(steps.loss[0]) and steps.lr[0] == math.inf


@pytest.mark.parametrize("line, message", [
    ("[1, 2]", "line 2 is not a record"),
    ("null", "line 2 is not a record"),
    ("{}", "line 2: field 'step' must be an integer"),
    ('{"step": "abc"}', "line 2: field 'step' must be an integer"),
    ('{"step": true}', "line 2: field 'step' must be an integer"),
    ('{"step": -1}', "line 2: field 'step' must be an integer"),
    ('{"step": 1, "loss": "abc"}', "line 2: field 'loss' must be a number or null"),
    ('{"step": 1, "loss": [1]}', "line 2: field 'loss' must be a number"),
    ('{"step": 1, "secant_K": "x"}', "line 2: field 'secant_K' holds \"x\" where earlier rows hold numbers"),
    ('{"step": 1, "loss": null, "nonfinite": {"loss": "big"}}', "line 2: field 'nonfinite'"),
])
def test_valid_json_that_is_not_a_record_is_one_line_naming_line_and_field(tmp_path, line, message):
    path = tmp_path / "run" / "steps.jsonl"
    make_store(tmp_path).close()
    path.write_text('{"step": 0, "loss": 1.0, "secant_K": 2.0}\n' + line + '\n{"step": 2, "loss": 1.0}\n')
    with pytest.raises(SmoothprobeError, match=f"steps.jsonl {message}") as info:
        load_run(tmp_path / "run")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("text, message", [
    ("[]", "must hold a JSON object; got list"),
    ('{"schema_version": 1}', "field 'config' must be an object; got nothing"),
    ('{"schema_version": 1, "config": null}', "field 'config' must be an object; got NoneType"),
    ('{"schema_version": 1, "config": {}, "task": {"f_star": -1e308}}', "field 'task.f_star' must be a finite"),
    ('{"schema_version": 1, "config": {}, "task": [1]}', "field 'task' must be an object or null"),
])
def test_run_json_without_a_config_object_is_refused(tmp_path, text, message):
    make_store(tmp_path).close()
    (tmp_path / "run" / "run.json").write_text(text)
    with pytest.raises(SmoothprobeError, match=message):
        load_run(tmp_path / "run")


def test_repeated_steps_keep_the_last_row_with_a_warning(tmp_path):
    store = make_store(tmp_path)
    store.append("steps", {"step": 3, "loss": 7.0})
    store.append("evals", {"step": 5, "val_loss": 0.1})
    store.flush()
    run = load_run(tmp_path / "run")
    assert run.steps.step.tolist() == [0, 1, 2, 3, 4] and run.steps.loss[3] == 7.0
    assert run.evals.val_loss.tolist() == [0.1]
    assert any("steps.jsonl repeats step(s) 3" in w for w in run.warnings)
    assert any("evals.jsonl repeats step(s) 5" in w for w in run.warnings)


def test_second_writer_is_refused_naming_the_pid_and_a_dead_holder_does_not_block(tmp_path):
    import os
    import subprocess
    import sys

    store = make_store(tmp_path)
    with pytest.raises(SmoothprobeError, match=f"in use by another writer \\(pid {os.getpid()}\\)"):
        RunStore.open(tmp_path / "run")
    with pytest.raises(SmoothprobeError, match="in use by another writer"):
        RunStore.create(tmp_path / "run", {"config": {}}, overwrite=True)
    assert load_run(tmp_path / "run").steps.loss.tolist()[0] == 1.0  # the refused overwrite deleted nothing
    store.close()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time\n"
        f"d = os.open({str(tmp_path / 'run')!r}, os.O_RDONLY); fcntl.flock(d, fcntl.LOCK_EX)\n"
        f"open({str(tmp_path / 'run' / '.lock')!r}, 'w').write(str(os.getpid()))\n"
        "print('locked', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(SmoothprobeError, match=f"pid {holder.pid}"):
            RunStore.open(tmp_path / "run")
    finally:
        holder.kill()
        holder.wait()
    RunStore.open(tmp_path / "run").close()  # the killed holder's lock is gone with it


def test_overwrite_clears_what_smoothprobe_wrote_and_refuses_foreign_directories(tmp_path):
    make_store(tmp_path).close()
    for name in ("fit.json", "fit.stale.json", "report.html", ".steps.jsonl.tmp", "notes.txt"):
        (tmp_path / "run" / name).write_text("stale")
    RunStore.create(tmp_path / "run", {"config": {}}, overwrite=True).close()
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        ".lock", "checkpoints", "evals.jsonl", "notes.txt", "run.json", "steps.jsonl", "tensors.jsonl"]
    assert (tmp_path / "run" / "notes.txt").read_text() == "stale"  # a user's own file stays
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(SmoothprobeError, match="no run.json; refusing to overwrite"):
        RunStore.create(tmp_path / "mine", {"config": {}}, overwrite=True)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


def test_failed_writes_leave_no_temporaries_and_left_overs_are_removed(tmp_path):
    store = make_store(tmp_path)
    store.save_checkpoint({"step": 1})
    with pytest.raises((AttributeError, pickle.PicklingError)):
        store.save_checkpoint({"step": 2, "bad": lambda: 0})  # not picklable: fails mid-write
    assert store.load_checkpoint() == {"step": 1}
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["last.pt"]
    store.close()
    (tmp_path / "run" / "checkpoints" / ".last.pt.tmp").write_bytes(b"half")
    (tmp_path / "run" / ".run.json.abc123").write_text("{")
    RunStore.open(tmp_path / "run").close()
    leftovers = [p.name for p in (tmp_path / "run").rglob("*") if "tmp" in p.name or ".run.json." in p.name]
    assert leftovers == []


def test_deleting_the_lock_file_does_not_admit_a_second_writer(tmp_path):
    store = make_store(tmp_path)
    (tmp_path / "run" / ".lock").unlink()
    with pytest.raises(SmoothprobeError, match="in use by another writer"):
        RunStore.create(tmp_path / "run", {"config": {}}, overwrite=True)
    with pytest.raises(SmoothprobeError, match="in use by another writer"):
        RunStore.open(tmp_path / "run")
    assert len(load_run(tmp_path / "run").steps) == 5
    store.close()
    RunStore.open(tmp_path / "run").close()


def test_a_writer_whose_directory_was_replaced_stops_without_writing_into_the_new_one(tmp_path):
    import shutil

    store = make_store(tmp_path)
    shutil.move(tmp_path / "run", tmp_path / "moved")
    other = RunStore.create(tmp_path / "run", {"config": {"lr": 2.0}})
    other.append("steps", {"step": 0, "loss": 5.0})
    other.flush()
    store.append("steps", {"step": 5, "loss": 9.0})
    with pytest.raises(SmoothprobeError, match="removed or replaced"):
        store.flush()
    with pytest.raises(SmoothprobeError, match="removed or replaced"):
        store.write_info(status="finished")
    store.close()
    other.close()
    assert load_run(tmp_path / "run").steps.loss.tolist() == [5.0]  # nothing mixed in


def test_disk_full_frees_the_reserve_for_the_status(tmp_path, monkeypatch):
    import errno

    import smoothprobe.store as store_module
    from smoothprobe.writer import RunWriter

    store = make_store(tmp_path)
    assert (tmp_path / "run" / ".reserve").stat().st_size == store_module.RESERVE_BYTES
    real = store_module.write_json_atomic
    calls = []

    def full_once(path, data):
        calls.append(path)
        if len(calls) == 1:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, data)

    monkeypatch.setattr(store_module, "write_json_atomic", full_once)
    log = RunWriter(store)
    log.write({"step": 5, "loss": 0.1})
    monkeypatch.setattr(store, "flush", lambda: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left")))
    with pytest.raises(OSError, match="No space"):
        log.close("finished")
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["status"] == "crashed" and info["status_reason"] == "disk full" and len(calls) == 2
    assert not (tmp_path / "run" / ".reserve").exists()
    assert len(load_run(tmp_path / "run").steps) == 5  # the rows written before are kept


def test_left_overs_of_a_killed_creation_do_not_block_a_new_run_and_bad_paths_are_one_line(tmp_path):
    import os

    (tmp_path / "run").mkdir()
    for name in (".lock", ".reserve"):
        (tmp_path / "run" / name).write_text("12345")
    RunStore.create(tmp_path / "run", {"config": {}}).close()
    assert load_run(tmp_path / "run").steps.empty
    os.symlink(tmp_path / "loop", tmp_path / "loop")
    for path in (tmp_path / "loop", tmp_path / "loop" / "sub", tmp_path / ("x" * 300)):
        with pytest.raises(SmoothprobeError, match="cannot"):
            RunStore.create(path, {"config": {}})


def test_rows_past_the_planned_steps_are_flagged(tmp_path):
    """Rows numbered beyond the run's `config.steps` (say, another run's rows appended) load with one warning;
    a run whose rows stay within its steps has none."""
    store = RunStore.create(tmp_path / "run", {"config": {"steps": 5}})
    for step in range(5):
        store.append("steps", {"step": step, "loss": 1.0})
    store.flush()
    assert load_run(tmp_path / "run").warnings == []
    for step in range(1000, 1003):
        store.append("steps", {"step": step, "loss": 1.0})
    store.flush()
    [warning] = load_run(tmp_path / "run").warnings
    assert "3 row(s) past the run's 5 steps (from step 1000)" in warning
