"""torchrun with 2 gloo processes: same losses and LRs as one process with the same global batch."""

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from smoothprobe import load_run
from smoothprobe.distributed import all_reduce_mean, gather_floats, world_size

ROOT = Path(__file__).resolve().parents[1]
COMMON = ["record", "--task", "markov", "--batch-size", "4", "--seq-len", "16", "--steps", "8",
          "--optimizer", "lion", "--lr", "1e-3", "--adaptive", "--eval-every", "4", "--every", "2",
          "--no-progress"]


def test_collectives_are_identities_without_a_process_group():
    import torch

    value = torch.tensor(2.5)
    assert all_reduce_mean(value) is value and world_size() == 1
    assert gather_floats([1.0, 2.0]).tolist() == [[1.0, 2.0]]


@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun is not on PATH")
def test_two_ranks_match_one_process_with_the_same_global_batch(tmp_path):
    two, one = tmp_path / "two", tmp_path / "one"
    ddp = subprocess.run(["torchrun", "--nproc-per-node", "2", "-m", "smoothprobe.cli.main", *COMMON,
                          "--out", str(two)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-2000:]
    assert ddp.stdout.count("run written") == 1  # only rank 0 reports (and writes)
    single = subprocess.run([sys.executable, "-m", "smoothprobe.cli.main", *COMMON, "--accum", "2",
                             "--out", str(one)], cwd=ROOT, capture_output=True, text=True, timeout=300)
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
