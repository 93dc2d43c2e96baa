"""torchrun with 2 gloo processes (DDP and FSDP2): same losses, LRs and probes as one process with
the same global batch, and exact resume of a sharded run after SIGKILL."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from smoothprobe import load_run
from smoothprobe.distributed import all_reduce_mean, full, gather_floats, global_norm, world_size

ROOT = Path(__file__).resolve().parents[1]
COMMON = ["record", "--task", "markov", "--batch-size", "4", "--seq-len", "16", "--steps", "8",
          "--optimizer", "lion", "--lr", "1e-3", "--adaptive", "--eval-every", "4", "--every", "2",
          "--no-progress"]


TORCHRUN = ["torchrun", "--standalone", "--nproc-per-node", "2", "-m", "smoothprobe.cli.main"]  # a free port each
FSDP = ["record", "--task", "markov", "--batch-size", "4", "--seq-len", "16", "--adaptive", "--eval-every", "4",
        "--every", "2", "--probes", "norms,secant,curv_fd", "--no-progress"]
needs_torchrun = pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun is not on PATH")


def run(*args: str, launcher: list[str] = TORCHRUN) -> subprocess.CompletedProcess:
    return subprocess.run([*launcher, *args], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)


def test_collectives_are_identities_without_a_process_group():
    import torch

    value = torch.tensor(2.5)
    assert all_reduce_mean(value) is value and world_size() == 1
    assert gather_floats([1.0, 2.0]).tolist() == [[1.0, 2.0]]


def test_unsharded_helpers_are_plain_tensor_operations():
    import torch

    tensors = [torch.tensor([3.0, 0.0]), torch.tensor([[4.0]])]
    assert global_norm(tensors) == pytest.approx(5.0) and global_norm([]) == 0.0
    assert full(tensors[1]) is tensors[1]


@needs_torchrun
def test_two_ranks_match_one_process_with_the_same_global_batch(tmp_path):
    two, one = tmp_path / "two", tmp_path / "one"
    ddp = run(*COMMON, "--out", str(two))
    assert ddp.returncode == 0, ddp.stderr[-2000:]
    assert ddp.stdout.count("run written") == 1  # only rank 0 reports (and writes)
    single = run(*COMMON, "--accum", "2", "--out", str(one), launcher=[sys.executable, "-m", "smoothprobe.cli.main"])
    assert single.returncode == 0, single.stderr[-2000:]
    a, b = load_run(two), load_run(one)
    assert a.info["world_size"] == 2 and a.info["status"] == "finished" and not a.warnings
    assert a.steps.step.tolist() == list(range(8))
    assert (a.steps.lr_rank_spread == 0).all()  # every rank ran at the same lr, bit for bit
    np.testing.assert_allclose(a.steps.loss, b.steps.loss, rtol=1e-5)
    np.testing.assert_allclose(a.steps.lr, b.steps.lr, rtol=1e-5)
    np.testing.assert_allclose(a.evals.val_loss, b.evals.val_loss, rtol=1e-5)
    probed = a.steps.dropna(subset=["secant_K"])
    np.testing.assert_allclose(probed.secant_K, b.steps.dropna(subset=["secant_K"]).secant_K, rtol=1e-3)
    np.testing.assert_allclose(probed.loss_after, b.steps.dropna(subset=["secant_K"]).loss_after, rtol=1e-5)


@needs_torchrun
def test_the_step_test_reads_the_same_trial_steps_on_two_ranks_as_on_one_process(tmp_path):
    """--step-test's trial steps under DDP: the same slopes, curvatures and verdict as one process with the
    same global batch, and the run after them is that process's run (the trials were undone on every rank)."""
    two, one = tmp_path / "two", tmp_path / "one"
    args = ["train", "--task", "markov", "--batch-size", "4", "--seq-len", "16", "--steps", "52", "--pilot", "50",
            "--optimizer", "lion", "--lr", "3e-4", "--step-test", "--eval-every", "52", "--no-progress"]
    ddp = run(*args, "--out", str(two))
    assert ddp.returncode == 0, ddp.stderr[-2000:]
    single = run(*args, "--accum", "2", "--out", str(one), launcher=[sys.executable, "-m", "smoothprobe.cli.main"])
    assert single.returncode == 0, single.stderr[-2000:]
    a, b = load_run(two), load_run(one)
    test_a, test_b = a.info["pilot"]["history"][0], b.info["pilot"]["history"][0]
    assert test_a["by"] == "step test" and test_a["branch"] == test_b["branch"] == "no-warmup"
    for key in ("secant_slope", "secant_curv", "loss"):
        np.testing.assert_allclose([r[key] for r in test_a["trial"]], [r[key] for r in test_b["trial"]], rtol=1e-4)
    np.testing.assert_allclose(a.steps.loss, b.steps.loss, rtol=1e-5)
    assert a.steps.lr[0] == pytest.approx(3e-4)
    assert a.steps.loss[0] == pytest.approx(test_a["trial"][0]["loss"], rel=1e-7)  # step 0 starts where trial 0 did


# Muon's Newton-Schulz runs in bf16, where the sharded matmuls' summation order shows at ~1e-3.
@needs_torchrun
@pytest.mark.parametrize(("optimizer", "accum", "rtol"), [
    ("normsgd", 2, 1e-5), pytest.param("muon", 1, 5e-3, marks=pytest.mark.slow)])
def test_fsdp_two_ranks_match_one_process_with_the_same_global_batch(tmp_path, optimizer, accum, rtol):
    two, one = tmp_path / "two", tmp_path / "one"
    common = [*FSDP, "--steps", "8", "--optimizer", optimizer]
    sharded = run(*common, "--fsdp", "--accum", str(accum), "--out", str(two))
    assert sharded.returncode == 0, sharded.stderr[-8000:]
    single = run(*common, "--accum", str(2 * accum), "--out", str(one),
                 launcher=[sys.executable, "-m", "smoothprobe.cli.main"])
    assert single.returncode == 0, single.stderr[-2000:]
    a, b = load_run(two), load_run(one)
    assert a.info["config"]["fsdp"] and a.info["world_size"] == 2 and a.info["status"] == "finished"
    assert (a.steps.lr_rank_spread == 0).all()  # the ranks agree bit for bit; one process differs by
    np.testing.assert_allclose(a.steps.lr, b.steps.lr, rtol=1e-6)  # the loss's summation order only
    probed = a.steps.secant_K.notna()
    assert probed.tolist() == b.steps.secant_K.notna().tolist() and probed.sum() == 4
    for column in ("loss", "grad_norm", "update_norm", "secant_K", "loss_after", "curv_fd", "grad_dual_sign"):
        np.testing.assert_allclose(a.steps[column], b.steps[column], rtol=rtol, err_msg=column)
    np.testing.assert_allclose(a.evals.val_loss, b.evals.val_loss, rtol=rtol)
    # the per-tensor table covers the same tensors, gathered whole (global shapes, not shards)
    assert sorted(set(a.tensors.tensor)) == sorted(set(b.tensors.tensor))


@needs_torchrun
@pytest.mark.slow
def test_fsdp_resume_after_sigkill_matches_the_uninterrupted_run(tmp_path):
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    common = [*FSDP, "--steps", "30", "--optimizer", "normsgd", "--checkpoint-every", "5", "--flush-every", "1",
              "--fsdp"]
    proc = subprocess.Popen([*TORCHRUN, *common, "--out", str(killed)], cwd=ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    steps_file, deadline = killed / "steps.jsonl", time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        if steps_file.exists() and steps_file.read_text().count("\n") >= 13:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # torchrun and both ranks
    proc.wait()
    assert 13 <= len(load_run(killed).steps) < 30
    resumed = run("record", "--out", str(killed), "--resume", "--no-progress")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert run(*common, "--out", str(whole)).returncode == 0
    a, b = load_run(killed), load_run(whole)
    assert a.steps.step.tolist() == list(range(30)) and a.info["status"] == "finished"
    for column in ("loss", "lr", "secant_K", "curv_fd"):
        np.testing.assert_array_equal(a.steps[column], b.steps[column], err_msg=column)
    np.testing.assert_array_equal(a.evals.val_loss, b.evals.val_loss)


def test_fsdp_without_torchrun_is_a_one_line_error(tmp_path):
    single = run("train", "--fsdp", "--steps", "1", "--out", str(tmp_path / "r"),
                 launcher=[sys.executable, "-m", "smoothprobe.cli.main"])
    assert single.returncode == 2 and "torchrun" in single.stderr and "Traceback" not in single.stderr
    assert not (tmp_path / "r").exists()


@needs_torchrun
def test_fsdp_refuses_exact_hvp_probes_before_writing(tmp_path):
    refused = run("record", "--fsdp", "--preset", "full", "--steps", "1", "--out", str(tmp_path / "r"))
    assert refused.returncode != 0 and "Hessian-vector" in refused.stderr
    assert not (tmp_path / "r").exists()
