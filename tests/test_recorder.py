"""The Recorder: probes match closed forms inside a loop, change nothing, and keep to their cadence."""

import math

import numpy as np
import pytest
import torch

from smoothprobe import Recorder, SmoothprobeError, TrainConfig, load_run, train
from smoothprobe.config import ProbeConfig
from smoothprobe.probes.recorder import Cadence
from smoothprobe.tasks.quadratic import QuadraticTask


def quadratic_loop(tmp_path, clip: float, steps: int = 6):
    task = QuadraticTask(dtype=torch.float64, cond=30.0, noise=0.3)
    model = task.build_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.3, momentum=0.5)
    rec = Recorder(model, opt, tmp_path / "run", loss_fn=task.loss, probes=["secant", "curv_fd", "curv_hvp"],
                   every=1)
    updates = []
    for step in range(steps):
        batch = task.train_batch(step)
        loss = task.loss(model, batch)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        rec.before_step(step, batch, loss=loss.item(), grad_norm=norm.item())
        before = model().detach().clone()
        opt.step()
        opt.zero_grad()
        rec.after_step()
        updates.append(model().detach() - before)
    rec.close()
    return task, updates, load_run(tmp_path / "run")


@pytest.mark.parametrize("clip", [1e9, 0.05])
def test_secant_and_curvature_in_a_user_loop_match_the_hessian(tmp_path, clip):
    task, updates, run = quadratic_loop(tmp_path, clip)
    a = task.hessian
    for step, d in enumerate(updates):
        row = run.steps.iloc[step]
        assert row.secant_K_euclid == pytest.approx((a @ d).norm().item() / d.norm().item(), rel=1e-7)
        assert row.curv_hvp == pytest.approx(float(d @ a @ d / (d @ d)), rel=1e-9)
        assert row.curv_fd == pytest.approx(float(d @ a @ d / (d @ d)), rel=1e-5)
        assert row.loss_after == pytest.approx(task.loss(model_at(task, d, updates, step), task.train_batch(step)).item())


def model_at(task, _d, updates, step):
    """The quadratic model at x_{step+1}, rebuilt from x0 and the recorded updates."""
    model = task.build_model()
    x = model().detach() + sum(updates[: step + 1])
    offset = 0
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(x[offset : offset + p.numel()].view_as(p))
            offset += p.numel()
    return model


def test_probing_does_not_change_training_bit_for_bit(tmp_path):
    base = {"task": "markov", "batch_size": 4, "seq_len": 16, "steps": 6, "optimizer": "lion", "lr": 1e-3,
                "eval_every": 3}
    plain = load_run(train(TrainConfig(**base), tmp_path / "plain", progress=False))
    probed = load_run(train(TrainConfig(**base, probes={"preset": "full", "every": 2, "heavy_every": 1}),
                            tmp_path / "probed", progress=False))
    np.testing.assert_array_equal(plain.steps.loss, probed.steps.loss)
    np.testing.assert_array_equal(plain.evals.val_loss, probed.evals.val_loss)
    probed_rows = probed.steps.dropna(subset=["secant_K"])
    assert probed_rows.step.tolist() == [0, 2, 4]
    assert probed_rows[["curv_fd", "curv_hvp", "top_eig", "bottom_eig", "hessian_norm", "trace",
                        "curv_dual"]].notna().all().all()
    assert (probed_rows.probe_time_s > 0).all()
    assert set(probed.tensors.tensor) >= {"embed.weight"} and probed.info["probes"]["family"] == "sign"


def test_muon_geometry_covers_only_muon_matrices(tmp_path):
    cfg = TrainConfig(task="markov", batch_size=2, seq_len=8, steps=1, optimizer="muon",
                      probes={"preset": "standard"})
    run = load_run(train(cfg, tmp_path / "m", progress=False))
    names = run.info["probes"]["tensors"]
    assert run.info["probes"]["family"] == "spectral"
    assert names == run.info["optimizer"]["split"]["muon"] and "embed.weight" not in names
    assert np.isfinite(run.steps.secant_K[0]) and run.steps.secant_K[0] > 0


def test_overhead_budget_sets_the_interval():
    cadence = Cadence(every=10, overhead=0.1)
    cadence.update(step=0, probe_seconds=0.5, step_seconds=0.1)
    assert cadence.next_step == 50  # 0.5 s of probing every 50 × 0.1 s steps is 10 %
    fixed = Cadence(every=7)
    fixed.update(step=3, probe_seconds=9.0, step_seconds=0.1)
    assert fixed.next_step == 10


def test_bad_recorder_options_are_clear_errors(tmp_path):
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(SmoothprobeError, match="unknown preset"):
        Recorder(model, opt, loss_fn=lambda m, b: m(b).sum(), preset="max")
    with pytest.raises(SmoothprobeError, match="unknown probe 'magic'"):
        Recorder(model, opt, loss_fn=lambda m, b: m(b).sum(), probes=["magic"])
    with pytest.raises(SmoothprobeError, match="overhead must lie in"):
        Recorder(model, opt, loss_fn=lambda m, b: m(b).sum(), overhead=2.0)
    with pytest.raises(SmoothprobeError, match="hvp_chunks must be an integer >= 1, got 0"):
        Recorder(model, opt, loss_fn=lambda m, b: m(b).sum(), hvp_chunks=0)
    with pytest.raises(SmoothprobeError, match="hvp_chunks must be an integer >= 1"):
        ProbeConfig(hvp_chunks=1.5)


@pytest.mark.parametrize("layer, hvp, words", [
    (torch.nn.BatchNorm1d(2), "exact", "module '1' is BatchNorm1d: its statistics would be each piece's"),
    (torch.nn.Dropout(0.1), "exact", "module '1' is Dropout: dropout \\(p = 0.1\\) would draw other masks"),
    (torch.nn.Identity(), "fd", "hvp='fd' keeps no graph to split"),
])
def test_hvp_chunks_refuse_a_loss_that_pieces_would_change(layer, hvp, words):
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), layer)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(SmoothprobeError, match=f"hvp_chunks=2 .*{words}") as caught:
        Recorder(model, opt, loss_fn=lambda m, b: m(b).sum(), hvp_chunks=2, hvp=hvp)
    assert "hvp_chunks" in caught.value.params
    Recorder(model, opt, loss_fn=lambda m, b: m(b).sum(), hvp_chunks=1, hvp=hvp)  # one piece is the whole batch
    quiet = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.0))  # p = 0 draws nothing: allowed
    Recorder(quiet, torch.optim.SGD(quiet.parameters(), lr=0.1), loss_fn=lambda m, b: m(b).sum(), hvp_chunks=2)


def test_hvp_chunks_give_the_probes_of_the_whole_batch():
    """Two Recorders on one loop, whole batch and 3 row pieces of 7 rows: the same secant,
    curv_hvp and Lanczos ends."""
    from smoothprobe.probes.recorder import Recorder as PlainRecorder

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2)).double()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def loss_of(m, batch):
        return torch.nn.functional.mse_loss(m(batch[0]), batch[1])

    options = {"probes": ["secant", "curv_hvp", "top_eig"], "every": 1, "heavy_every": 1,
               "options": {"top_eig": {"steps": 6, "tol": 1e-12}}}
    recorders = [PlainRecorder(model, opt, loss_fn=loss_of, hvp_chunks=n, **options) for n in (1, 3)]
    for step in range(3):
        batch = (torch.randn(7, 3, dtype=torch.float64), torch.randn(7, 2, dtype=torch.float64))
        loss_of(model, batch).backward()
        for rec in recorders:
            rec.before_step(step, batch)
        opt.step()
        opt.zero_grad()
        whole, pieced = (rec.after_step() for rec in recorders)
        for column in ("secant_K", "curv_hvp", "top_eig", "bottom_eig"):
            assert pieced[column] == pytest.approx(whole[column], rel=1e-9), column
    assert recorders[1].describe()["hvp_chunks"] == 3


def test_cadence_resumed_without_saved_state_keeps_the_first_runs_multiples():
    fixed = Cadence(every=10, heavy_every=2)
    fixed.resume_at(23)
    assert (fixed.next_step, fixed.probed) == (30, 3) and not fixed.due(29) and fixed.due(30)
    assert not fixed.heavy_due()  # probes 0, 20, 40 were heavy; 30 is the 4th probe
    fixed.resume_at(20)
    assert (fixed.next_step, fixed.probed) == (20, 2) and fixed.heavy_due()
    budget = Cadence(every=10, overhead=0.1)
    budget.resume_at(23)
    assert budget.due(23)


def test_rerunning_a_recorder_script_takes_the_options_its_refusal_names(tmp_path):
    """The refusal names resume and overwrite; both exist: overwrite replaces the run, resume appends
    to it and drops the rows recorded again."""
    import inspect

    import smoothprobe
    from smoothprobe.errors import SmoothprobeError

    model = torch.nn.Linear(4, 1)
    data = [(torch.randn(8, 4), torch.randn(8, 1)) for _ in range(20)]

    def loss_of(m, b):
        return torch.nn.functional.mse_loss(m(b[0]), b[1])

    def record(start: int, **options) -> None:
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        with smoothprobe.Recorder(model, opt, tmp_path / "run", loss_fn=loss_of, every=2, **options) as rec:
            for step in range(start, 20):
                loss = loss_of(model, data[step])
                loss.backward()
                rec.before_step(step, data[step], loss=loss.item())
                opt.step()
                opt.zero_grad()
                rec.after_step()

    record(0)
    with pytest.raises(SmoothprobeError, match="pass resume .* or overwrite") as refused:
        record(0)
    named = inspect.signature(smoothprobe.Recorder).parameters
    assert "resume" in named and "overwrite" in named and "resume" in str(refused.value)
    record(0, overwrite=True)
    assert smoothprobe.load_run(tmp_path / "run").steps.step.tolist() == list(range(20))
    record(12, resume=True)  # the loop resumed from its own checkpoint at step 12
    run = smoothprobe.load_run(tmp_path / "run")
    assert run.steps.step.tolist() == list(range(20)) and run.info["status"] == "finished"
    assert int(run.steps.secant_K.notna().sum()) == 10


def test_a_recorded_run_with_hvp_chunks_splits_the_trainers_micro_batches(tmp_path):
    """The Trainer's batch is a list of micro-batches; 3 pieces of its 4 rows give the whole
    batch's curv_hvp and Lanczos end (float32, so to 1e-4)."""
    base = {"task": "markov", "batch_size": 4, "seq_len": 16, "steps": 2, "optimizer": "lion", "lr": 1e-3}
    probes = {"probes": ["secant", "curv_hvp", "top_eig"], "every": 1, "heavy_every": 1,
              "options": {"top_eig": {"steps": 4}}}
    runs = [load_run(train(TrainConfig(**base, probes={**probes, "hvp_chunks": n}), tmp_path / str(n),
                           progress=False)).steps for n in (1, 3)]
    for column in ("secant_K", "curv_hvp", "top_eig"):
        np.testing.assert_allclose(runs[1][column], runs[0][column], rtol=1e-4)


def test_frozen_tensors_in_the_optimizer_are_left_out_and_the_geometry_follows_the_optimizers_class():
    """A frozen first layer handed to the optimizer (model.parameters(), as is common) gets no gradient: the
    probes leave it out instead of failing. smoothprobe's Lion built directly (no `algo` groups) steps in the
    sign geometry, and the secant K is measured there."""
    from smoothprobe.optim import Lion

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    model[0].weight.requires_grad_(False)
    opt = Lion(model.parameters(), lr=1e-3)
    rec = Recorder(model, opt, loss_fn=lambda m, b: ((m(b[0]) - b[1]) ** 2).mean(), probes=["secant"], every=1)
    assert rec.family == "sign" and "0.weight" not in rec.names and "0.bias" in rec.names
    batch = (torch.randn(16, 4), torch.randn(16, 1))
    ((model(batch[0]) - batch[1]) ** 2).mean().backward()
    rec.before_step(0, batch)
    opt.step()
    row = rec.after_step()
    assert row["secant_K"] > 0 and math.isfinite(row["secant_K"])
