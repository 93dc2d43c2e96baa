"""The training loop: reproducibility, exact resume after SIGKILL, crash-safe store, NaN handling."""

import dataclasses
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from smoothprobe import SmoothprobeError, TrainConfig, load_run, train
from smoothprobe.smoothness import FStar
from smoothprobe.store import CHECKPOINT, read_run_info, read_table
from smoothprobe.train import PILOT_EVERY, build, pilot_moved

ROOT = Path(__file__).resolve().parents[1]
SMALL_MARKOV = ["--task", "markov", "--batch-size", "4", "--seq-len", "24", "--steps", "40",
                "--optimizer", "lion", "--lr", "1e-3", "--warmup", "0.2", "--eval-every", "20",
                "--checkpoint-every", "5", "--flush-every", "1", "--no-progress"]


def cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "smoothprobe.cli.main", "train", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_quadratic_sgd_trajectory_matches_closed_form(tmp_path):
    cfg = TrainConfig(task="quadratic", optimizer="sgd", lr=0.5, steps=5, schedule="constant",
                      clip=0.0, task_options={"cond": 10.0})
    trainer = build(cfg, tmp_path / "run")
    x = trainer.model().detach().clone()
    a, x_star = trainer.task.hessian, trainer.task.x_star
    trainer.run(progress=False)
    run = load_run(tmp_path / "run")
    # SGD with momentum 0.9 (the factory default): m <- 0.9 m + g, x <- x - lr m.
    m = torch.zeros_like(x)
    for step in range(5):
        d = x - x_star
        assert run.steps.loss[step] == pytest.approx(0.5 * float(d @ a @ d), rel=1e-5)
        m = 0.9 * m + a @ d
        x = x - 0.5 * m
    assert run.info["task"]["f_star"] == 0.0 and run.info["status"] == "finished"


def test_same_seed_same_losses_and_seed_matters(tmp_path):
    base = {"task": "markov", "batch_size": 4, "seq_len": 16, "steps": 6, "optimizer": "lion", "lr": 1e-3}
    a = load_run(train(TrainConfig(**base), tmp_path / "a", progress=False)).steps.loss
    b = load_run(train(TrainConfig(**base), tmp_path / "b", progress=False)).steps.loss
    c = load_run(train(TrainConfig(**base, seed=1), tmp_path / "c", progress=False)).steps.loss
    assert a.tolist() == b.tolist()
    assert a.tolist() != c.tolist()


def test_sigkill_leaves_readable_store_and_resume_matches_uninterrupted(tmp_path):
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    proc = cli(*SMALL_MARKOV, "--out", str(killed))
    steps_file = killed / "steps.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline:
        if steps_file.exists() and steps_file.read_text().count("\n") >= 13:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = load_run(killed)
    assert 13 <= len(partial.steps) < 40
    assert partial.info["status"] == "running" and partial.warnings
    refused = cli(*SMALL_MARKOV, "--out", str(killed))
    assert refused.wait() == 2 and "--resume" in refused.stderr.read()
    assert cli("--out", str(killed), "--resume", "--no-progress").wait() == 0
    assert cli(*SMALL_MARKOV, "--out", str(whole)).wait() == 0
    resumed, reference = load_run(killed), load_run(whole)
    assert resumed.steps.step.tolist() == list(range(40))
    np.testing.assert_array_equal(resumed.steps.loss, reference.steps.loss)
    np.testing.assert_array_equal(resumed.steps.lr, reference.steps.lr)
    np.testing.assert_array_equal(resumed.evals.val_loss, reference.evals.val_loss)


def test_nan_loss_stops_with_clear_error_and_keeps_rows(tmp_path):
    cfg = TrainConfig(task="quadratic", optimizer="sgd", lr=50.0, steps=500, clip=0.0,
                      schedule="constant", flush_every=1)
    with pytest.raises(SmoothprobeError, match="loss became"):
        train(cfg, tmp_path / "run", progress=False)
    run = load_run(tmp_path / "run")
    assert run.info["status"] == "diverged"
    assert not np.isfinite(run.steps.loss.iloc[-1])
    assert np.isfinite(run.steps.loss.iloc[:-1]).all() and len(run.steps) > 2


def test_gradient_accumulation_equals_the_big_batch(tmp_path):
    big = TrainConfig(task="markov", batch_size=8, seq_len=16, steps=1, clip=0.0)
    small = TrainConfig(task="markov", batch_size=4, seq_len=16, steps=1, clip=0.0, accum=2)
    t_big, t_small = build(big, tmp_path / "a"), build(small, tmp_path / "b")
    joined = torch.cat([t_small.task.train_batch(0, 0), t_small.task.train_batch(0, 1)])
    loss_small = t_small.accumulate([t_small.task.train_batch(0, m) for m in range(2)])
    loss_big = t_big.accumulate([joined])
    assert loss_small == pytest.approx(loss_big, rel=1e-5)
    for p, q in zip(t_small.model.parameters(), t_big.model.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6)


def test_bad_config_is_refused(tmp_path):
    with pytest.raises(SmoothprobeError, match="lr must be a finite number > 0"):
        train(TrainConfig(lr=-1.0), tmp_path / "x", progress=False)
    with pytest.raises(SmoothprobeError, match="unknown optimizer"):
        train(TrainConfig(optimizer="adam"), tmp_path / "x", progress=False)


def test_fit_driven_schedule_floors_at_min_lr_ratio_like_the_others(tmp_path):
    import json

    fit = {"constants": {"rho": 2.0, "K0": 2e-3, "K1": 0.7, "K_rho": 40.0}, "f_star": 1.25,
           "delta_range": [0.01, 3.0]}
    (tmp_path / "fit.json").write_text(json.dumps(fit))
    cfg = TrainConfig(task="markov", batch_size=4, seq_len=16, steps=4, optimizer="lion", lr=2e-3,
                      min_lr_ratio=0.2, adaptive={"fit": str(tmp_path / "fit.json")})
    trainer = build(cfg, tmp_path / "run")
    assert trainer.scheduler.lr == 2e-3 and trainer.scheduler.min_lr == pytest.approx(4e-4, rel=1e-12)


QUICK = ["--task", "quadratic", "--optimizer", "lion", "--lr", "0.01", "--no-progress"]


def invoke(*args: str):
    from click.testing import CliRunner
    from smoothprobe.cli.main import main

    return CliRunner().invoke(main, list(args))


def spend_cpu(pid: int, seconds: float, deadline: float) -> None:
    """Wait until process `pid` has used `seconds` more CPU time (wall time where /proc is absent),
    so a test that needs some training steps done gets them on a loaded machine too."""
    stat = Path(f"/proc/{pid}/stat")
    if not stat.exists():
        time.sleep(seconds)
        return

    def used() -> float:
        fields = stat.read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    start = used()
    while time.time() < deadline and used() - start < seconds:
        time.sleep(0.1)


def status(out: Path) -> tuple[str, str | None]:
    info = load_run(out).info
    return info["status"], info["status_reason"]


@pytest.mark.parametrize("sig, code, reason", [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "KeyboardInterrupt")])
def test_signal_flushes_rows_writes_status_and_exits_with_its_code(tmp_path, sig, code, reason):
    out = tmp_path / "run"
    proc = cli("--task", "markov", "--batch-size", "4", "--seq-len", "16", "--steps", "100000",
               "--flush-every", "100000", "--checkpoint-every", "100000", "--no-progress", "--out", str(out))
    deadline = time.time() + 120
    while time.time() < deadline and '"running"' not in ((out / "run.json").read_text() if (out / "run.json").exists() else ""):
        time.sleep(0.05)
    spend_cpu(proc.pid, 3.0, deadline)  # some steps, buffered (flush-every is huge), however loaded the machine
    proc.send_signal(sig)
    assert proc.wait(timeout=60) == code
    stderr = proc.stderr.read()
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1
    steps = load_run(out).steps
    assert len(steps) >= 1 and steps.step.tolist() == list(range(len(steps)))
    assert status(out) == ("interrupted", reason)
    assert not [p for p in out.rglob("*") if "tmp" in p.name]


def test_os_error_mid_run_closes_the_run_as_crashed_in_one_line(tmp_path, monkeypatch):
    import errno

    from smoothprobe.store import RunStore

    def full_disk(self, state):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(RunStore, "save_checkpoint", full_disk)
    out = tmp_path / "run"
    result = invoke("train", *QUICK, "--steps", "12", "--checkpoint-every", "7", "--flush-every", "100", "--out", str(out))
    assert result.exit_code == 2 and "disk full" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert load_run(out).steps.step.tolist() == list(range(7))  # every row up to the failure is flushed
    assert status(out) == ("crashed", "disk full")
    RunStore.open(out).close()  # the lock went with the failed run


def test_probe_on_non_finite_values_records_nan_and_training_goes_on(tmp_path):
    out = tmp_path / "run"
    result = invoke("record", "--task", "markov", "--optimizer", "lion", "--lr", "1e6", "--every", "1",
                    "--steps", "3", "--no-progress", "--out", str(out))
    assert result.exit_code == 0, result.output
    steps = load_run(out).steps
    assert steps.step.tolist() == list(range(3)) and status(out) == ("finished", None)
    assert steps.grad_dual_spectral.isna().any()  # the diverged steps' spectral norms are NaN, not an error


def test_heavy_probes_on_non_finite_values_record_nan(tmp_path):
    out = tmp_path / "run"
    result = invoke("record", "--task", "markov", "--optimizer", "lion", "--lr", "1e6", "--every", "1",
                    "--heavy-every", "1", "--preset", "full", "--steps", "3", "--no-progress", "--out", str(out))
    assert result.exit_code == 0 and status(out)[0] == "finished"
    steps = load_run(out).steps
    assert steps.step.tolist() == [0, 1, 2]
    later = steps.iloc[1:]  # after a step at lr 1e6 curvature is not finite: NaN or a probe error, never a crash
    for column in ("top_eig", "trace"):
        if column in later:
            assert not np.isfinite(later[column].astype(float)).all() or later.filter(like="_error").notna().any().any()


def test_resume_refuses_changed_flags_a_live_run_and_resume_with_overwrite(tmp_path):
    from smoothprobe.store import RunStore

    out = tmp_path / "run"
    assert invoke("train", *QUICK, "--steps", "10", "--checkpoint-every", "5", "--out", str(out)).exit_code == 0
    before = (out / "steps.jsonl").read_text()
    changed = invoke("train", "--out", str(out), "--resume", "--lr", "0.02", "--optimizer", "lion", "--warmup", "0.1")
    assert changed.exit_code == 2 and "--lr, --warmup differ" in changed.output and "--optimizer" not in changed.output
    both = invoke("train", "--out", str(out), "--resume", "--overwrite")
    assert both.exit_code == 2 and "exclude each other" in both.output
    holder = RunStore.open(out)  # a live writer
    for args in (["--resume"], ["--overwrite", *QUICK]):
        live = invoke("train", "--out", str(out), *args)
        assert live.exit_code == 2 and f"pid {os.getpid()}" in live.output
    holder.close()
    assert (out / "steps.jsonl").read_text() == before
    extended = invoke("train", "--out", str(out), "--resume", "--steps", "15", "--lr", "0.01", "--no-progress")
    assert extended.exit_code == 0, extended.output
    run = load_run(out)
    assert run.steps.step.tolist() == list(range(15)) and run.config["steps"] == 15
    shorter = invoke("train", "--out", str(out), "--resume", "--steps", "12")
    assert shorter.exit_code == 2 and "--steps must be at least the run's 15" in shorter.output


def test_resume_refuses_a_changed_probe_option(tmp_path):
    out = tmp_path / "run"
    first = invoke("record", *QUICK, "--steps", "10", "--checkpoint-every", "5", "--probes", "norms,secant,curv_fd",
                   "--probe-option", "curv_fd.central=true", "--out", str(out))
    assert first.exit_code == 0, first.output
    changed = invoke("record", "--out", str(out), "--resume", "--probes", "norms,secant,curv_fd", "--probe-option",
                     "curv_fd.central=false")
    assert changed.exit_code == 2 and "--probe-option differ" in changed.output, changed.output


def test_resume_in_the_library_refuses_to_add_probes_to_a_run_trained_without_them(tmp_path):
    """The refusal is `resumed_config`'s, so `train(..., resume=True)` gives it as the CLI's `record --resume` does."""
    from smoothprobe.config import ProbeConfig

    config = TrainConfig(task="quadratic", steps=4)
    train(config, tmp_path / "t", progress=False)
    with pytest.raises(SmoothprobeError, match="trained without probes"):
        train(dataclasses.replace(config, steps=6, probes=ProbeConfig()), tmp_path / "t", resume=True, progress=False)


def test_resume_refuses_rows_missing_before_the_checkpoint_and_checkpoints_that_do_not_fit(tmp_path):
    out = tmp_path / "run"
    assert invoke("train", *QUICK, "--steps", "10", "--checkpoint-every", "5", "--out", str(out)).exit_code == 0
    rows = (out / "steps.jsonl").read_text()
    (out / "steps.jsonl").write_text("")
    emptied = invoke("train", "--out", str(out), "--resume")
    assert emptied.exit_code == 2 and "lacks 10 of the 10 rows before the checkpoint" in emptied.output
    (out / "steps.jsonl").write_text(rows)
    checkpoint = out / "checkpoints" / "last.pt"
    state = torch.load(checkpoint, weights_only=True)
    for broken, message in [({k: v for k, v in state.items() if k != "optimizer"}, "lacks optimizer"),
                            ({**state, "model": {k: v[:1] for k, v in state["model"].items()}}, "does not fit this run"),
                            ({**state, "step": "7"}, "step must be an integer")]:
        torch.save(broken, checkpoint)
        result = invoke("train", "--out", str(out), "--resume")
        assert result.exit_code == 2 and message in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    checkpoint.write_bytes(b"\x80junk")
    corrupt = invoke("train", "--out", str(out), "--resume")
    assert corrupt.exit_code == 2 and "cannot be read" in corrupt.output
    assert len(corrupt.output.strip().splitlines()) == 1
    assert (out / "steps.jsonl").read_text() == rows  # nothing was rewritten


def test_refit_status_survives_a_resume(tmp_path):
    cfg = TrainConfig(task="quadratic", optimizer="normsgd", lr=0.05, steps=30, checkpoint_every=30,
                      probes={"preset": "standard", "every": 1}, adaptive={"refit_every": 10})
    trainer = build(cfg, tmp_path / "run")
    trainer.run(progress=False)
    last = load_run(tmp_path / "run").steps.refit_status.iloc[-1]
    assert torch.load(tmp_path / "run" / CHECKPOINT, weights_only=True)["refit"] == {"status": last}
    resumed = build(dataclasses.replace(cfg, steps=31), tmp_path / "run", resume=True)
    assert resumed.refit.status == last and resumed.start_step == 30
    resumed.writer.store.close()


@pytest.mark.parametrize("window_test, own_peak, tested", [(None, False, True), (False, False, False),
                                                           (None, True, False)])
def test_a_pilot_runs_the_window_test_by_default_and_not_when_turned_off_or_measuring_its_peak(
        tmp_path, window_test, own_peak, tested):
    cfg = TrainConfig(task="quadratic", steps=600, adaptive={"pilot": 0.1, "window_test": window_test,
                                                             "own_peak": own_peak})
    trainer = build(cfg, tmp_path / "run")
    assert trainer.pilot.window_test is tested
    trainer.writer.close("interrupted", "the test reads the pilot only")


def test_a_window_test_stored_off_where_it_acted_on_nothing_reads_as_the_default_and_a_resume_may_name_it(tmp_path):
    """run.json written while the window test was off by default stores False on every adaptive run: without a
    pilot (or with own_peak) that acted on nothing and reads as None; with a pilot it ran the fits alone and
    stays False. A resume that asks for the test as the stored run ran it is no change."""
    from smoothprobe.train import resumed_config

    old = dataclasses.asdict(TrainConfig(adaptive={"div": 5.0}))
    old["adaptive"]["window_test"] = False
    assert TrainConfig.from_dict(old).adaptive.window_test is None and old["adaptive"]["window_test"] is False
    piloted = dataclasses.asdict(TrainConfig(steps=600, adaptive={"pilot": 0.1, "window_test": False}))
    assert TrainConfig.from_dict(piloted).adaptive.window_test is False
    asked_on = {**piloted, "adaptive": {**piloted["adaptive"], "window_test": True}}  # the benchmark's stored form
    assert TrainConfig.from_dict(asked_on) == TrainConfig(steps=600, adaptive={"pilot": 0.1})
    cfg = TrainConfig(task="quadratic", steps=600, adaptive={"pilot": 0.1})
    build(cfg, tmp_path / "run").writer.close("interrupted", "the test reads the stored config only")
    asked = dataclasses.replace(cfg, adaptive={"pilot": 0.1, "window_test": True})
    given = {"adaptive.pilot": "pilot", "adaptive.window_test": "window_test"}
    assert resumed_config(tmp_path / "run", asked, given).adaptive.window_tested
    off = dataclasses.replace(cfg, adaptive={"pilot": 0.1, "window_test": False})
    with pytest.raises(SmoothprobeError, match="window_test differ"):
        resumed_config(tmp_path / "run", off, given)


@pytest.mark.parametrize("flag", ["--f-star", "--delta-peak"])
def test_adaptive_gap_beyond_the_first_loss_is_refused_before_the_directory_exists(tmp_path, flag):
    result = invoke("train", *QUICK, "--steps", "5", "--adaptive", flag, "1e9", "--out", str(tmp_path / "run"))
    assert result.exit_code == 2 and f"{flag} must lie below the first" in result.output
    assert not (tmp_path / "run").exists()


def test_the_pilot_fits_with_the_runs_known_f_star_and_estimates_only_under_auto(tmp_path):
    """The task's exact f* (quadratic: 0), or a given number, reaches the pilot's fits; auto does not."""
    for f_star, expected in ((None, FStar(0.0, "task")), (1.5, FStar(1.5)), ("auto", FStar(None, "auto"))):
        cfg = TrainConfig(task="quadratic", optimizer="normsgd", steps=100, adaptive={"pilot": 0.5, "f_star": f_star})
        assert build(cfg, tmp_path / f"run-{f_star}").pilot.f_star == expected


def test_a_pilot_decision_fixes_f_star_stops_its_probes_and_is_stored(tmp_path):
    # the fit's constants are fitted to Δ from its own f*: online f* estimates stop at the decision
    cfg = TrainConfig(task="quadratic", optimizer="normsgd", steps=100,
                      adaptive={"pilot": 0.5, "f_star": "auto", "cooldown": 0.2})
    trainer = build(cfg, tmp_path / "run")
    assert trainer.online is not None and trainer.scheduler.cooldown == 20 and trainer.pilot_recorder
    trainer.pilot.decision = {"branch": "no-warmup", "step": 3, "by": "step test"}
    pilot_moved(trainer, closed=False)  # the step test decides without a fit: the online f* goes on
    assert trainer.online is not None
    trainer.pilot.decision = None
    pilot_moved(trainer, closed=False)  # the window ended undecided: probes thin to a fixed interval
    assert trainer.recorder.cadence.every == PILOT_EVERY and trainer.recorder.cadence.overhead is None
    assert read_run_info(tmp_path / "run")["pilot"]["probe_every"] == PILOT_EVERY
    assert trainer.online is not None
    trainer.pilot.status, trainer.pilot.decision = "no-warmup", {"branch": "no-warmup", "step": 60}
    pilot_moved(trainer, closed=True)
    assert trainer.online is None and trainer.recorder is None
    info = read_run_info(tmp_path / "run")
    assert info["decision"] == {"branch": "no-warmup", "step": 60} and info["pilot"]["probe_every"] is None
    trainer.writer.store.close()


def test_run_json_keeps_every_refit_of_the_pilot_as_the_run_goes(tmp_path):
    cfg = TrainConfig(task="quadratic", optimizer="normsgd", steps=120, eval_every=60,
                      adaptive={"pilot": 0.5, "f_star": "auto"})
    trainer = build(cfg, tmp_path / "run")
    trainer.run(progress=False)
    info = read_run_info(tmp_path / "run")
    history = info["pilot"]["history"]
    assert history and history == trainer.pilot.history and len(history) == trainer.pilot.refits
    assert history[0]["step"] == 49 and all(d["by"] == "fit" for d in history)  # the first refit: 50 probed rows
    assert info["decision"]["refits"] == len(history)
    assert all(r["update_norm"] > 0 for r in trainer.pilot.rows)  # the settling guard reads it at every step
    rows, _ = read_table(tmp_path / "run" / "steps.jsonl")
    assert {r["step"] for r in rows if r.get("pilot_status")} >= {d["step"] for d in history}


def test_own_peak_runs_at_the_median_best_step_its_window_measured(tmp_path):
    cfg = TrainConfig(task="quadratic", optimizer="normsgd", steps=80, eval_every=80,
                      adaptive={"pilot": 50, "f_star": 0.0, "own_peak": True})
    trainer = build(cfg, tmp_path / "run")
    trainer.run(progress=False)
    info = read_run_info(tmp_path / "run")
    peak, closed = info["pilot"]["peak_lr"], info["decision"]["step"]  # the warm-up's end closed the pilot
    rows, _ = read_table(tmp_path / "run" / "steps.jsonl")
    measured = [r for r in rows if r["step"] < min(closed, 50)]
    best = [0.0 if r["secant_slope"] <= 0 else math.inf if r["secant_curv"] <= 0 else
            r["lr"] * r["secant_slope"] / r["secant_curv"] for r in measured]  # decision._best_lr's rule
    assert peak == pytest.approx(float(np.median(best)), rel=1e-9) and peak != cfg.peak_lr
    assert trainer.scheduler.lr == pytest.approx(peak)
    assert all(r["lr"] <= peak * (1 + 1e-9) for r in rows if r["step"] > closed)


def test_a_config_stored_before_cooldown_existed_resumes_without_one():
    stored = dataclasses.asdict(TrainConfig(task="quadratic", adaptive={"f_star": 0.0}))
    del stored["adaptive"]["cooldown"]
    assert TrainConfig.from_dict(stored).adaptive.cooldown is None
    assert TrainConfig.from_dict(dataclasses.asdict(TrainConfig(adaptive={}))).adaptive.cooldown == 0.2


@pytest.mark.parametrize("args, words", [
    (["--task", "quadratic", "--hvp-chunks", "2"], "--hvp-chunks=2 splits a batch into row pieces, but a quadratic batch"),
    (["--task", "markov", "--batch-size", "2", "--hvp-chunks", "4"], "--hvp-chunks=4 exceeds the batch's 2 rows"),
])
def test_hvp_chunks_a_batch_cannot_take_are_refused_before_the_run_directory_exists(tmp_path, args, words):
    result = invoke("record", *args, "--preset", "full", "--steps", "3", "--out", str(tmp_path / "run"))
    assert result.exit_code == 2 and words in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


def test_trial_steps_leave_parameters_optimizer_state_and_rng_where_they_were(tmp_path):
    cfg = TrainConfig(task="quadratic", optimizer="adamw", lr=0.05, steps=10, clip=0.0, schedule="constant",
                      warmup=0.0)
    trainer = build(cfg, tmp_path / "run")
    for step in range(2):  # AdamW now holds moments and a step count
        trainer.step(step)
    trainer.start_step = 2
    x, state, rng = trainer.model().detach().clone(), trainer.optimizer.state_dict(), torch.get_rng_state()
    moments = {k: v.clone() for k, v in state["state"][0].items()}
    groups = [dict(g, params=None) for g in trainer.optimizer.param_groups]
    rows = trainer.trial_rows(3)
    assert [r["step"] for r in rows] == [2, 3, 4] and all(r["lr"] == 0.05 for r in rows)
    assert torch.equal(trainer.model().detach(), x) and torch.equal(torch.get_rng_state(), rng)
    assert all(p.grad is None for p in trainer.model.parameters())
    assert [dict(g, params=None) for g in trainer.optimizer.param_groups] == groups
    after = trainer.optimizer.state_dict()["state"][0]
    assert after.keys() == moments.keys() and all(torch.equal(after[k], v) for k, v in moments.items())
    trainer.writer.store.close()


@pytest.mark.parametrize("factor, passes", [(1.999, True), (2.001, False)])
def test_the_step_test_reads_undone_trial_steps_against_the_exact_line_search_step(tmp_path, factor, passes):
    """f = ½dᵀAd with d = x − x*; SGD's first step from x0 is −η·g, so each trial step's best LR along
    it (lr·slope/curvature) is the exact line-search step gᵀg/gᵀAg, and the test passes up to twice
    it. A peak just below that skips the warm-up before step 0, and step 1's loss is that of one
    gradient step at the peak from x0 (the trial steps left no trace); just above it the practical
    start (lr/10) runs."""
    probe = build(TrainConfig(task="quadratic", steps=80), tmp_path / "probe")
    a, d = probe.task.hessian, probe.model().detach() - probe.task.x_star
    probe.writer.store.close()
    g = a @ d
    exact = float(g @ g / (g @ a @ g))
    lr = factor * exact
    cfg = TrainConfig(task="quadratic", optimizer="sgd", lr=lr, steps=80, clip=0.0, weight_decay=0.0,
                      adaptive={"pilot": 50, "f_star": 0.0, "step_test": True})
    trainer = build(cfg, tmp_path / "run")
    trainer.run(progress=False)
    info = read_run_info(tmp_path / "run")
    test = info["pilot"]["history"][0]
    assert test["by"] == "step test" and test["step"] == 0 and len(test["trial"]) == 3
    assert all(r["lr"] * r["secant_slope"] / r["secant_curv"] == pytest.approx(exact, rel=1e-6)
               for r in test["trial"])
    steps = load_run(tmp_path / "run").steps
    if passes:
        assert info["decision"] == test and test["branch"] == "no-warmup"
        assert steps.lr[0] == pytest.approx(lr, rel=1e-9)
        d1 = d - lr * g
        assert steps.loss[1] == pytest.approx(0.5 * float(d1 @ a @ d1), rel=1e-6)
    else:
        assert test["branch"] == "not yet" and steps.lr[0] == pytest.approx(lr / 10, rel=1e-6)


@pytest.mark.parametrize("lr, passes", [(0.004, True), (0.05, False)])
def test_the_progress_test_reads_the_runs_own_start_undone_and_skips_the_warm_up_where_it_is_slow(tmp_path, lr, passes):
    """--progress-test on the quadratic (SGD): its trial steps are the run's own first steps under the
    practical schedule (the same losses, bit for bit, where the test asks for a warm-up), undone before
    step 0; where the loss falls by less than PROGRESS_DROP over them, step 0 runs at the peak, and step
    1's loss is that of one gradient step at the peak from x0 (the trial left no trace)."""
    from smoothprobe.schedule.decision import PROGRESS_DROP, PROGRESS_STEPS

    cfg = TrainConfig(task="quadratic", optimizer="sgd", lr=lr, steps=80, clip=0.0, weight_decay=0.0,
                      adaptive={"pilot": 50, "f_star": 0.0, "progress_test": True})
    trainer = build(cfg, tmp_path / "run")
    a, d = trainer.task.hessian, trainer.model().detach() - trainer.task.x_star
    trainer.run(progress=False)
    info = read_run_info(tmp_path / "run")
    test = info["pilot"]["history"][0]
    trial = test["trial"]
    assert test["by"] == "progress test" and test["step"] == 0 and trial["steps"] == PROGRESS_STEPS
    drop = (np.mean(trial["first"]) - np.mean(trial["last"])) / np.mean(trial["first"])
    assert bool(drop < PROGRESS_DROP) is passes and (test["branch"] == "no-warmup") is passes
    steps = load_run(tmp_path / "run").steps
    if passes:
        assert info["decision"] == test and steps.lr[0] == pytest.approx(lr, rel=1e-9)
        d1 = d - lr * (a @ d)
        assert steps.loss[1] == pytest.approx(0.5 * float(d1 @ a @ d1), rel=1e-6)
    else:  # the run took the trial's steps again
        assert steps.lr[0] == pytest.approx(lr / 10, rel=1e-6)
        assert steps.loss[:5].tolist() == trial["first"] and steps.loss[45:50].tolist() == trial["last"]


def test_a_progress_test_that_asks_for_a_warm_up_leaves_the_run_as_it_was_without_it(tmp_path):
    """SGD with momentum on the quadratic at 10× the exact line-search step (so the step test asks for a
    warm-up), f* auto, re-estimated every 10 steps (inside the 50 trial steps): with --progress-test
    also saying "a warm-up is needed", every step's loss and LR and every evaluation are those of the
    same run without it, bit for bit; run.json keeps both tests' verdicts, the step test's first."""
    probe = build(TrainConfig(task="quadratic", steps=100), tmp_path / "probe")
    a, d = probe.task.hessian, probe.model().detach() - probe.task.x_star
    probe.writer.store.close()
    g = a @ d
    common = {"task": "quadratic", "optimizer": "sgd", "lr": 10 * float(g @ g / (g @ a @ g)), "steps": 100,
              "eval_every": 50, "clip": 0.0, "weight_decay": 0.0}
    runs = {}
    for flag in (False, True):
        cfg = TrainConfig(**common, adaptive={"pilot": 50, "f_star": "auto", "f_star_every": 10, "step_test": True,
                                              "progress_test": flag})
        runs[flag] = train(cfg, tmp_path / str(flag), progress=False)
    with_test, without = load_run(runs[True]), load_run(runs[False])
    history = with_test.info["pilot"]["history"]
    assert [h["by"] for h in history[:2]] == ["step test", "progress test"]
    assert history[0]["branch"] == history[1]["branch"] == "not yet"
    for column in ("loss", "lr"):
        assert with_test.steps[column].tolist() == without.steps[column].tolist()
    assert with_test.evals.val_loss.tolist() == without.evals.val_loss.tolist()


def test_trial_steps_replay_their_own_dropout_so_identical_trials_read_identically(tmp_path, monkeypatch):
    """Dropout on the quadratic's d: every trial starts from x0 with the RNG rewound, so the three
    trials draw the same mask, and the secant probe must replay that mask each time: three identical
    slopes and curvatures (a Recorder that kept the RNG of the first trial read other masks after it)."""
    cfg = TrainConfig(task="quadratic", optimizer="normsgd", lr=0.05, steps=10, clip=0.0, schedule="constant",
                      warmup=0.0)
    trainer = build(cfg, tmp_path / "run")
    a, x_star = trainer.task.hessian, trainer.task.x_star

    def dropped(model, batch):
        d = torch.nn.functional.dropout(model() - x_star, p=0.5, training=True)
        return 0.5 * d @ (a @ d)

    monkeypatch.setattr(trainer.task, "loss", dropped)
    rows = trainer.trial_rows(3)
    for key in ("secant_slope", "secant_curv"):
        assert rows[1][key] == pytest.approx(rows[0][key], rel=1e-12)
        assert rows[2][key] == pytest.approx(rows[0][key], rel=1e-12)
    trainer.writer.store.close()


@pytest.mark.parametrize("adaptive", [None, {"f_star": 0.0, "delta_peak": 1.0}])
def test_a_resume_that_extends_the_run_continues_under_the_longer_runs_schedule(tmp_path, adaptive):
    """A 40-step run extended to 80 by --resume: the schedule's length (and the adaptive cool-down, a fifth
    of it) is the longer run's, so the baseline cosine runs the 80-step run's LRs from the step after
    the resume, lr·(0.1 + 0.9·(1 + cos(π t/80))/2), instead of holding the 40-step run's floor."""
    base = TrainConfig(task="quadratic", optimizer="normsgd", lr=0.05, steps=40, checkpoint_every=10,
                       adaptive=adaptive)
    train(base, tmp_path / "run", progress=False)
    trainer = build(dataclasses.replace(base, steps=80), tmp_path / "run", resume=True)
    assert trainer.start_step == 40 and trainer.scheduler.total_steps == 80
    if adaptive is not None:
        assert trainer.scheduler.cooldown == 16
        return
    trainer.run(progress=False)
    lrs = load_run(tmp_path / "run").steps.lr.tolist()
    want = [0.05 * (0.1 + 0.9 * (1 + math.cos(math.pi * t / 80)) / 2) for t in range(41, 80)]
    assert lrs[41:] == pytest.approx(want, rel=1e-9) and lrs[40] == pytest.approx(0.005, rel=1e-9)
