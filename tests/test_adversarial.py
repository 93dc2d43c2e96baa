"""Hostile invocations (issue 23): checkpoints that are not there, locks that outlive tampering,
concurrent sweeps, a full disk, a second signal, and bad input of every kind. Each case holds when
nothing is lost or mixed and the command ends in exit 0, or exit 2 with one error line and no
traceback. tests/conftest.py prints the tally line at the end of the run."""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from smoothprobe.cli.main import main

from smoothprobe import TrainConfig, load_run
from smoothprobe.errors import RunInUse
from smoothprobe.store import RunStore

ROOT = Path(__file__).resolve().parents[1]
RECORD = ["record", "--task", "quadratic", "--optimizer", "normsgd", "--lr", "0.05", "--every", "1",
          "--checkpoint-every", "20", "--no-progress"]
QUICK = ["--task", "quadratic", "--optimizer", "normsgd", "--lr", "0.05", "--no-progress"]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def files(run: Path) -> dict[str, bytes]:
    """Every file of a run directory but the lock file, by relative path."""
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file() and p.name != ".lock"}


def refused(result, *fragments: str) -> None:
    """Exit 2, no traceback, one error line (click's usage errors add their usage lines above it)."""
    assert "Traceback" not in result.output, result.output
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.output
    assert len(lines) == 1 or lines[0].startswith("Usage: "), result.output
    for fragment in fragments:
        assert fragment in result.output, result.output


def quiet(result) -> None:
    """Exit 0 with no raw Python/numpy/torch warning on the terminal."""
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output and "Warning:" not in result.output, result.output


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A finished 60-step recorded quadratic run with a fit.json."""
    run = tmp_path_factory.mktemp("adversarial") / "run"
    result = invoke(*RECORD, "--steps", "60", "--out", run)
    assert result.exit_code == 0, result.output
    assert invoke("fit", run, "--bootstrap", "0", "--jobs", "1").exit_code == 0
    return run


@pytest.fixture
def run(source, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(source, copy)
    return copy


def status(run: Path) -> str:
    return json.loads((run / "run.json").read_text())["status"]


# --- data lost --------------------------------------------------------------------------------

@pytest.mark.adversarial("lost")
def test_checkpoints_replaced_by_a_file_refuses_resume_and_keeps_every_row(run):
    shutil.rmtree(run / "checkpoints")
    (run / "checkpoints").write_text("not a folder")
    before = files(run)
    result = invoke("record", "--resume", "--out", run, "--steps", "70", "--no-progress")
    refused(result, "checkpoints is not a directory", "60 steps rows")
    assert files(run) == before and status(run) == "finished"


@pytest.mark.adversarial("lost")
def test_deleted_checkpoint_refuses_resume_instead_of_restarting(run):
    (run / "checkpoints" / "last.pt").unlink()
    before = files(run)
    refused(invoke("train", "--resume", "--out", run, "--no-progress"), "no checkpoints/last.pt")
    assert files(run) == before


@pytest.mark.adversarial("lost")
def test_a_checkpoint_with_a_bad_scheduler_state_leaves_the_run_as_it_was(run):
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    torch.save({**state, "scheduler": {"last_epoch": "x"}}, run / "checkpoints" / "last.pt")
    before = files(run)
    refused(invoke("record", "--resume", "--out", run, "--steps", "70", "--no-progress"), "last_epoch")
    assert files(run) == before and status(run) == "finished"


@pytest.mark.adversarial("lost")
def test_resume_without_checkpoint_or_rows_starts_from_step_0(tmp_path):
    out = tmp_path / "run"
    assert invoke("train", *QUICK, "--steps", "4", "--out", out).exit_code == 0
    (out / "checkpoints" / "last.pt").unlink()
    for table in ("steps", "evals", "tensors"):
        (out / f"{table}.jsonl").write_text("")
    quiet(invoke("train", "--resume", "--out", out, "--no-progress"))
    assert load_run(out).steps.step.tolist() == [0, 1, 2, 3]


@pytest.mark.adversarial("other")
def test_extending_a_run_sets_its_fit_aside_as_stale(run):
    fit = (run / "fit.json").read_text()
    quiet(invoke("record", "--resume", "--out", run, "--steps", "65", "--no-progress"))
    assert not (run / "fit.json").exists() and (run / "fit.stale.json").read_text() == fit
    assert len(load_run(run).steps) == 65


@pytest.mark.adversarial("lost")
def test_overwrite_deletes_only_what_smoothprobe_wrote(run):
    (run / "notes.md").write_text("my notes")
    (run / "mine").mkdir()
    (run / "checkpoints" / "my_best.pt").write_bytes(b"mine")
    quiet(invoke("train", *QUICK, "--steps", "3", "--overwrite", "--out", run))
    assert (run / "notes.md").read_text() == "my notes" and (run / "mine").is_dir()
    assert (run / "checkpoints" / "my_best.pt").read_bytes() == b"mine"  # in smoothprobe's folder, still the user's
    assert not (run / "fit.json").exists() and len(load_run(run).steps) == 3
    assert "deletes only the files smoothprobe writes" in " ".join(invoke("train", "--help").output.split())


# --- data mixed -------------------------------------------------------------------------------

HOLD = ("import sys, time\nfrom smoothprobe.store import RunStore\n"
        "store = RunStore.open(sys.argv[1]); print('locked', flush=True); time.sleep(float(sys.argv[2])); store.close()")


def hold(path: Path, seconds: float) -> subprocess.Popen:
    """Another process holding the run directory's writer lock for `seconds`."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path), str(seconds)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


@pytest.mark.adversarial("mixed")
def test_deleting_the_lock_file_does_not_let_a_second_writer_in(run):
    holder = hold(run, 60)
    try:
        (run / ".lock").unlink()
        before = files(run)
        refused(invoke("train", "--task", "markov", "--steps", "3", "--overwrite", "--no-progress", "--out", run),
                "in use by another writer")
        refused(invoke("train", "--resume", "--out", run, "--no-progress"), "in use by another writer")
        assert files(run) == before
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.adversarial("mixed")
def test_a_sweep_waits_for_a_run_another_process_writes_and_never_records_its_refusal(tmp_path):
    from smoothprobe.sweep import sweep

    base = TrainConfig(task="quadratic", optimizer="normsgd", lr=0.05, steps=5, eval_every=5)
    path = tmp_path / "warmup-0" / "seed-0"
    path.mkdir(parents=True)
    RunStore.create(path, {"config": {"task": "markov"}}).close()  # another sweep's run, still running
    holder = hold(path, 2)
    try:
        table = sweep(base, tmp_path, [0.0], seeds=1, progress=False, overwrite=True)
    finally:
        holder.wait()
    assert table.val_loss_mean.notna().all()
    assert load_run(path).info["status"] == "finished" and load_run(path).config["task"] == "quadratic"


@pytest.mark.adversarial("mixed")
def test_a_sweep_reuses_the_run_another_process_finished_while_it_waited(tmp_path, monkeypatch):
    import smoothprobe.sweep as sweep_module

    calls = []

    def busy(config, path, **kwargs):
        calls.append(path)
        raise RunInUse(f"run directory {path} is in use by another writer (pid 1)")

    monkeypatch.setattr(sweep_module, "train", busy)
    monkeypatch.setattr(sweep_module, "wait_for_writer", lambda path: None)
    monkeypatch.setattr(sweep_module, "finished_with", lambda path, config: True)
    sweep_module.train_once(TrainConfig(task="quadratic"), tmp_path / "r", "warmup-0 seed 0")
    assert len(calls) == 1  # waited once, then used the other process's finished run


# --- faults -----------------------------------------------------------------------------------

@pytest.mark.adversarial("lost")
def test_disk_full_mid_run_closes_it_as_crashed_disk_full_with_exit_2(tmp_path, monkeypatch):
    real = RunStore.flush
    count = {"n": 0}

    def filling(self):
        if any(self._buffers.values()):
            count["n"] += 1
            if count["n"] > 2:
                raise OSError(errno.ENOSPC, "No space left on device", str(self.path / "steps.jsonl"))
        real(self)

    monkeypatch.setattr(RunStore, "flush", filling)
    out = tmp_path / "run"
    refused(invoke("train", *QUICK, "--steps", "50", "--flush-every", "5", "--out", out), "disk full")
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "crashed" and info["status_reason"] == "disk full"
    assert load_run(out).steps.step.tolist() == list(range(10))  # the rows that fitted are kept
    RunStore.open(out).close()  # the lock went with the failed run


@pytest.mark.adversarial("lost")
def test_disk_full_writing_the_status_still_lands_crashed(tmp_path, monkeypatch):
    import smoothprobe.store as store_module

    real = store_module.write_json_atomic
    state = {"full": False}

    def full_disk(path, data):
        if state["full"] and (path.parent / store_module.RESERVE).exists():
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, data)

    def checkpoint_fills(self, state_dict):
        state["full"] = True
        raise OSError(errno.ENOSPC, "No space left on device", str(self.path / "checkpoints" / "last.pt"))

    monkeypatch.setattr(store_module, "write_json_atomic", full_disk)
    monkeypatch.setattr(RunStore, "save_checkpoint", checkpoint_fills)
    out = tmp_path / "run"
    refused(invoke("train", *QUICK, "--steps", "12", "--checkpoint-every", "5", "--out", out), "disk full")
    assert json.loads((out / "run.json").read_text())["status_reason"] == "disk full"


@pytest.fixture
def small_disk(tmp_path):
    """A mount point for a small tmpfs (skipped where mounting is not allowed); unmounted after."""
    mounts = []

    def mount(size: str) -> Path:
        point = tmp_path / f"disk-{len(mounts)}"
        point.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)],
                              capture_output=True, check=False)
        if done.returncode != 0:
            pytest.skip("cannot mount a tmpfs here")
        mounts.append(point)
        return point

    yield mount
    for point in mounts:
        subprocess.run(["umount", str(point)], check=False)


@pytest.mark.adversarial("lost")
@pytest.mark.parametrize("size, args", [
    ("200k", ["record", *QUICK[:-1], "--every", "1", "--steps", "3000"]),
    ("1m", ["train", "--task", "markov", "--steps", "12", "--checkpoint-every", "5"]),
], ids=["rows", "checkpoint"])
def test_a_real_full_disk_closes_the_run_as_crashed_disk_full(small_disk, size, args):
    out = small_disk(size) / "run"
    done = subprocess.run([sys.executable, "-m", "smoothprobe.cli.main", *args, "--no-progress", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "disk full" in done.stderr, done.stderr
    info = json.loads((out / "run.json").read_text())
    assert (info["status"], info["status_reason"]) == ("crashed", "disk full")
    steps = load_run(out).steps
    assert steps.step.tolist() == list(range(len(steps)))  # every row that fitted, in order


@pytest.mark.adversarial("traceback")
def test_a_second_signal_while_closing_exits_quietly(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "smoothprobe.cli.main", "train", *QUICK, "--steps", "10000000",
                             "--flush-every", "1000000", "--checkpoint-every", "1000000", "--out", str(out)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and '"running"' not in (
            (out / "run.json").read_text() if (out / "run.json").exists() else ""):
        time.sleep(0.05)
    time.sleep(1)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    code = proc.wait(timeout=60)
    stderr = proc.stderr.read()
    assert code in (130, 143) and "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert status(out) == "interrupted"


# --- bad input: one line, exit 2 -------------------------------------------------------------

DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.adversarial("exit1")
@pytest.mark.parametrize("command", ["resume", "fit", "report"])
def test_deeply_nested_run_json_is_one_line(run, tmp_path, command):
    (run / "run.json").write_text(DEEP)
    args = {"resume": ["train", "--resume", "--out", run], "fit": ["fit", run, "--bootstrap", "0"],
            "report": ["report", run, "--out", tmp_path / "r.html"]}[command]
    refused(invoke(*args), "nests deeper")


@pytest.mark.adversarial("exit1")
@pytest.mark.parametrize("command", ["train --fit", "report --fit"])
def test_deeply_nested_fit_json_is_one_line(source, tmp_path, command):
    (tmp_path / "fit.json").write_text(DEEP)
    args = (["train", *QUICK, "--steps", "3", "--fit", tmp_path / "fit.json", "--out", tmp_path / "new"]
            if command == "train --fit" else ["report", source, "--fit", tmp_path / "fit.json", "--out", tmp_path / "r.html"])
    refused(invoke(*args), "nests")


@pytest.mark.adversarial("exit1")
@pytest.mark.parametrize("args, message", [
    (["--rho", "1e300"], "--rho must be a number in (1, 100]"),
    (["--rho", "1000"], "--rho must be a number in (1, 100]"),
    (["--f-star", "-1e300"], "|f*| <= 1e+12"),
    (["--f-star", "-1e12"], "too little to fit"),
    (["--f-star", "-1e6"], "too little to fit"),
    (["--seed", "-1"], "Invalid value for '--seed'"),
    (["--bootstrap", "999999999999999999999"], "Invalid value for '--bootstrap'"),
])
def test_fit_overflowing_values_are_refused(source, tmp_path, args, message):
    refused(invoke("fit", source, "--bootstrap", "0", "--out", tmp_path / "f.json", *args), message)
    assert not (tmp_path / "f.json").exists()


@pytest.mark.adversarial("exit1")
@pytest.mark.parametrize("args, message", [
    (["--adaptive", "--lr", "1e308"], "--lr must be a finite number > 0 and at most 1e+06"),
    (["--seed", "99999999999999999999999"], "Invalid value for '--seed'"),
    (["--markov-vocab", "50"], "--markov-vocab: not an option of --task quadratic"),
    (["--adaptive", "--f-star", "1000"], "--f-star must lie below the first training loss"),
])
def test_train_bad_values_are_refused_before_anything_is_written(tmp_path, args, message):
    refused(invoke("train", *QUICK, "--steps", "3", "--out", tmp_path / "new", *args), message)
    assert not (tmp_path / "new").exists()


@pytest.mark.adversarial("exit1")
def test_quadratic_flags_for_the_markov_task_are_refused(tmp_path):
    refused(invoke("train", "--task", "markov", "--cond", "5", "--steps", "3", "--out", tmp_path / "m"),
            "--cond: not an option of --task markov")


@pytest.mark.adversarial("exit1")
def test_token_file_with_a_partial_token_is_refused(tmp_path):
    (tmp_path / "odd.bin").write_bytes(b"\x01\x02\x03")
    refused(invoke("train", "--task", "lm", "--data", tmp_path / "odd.bin", "--vocab-size", "300", "--steps", "3",
                   "--out", tmp_path / "lm"), "not a whole number of 2-byte (uint16) tokens")


@pytest.mark.adversarial("exit1")
@pytest.mark.parametrize("kind", ["loop", "loop/sub", "long name"])
def test_unusable_out_paths_are_one_line(tmp_path, kind):
    os.symlink(tmp_path / "loop", tmp_path / "loop")
    out = {"loop": tmp_path / "loop", "loop/sub": tmp_path / "loop" / "sub", "long name": tmp_path / ("x" * 300)}[kind]
    refused(invoke("train", *QUICK, "--steps", "3", "--out", out), "Error: cannot ")


@pytest.mark.adversarial("exit1")
@pytest.mark.parametrize("split", [[1, 2], {"muon": 5}, "abc"])
def test_wrong_shape_of_the_optimizer_split_is_one_line(run, tmp_path, split):
    info = json.loads((run / "run.json").read_text())
    info["optimizer"]["split"] = split
    (run / "run.json").write_text(json.dumps(info))
    refused(invoke("report", run, "--out", tmp_path / "r.html"), "optimizer.split")


def fit_variant(source: Path, tmp_path: Path, **changes) -> Path:
    data = json.loads((source / "fit.json").read_text())
    for key, value in changes.items():
        if key == "rho":
            data["constants"]["rho"] = value
        else:
            data[key] = value
    path = tmp_path / "variant.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.adversarial("exit1")
def test_fit_json_f_star_above_every_loss_is_refused_like_the_flag(source, tmp_path):
    path = fit_variant(source, tmp_path, f_star=1000)
    flag = invoke("train", *QUICK, "--steps", "3", "--adaptive", "--f-star", "1000", "--out", tmp_path / "a")
    refused(flag, "must lie below the first training loss")
    from_fit = invoke("train", *QUICK, "--steps", "3", "--allow-unsupported-fit", "--fit", path, "--out", tmp_path / "b")
    refused(from_fit, "must lie below the first training loss")


@pytest.mark.adversarial("traceback")
@pytest.mark.parametrize("changes", [{"rho": 100, "f_star": -1e12}, {"delta_range": [1, 1e30]}],
                         ids=["rho100-fstar-1e12", "delta-range-1e30"])
def test_extreme_fit_json_values_train_without_raw_warnings(source, tmp_path, changes):
    path = fit_variant(source, tmp_path, **changes)
    result = invoke("train", *QUICK, "--steps", "5", "--allow-unsupported-fit", "--fit", path, "--out", tmp_path / "r")
    if result.exit_code == 2:
        refused(result)
    else:
        quiet(result)
        steps = load_run(tmp_path / "r").steps
        assert steps.lr.map(math.isfinite).all()


@pytest.mark.adversarial("traceback")
def test_report_on_a_non_latin_path_prints_no_raw_warning(source, tmp_path):
    run = tmp_path / "運行-🚀"
    shutil.copytree(source, run)
    quiet(invoke("report", run, "--out", tmp_path / "報告.html"))


@pytest.mark.adversarial("other")
def test_a_malicious_checkpoint_runs_no_code(run, tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    with open(run / "checkpoints" / "last.pt", "wb") as f:
        import pickle

        pickle.dump({"step": Evil()}, f)
    before = files(run)
    refused(invoke("train", "--resume", "--out", run, "--no-progress"), "cannot be read")
    assert not marker.exists() and files(run) == before


@pytest.mark.adversarial("other")
def test_report_escapes_every_string(source, tmp_path):
    label = "<script>alert(1)</script>"
    result = invoke("report", source, "--label", label, "--title", label, "--out", tmp_path / "r.html")
    quiet(result)
    assert label not in (tmp_path / "r.html").read_text()
