"""Integrations: HF Trainer and Lightning adapters record what the trainer did, probe the right batch
and drive AdaptiveWarmup with each step's loss; TensorBoard gets every column back."""

import math
import time
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import smoothprobe
from smoothprobe import load_run
from smoothprobe.schedule.adaptive import AdaptiveWarmup

ADAPTIVE = {"lr": 5e-3, "div": 10.0, "f_star": 3.0, "delta_peak": 0.3, "total_steps": 6,
            "consecutive": 2}


def expected_lrs(losses, **options):
    """LRs an AdaptiveWarmup gives when fed `losses` one step at a time (the step's LR before its loss)."""
    replica = AdaptiveWarmup.practical(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0), **options)
    lrs = []
    warnings.simplefilter("ignore", UserWarning)  # the replica steps without an optimizer step
    for loss in losses:
        lrs.append(replica.get_last_lr()[0])
        replica.step(loss)
    return lrs


def grad_at(model, params, state, loss_fn):
    """Gradient of loss_fn() for `params` with the model's parameters set to `state`."""
    with torch.no_grad():
        for p, s in zip(params, state, strict=True):
            p.copy_(s)
    return torch.autograd.grad(loss_fn(), params)


# ---------------------------------------------------------------- Hugging Face


@pytest.fixture(scope="module")
def hf():
    return pytest.importorskip("transformers")


def gpt2(hf, dropout=0.0):
    torch.manual_seed(0)
    config = hf.GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64, n_positions=32,
                           resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout)
    return hf.GPT2LMHeadModel(config)


def token_data(n=24, length=12):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 64, (n, length), generator=g)
    return [{"input_ids": row, "labels": row.clone()} for row in ids]


def hf_args(hf, tmp_path, **overrides):
    options = {"output_dir": str(tmp_path / "out"), "max_steps": 6, "per_device_train_batch_size": 4,
               "learning_rate": 1e-2, "logging_steps": 1, "report_to": [], "use_cpu": True,
               "save_strategy": "no", "disable_tqdm": True, "seed": 0, "lr_scheduler_type": "linear"}
    return hf.TrainingArguments(**{**options, **overrides})


class Spy:
    """Test callback: the LR and parameters around each optimizer step, and step 0's capture."""

    def __init__(self, hf, probe_cb=None):
        self.lrs, self.before, self.after, self.capture = [], [], [], None
        spy = self

        class Callback(hf.TrainerCallback):
            def on_pre_optimizer_step(self, args, state, control, model=None, optimizer=None, **kw):
                spy.lrs.append(optimizer.param_groups[0]["lr"])
                spy.before.append([p.detach().clone() for p in model.parameters()])
                if probe_cb is not None and state.global_step == 0:
                    spy.capture = probe_cb.capture

            def on_optimizer_step(self, args, state, control, model=None, **kw):
                spy.after.append([p.detach().clone() for p in model.parameters()])

        self.callback = Callback()


def test_hf_callback_records_the_trainers_losses_and_a_correct_secant(hf, tmp_path):
    from smoothprobe.integrations.huggingface import SmoothprobeCallback, SmoothprobeTrainer

    model = gpt2(hf)
    probe = SmoothprobeCallback(tmp_path / "run", every=2, tensorboard=tmp_path / "tb")
    spy = Spy(hf, probe)
    trainer = SmoothprobeTrainer(model=model, args=hf_args(hf, tmp_path, max_grad_norm=0.05),
                                 train_dataset=token_data(), callbacks=[probe, spy.callback])
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    steps = load_run(tmp_path / "run").steps
    assert steps.step.tolist() == list(range(6))
    np.testing.assert_allclose(steps.loss, [h["loss"] for h in logs], rtol=1e-6)
    np.testing.assert_allclose(steps.grad_norm, [h["grad_norm"] for h in logs], rtol=1e-5)
    assert max(h["grad_norm"] for h in logs) > 0.05 * 10  # clipping was active, so unclipping matters
    np.testing.assert_allclose(steps.lr, spy.lrs, rtol=1e-12)
    assert len(set(spy.lrs)) == 6  # linear decay: every step has its own LR
    probed = steps.dropna(subset=["secant_K"])
    assert probed.step.tolist() == [0, 2, 4]
    assert np.isfinite(probed.secant_K).all() and (probed.secant_K > 0).all()

    # step 0's secant from scratch: unclipped gradients at x0 and x1 on the captured batch
    (inputs, num_items, scale), = spy.capture.micro
    params = list(model.parameters())

    def loss():
        return model(**inputs, num_items_in_batch=num_items).loss * scale

    g0 = grad_at(model, params, spy.before[0], loss)
    g1 = grad_at(model, params, spy.after[0], loss)
    dg = torch.cat([(a - b).flatten() for a, b in zip(g1, g0)]).norm()
    dx = torch.cat([(a - b).flatten() for a, b in zip(spy.after[0], spy.before[0])]).norm()
    assert steps.secant_K_euclid[0] == pytest.approx((dg / dx).item(), rel=1e-4)
    assert steps.grad_norm[0] == pytest.approx(torch.cat([g.flatten() for g in g0]).norm().item(),
                                               rel=1e-4)

    # TensorBoard mirror: every numeric column, same values
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    acc = event_accumulator.EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert {"smoothprobe/loss", "smoothprobe/lr", "smoothprobe/secant_K"} <= set(tags)
    assert [e.step for e in acc.Scalars("smoothprobe/secant_K")] == [0, 2, 4]
    np.testing.assert_allclose([e.value for e in acc.Scalars("smoothprobe/loss")], steps.loss,
                               rtol=1e-6)
    np.testing.assert_allclose([e.value for e in acc.Scalars("smoothprobe/secant_K")],
                               probed.secant_K, rtol=1e-6)


def test_hf_probe_replays_the_accumulated_batch_and_its_dropout(hf, tmp_path):
    from smoothprobe.integrations.huggingface import SmoothprobeCallback, SmoothprobeTrainer

    model = gpt2(hf, dropout=0.2)
    frozen = torch.optim.SGD(model.parameters(), lr=0.0)  # x_{t+1} = x_t: f_B(x_{t+1}) = f_B(x_t)
    probe = SmoothprobeCallback(tmp_path / "run", every=1)
    trainer = SmoothprobeTrainer(model=model, optimizers=(frozen, None), train_dataset=token_data(),
                                 args=hf_args(hf, tmp_path, max_steps=3, gradient_accumulation_steps=2,
                                              per_device_train_batch_size=3),
                                 callbacks=[probe])
    trainer.train()
    steps = load_run(tmp_path / "run").steps
    logged = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    np.testing.assert_allclose(steps.loss, logged, rtol=1e-6)
    np.testing.assert_allclose(steps.loss_after, steps.loss, rtol=1e-5)
    model.train()
    with torch.no_grad():  # a different dropout mask gives a visibly different loss
        redrawn = [model(**probe.capture.micro[0][0]).loss.item() for _ in range(3)]
    assert np.ptp(redrawn) > 1e-3


def test_hf_adaptive_warmup_sets_the_lr_the_optimizer_uses(hf, tmp_path):
    from smoothprobe.integrations.huggingface import SmoothprobeCallback, SmoothprobeTrainer

    model = gpt2(hf)
    optimizer = torch.optim.SGD(model.parameters(), lr=ADAPTIVE["lr"])
    scheduler = AdaptiveWarmup.practical(optimizer, **ADAPTIVE)
    probe = SmoothprobeCallback(tmp_path / "run", preset="cheap", every=3)
    spy = Spy(hf)
    trainer = SmoothprobeTrainer(model=model, args=hf_args(hf, tmp_path, max_steps=6),
                                 train_dataset=token_data(), optimizers=(optimizer, scheduler),
                                 callbacks=[probe, spy.callback])
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    expected = expected_lrs(losses, **ADAPTIVE)
    np.testing.assert_allclose(spy.lrs, expected, rtol=1e-6)
    assert spy.lrs[0] == pytest.approx(ADAPTIVE["lr"] / ADAPTIVE["div"])
    assert spy.lrs[1] > spy.lrs[0]  # the warm-up rises from lr/div
    np.testing.assert_allclose([h["learning_rate"] for h in trainer.state.log_history if "loss" in h],
                               expected, rtol=1e-6)
    steps = load_run(tmp_path / "run").steps
    np.testing.assert_allclose(steps.lr, expected, rtol=1e-6)
    assert steps.delta.notna().all() and set(steps.phase) <= {"warmup", "decay"}


def test_hf_resume_from_checkpoint_continues_the_run_directory(hf, tmp_path):
    from smoothprobe.integrations.huggingface import SmoothprobeCallback, SmoothprobeTrainer

    def train(resume=None):
        model = gpt2(hf)
        optimizer = torch.optim.SGD(model.parameters(), lr=ADAPTIVE["lr"])
        trainer = SmoothprobeTrainer(
            model=model, args=hf_args(hf, tmp_path, save_strategy="steps", save_steps=3),
            train_dataset=token_data(), optimizers=(optimizer, AdaptiveWarmup.practical(optimizer, **ADAPTIVE)),
            callbacks=[SmoothprobeCallback(tmp_path / "run", every=2)])
        trainer.train(resume_from_checkpoint=resume)

    train()
    whole = load_run(tmp_path / "run").steps
    train(resume=str(tmp_path / "out" / "checkpoint-3"))
    resumed = load_run(tmp_path / "run")
    assert resumed.steps.step.tolist() == list(range(6)) and resumed.info["resumed_at"] == [3]
    assert resumed.steps.secant_K.notna().tolist() == [True, False, True, False, True, False]
    for column in ("loss", "lr", "delta", "secant_K"):
        np.testing.assert_allclose(resumed.steps[column], whole[column], rtol=1e-5, err_msg=column)


def test_hf_callback_without_mixin_says_what_to_use(hf, tmp_path):
    from smoothprobe import SmoothprobeError
    from smoothprobe.integrations.huggingface import SmoothprobeCallback

    trainer = hf.Trainer(model=gpt2(hf), args=hf_args(hf, tmp_path, max_steps=1),
                         train_dataset=token_data(), callbacks=[SmoothprobeCallback(tmp_path / "r")])
    with pytest.raises(SmoothprobeError, match="SmoothprobeTrainerMixin"):
        trainer.train()


# ---------------------------------------------------------------- Lightning


@pytest.fixture(scope="module")
def pl():
    return pytest.importorskip("lightning.pytorch")


def regression_data(n=32, d=5):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = x @ torch.arange(1.0, d + 1, dtype=torch.float64) + 0.1 * torch.randn(n, generator=g,
                                                                             dtype=torch.float64)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4)


def quadratic_module(pl, adaptive=False):
    from smoothprobe.integrations.lightning import AdaptiveWarmupMixin

    class Quadratic(AdaptiveWarmupMixin, pl.LightningModule):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.lin = nn.Linear(5, 1, bias=False, dtype=torch.float64)
            self.losses = []

        def loss(self, batch):
            x, y = batch
            return ((self.lin(x).squeeze(-1) - y) ** 2).mean()

        def training_step(self, batch, batch_idx):
            loss = self.loss(batch)
            self.losses.append(loss.item())
            return loss

        def configure_optimizers(self):
            opt = torch.optim.SGD(self.parameters(), lr=0.02, momentum=0.5)
            if not adaptive:
                return opt
            sched = AdaptiveWarmup.practical(opt, **{**ADAPTIVE, "f_star": 0.0, "delta_peak": 1.0})
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    return Quadratic()


def lightning_trainer(pl, callbacks, **overrides):
    options = {"max_steps": 6, "accelerator": "cpu", "logger": False, "enable_checkpointing": False,
               "enable_progress_bar": False, "enable_model_summary": False, "precision": "64-true",
               "accumulate_grad_batches": 2, "gradient_clip_val": 0.01}
    return pl.Trainer(callbacks=callbacks, **{**options, **overrides})


class LightningSpy:
    """Test callback: batches, LR and weights around each optimizer step."""

    def __new__(cls, pl):
        class Spy(pl.Callback):
            def __init__(self):
                self.batches, self.steps, self.lrs = [], [], []

            def on_train_batch_start(self, trainer, module, batch, batch_idx):
                self.batches.append(batch)

            def on_before_optimizer_step(self, trainer, module, optimizer):
                self.lrs.append(optimizer.param_groups[0]["lr"])
                self.steps.append({"batches": self.batches, "w0": module.lin.weight.detach().clone()})
                self.batches = []

            def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
                if self.steps and "w1" not in self.steps[-1]:
                    self.steps[-1]["w1"] = module.lin.weight.detach().clone()

        return Spy()


def test_lightning_callback_secant_equals_the_batch_hessian_on_a_quadratic(pl, tmp_path):
    from smoothprobe.integrations.lightning import SmoothprobeCallback

    module = quadratic_module(pl)
    probe = SmoothprobeCallback(tmp_path / "run", loss_fn=lambda m, b: m.loss(b), every=2,
                                tensorboard=None)
    spy = LightningSpy(pl)
    lightning_trainer(pl, [probe, spy]).fit(module, regression_data())
    steps = load_run(tmp_path / "run").steps
    assert steps.step.tolist() == list(range(6))
    pairs = np.array(module.losses).reshape(6, 2)
    np.testing.assert_allclose(steps.loss, pairs.mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(steps.lr, spy.lrs, rtol=1e-15)
    probed = steps.dropna(subset=["secant_K"])
    assert probed.step.tolist() == [0, 2, 4]
    for row in probed.itertuples():
        record = spy.steps[row.step]
        hessian = sum(2 * x.T @ x / len(x) for x, _ in record["batches"]) / len(record["batches"])
        d = (record["w1"] - record["w0"]).flatten()
        assert d.norm() > 0
        assert row.secant_K_euclid == pytest.approx((hessian @ d).norm().item() / d.norm().item(),
                                                    rel=1e-9)
        w1 = record["w1"].flatten()
        f_after = np.mean([((x @ w1 - y) ** 2).mean().item() for x, y in record["batches"]])
        assert row.loss_after == pytest.approx(f_after, rel=1e-12)


def test_lightning_adaptive_warmup_mixin_feeds_the_step_loss(pl, tmp_path):
    from smoothprobe.integrations.lightning import SmoothprobeCallback

    module = quadratic_module(pl, adaptive=True)
    probe = SmoothprobeCallback(tmp_path / "run", loss_fn=lambda m, b: m.loss(b), preset="cheap")
    spy = LightningSpy(pl)
    lightning_trainer(pl, [probe, spy]).fit(module, regression_data())
    step_losses = np.array(module.losses).reshape(6, 2).mean(axis=1)
    expected = expected_lrs(step_losses, **{**ADAPTIVE, "f_star": 0.0, "delta_peak": 1.0})
    np.testing.assert_allclose(spy.lrs, expected, rtol=1e-12)
    assert spy.lrs[0] == pytest.approx(ADAPTIVE["lr"] / ADAPTIVE["div"]) and np.ptp(spy.lrs) > 0
    steps = load_run(tmp_path / "run").steps
    np.testing.assert_allclose(steps.lr, expected, rtol=1e-12)
    np.testing.assert_allclose(steps.delta.dropna().iloc[0], step_losses[0], rtol=1e-12)

    # export of a finished run: one scalar series per numeric column
    from smoothprobe.integrations.tensorboard import export_tensorboard

    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    acc = event_accumulator.EventAccumulator(str(export_tensorboard(tmp_path / "run")))
    acc.Reload()
    np.testing.assert_allclose([e.value for e in acc.Scalars("smoothprobe/lr")], expected,
                               rtol=1e-6)
    assert "smoothprobe/phase" not in acc.Tags()["scalars"]
    assert all(math.isfinite(e.value) for e in acc.Scalars("smoothprobe/delta"))


def test_lightning_resume_from_checkpoint_continues_the_run_directory(pl, tmp_path):
    from smoothprobe.integrations.lightning import SmoothprobeCallback

    def fit(ckpt_path=None):
        saver = pl.callbacks.ModelCheckpoint(tmp_path / "ckpt", every_n_train_steps=4, save_top_k=-1)
        probe = SmoothprobeCallback(tmp_path / "run", loss_fn=lambda m, b: m.loss(b), every=3)
        lightning_trainer(pl, [probe, saver], enable_checkpointing=True).fit(
            quadratic_module(pl, adaptive=True), regression_data(), ckpt_path=ckpt_path)

    fit()
    whole = load_run(tmp_path / "run").steps
    fit(ckpt_path=next((tmp_path / "ckpt").glob("*step=4.ckpt")))
    resumed = load_run(tmp_path / "run")
    assert resumed.steps.step.tolist() == list(range(6)) and resumed.info["resumed_at"] == [4]
    assert resumed.steps.secant_K.notna().tolist() == [True, False, False, True, False, False]
    for column in ("loss", "lr", "delta", "secant_K"):
        np.testing.assert_allclose(resumed.steps[column], whole[column], rtol=1e-9, err_msg=column)


def tensorboard_scalars(log_dir, tag):
    """(step, value) pairs TensorBoard shows for `tag`, purges applied."""
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    acc = event_accumulator.EventAccumulator(str(log_dir))
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def sqlite_uri(path) -> str:
    """An MLflow tracking URI on a SQLite file (what the docs use: no server, no variable)."""
    return "sqlite:///" + str(path)


WANDB_BLOCK = 32768


def wandb_records(path):
    """The protobuf records of a .wandb transaction log (LevelDB-style 32 KiB blocks, 7-byte headers)."""
    import struct

    from wandb.proto import wandb_internal_pb2

    data, pos, chunk = path.read_bytes(), 7, b""
    while pos + 7 <= len(data):
        left = WANDB_BLOCK - pos % WANDB_BLOCK
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if left < 7 or (length == 0 and kind == 0):
            pos += left
            continue
        if pos + 7 + length > len(data):  # still being written
            return
        chunk += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunk)
            chunk = b""
            yield record


def finished_wandb_logs(wandb_dir, timeout=20.0):
    """The offline runs' transaction logs under `wandb_dir`, once each holds its exit record
    (W&B's service writes them in the background: `finish()` can return before the last records)."""
    paths = sorted(wandb_dir.glob("wandb/offline-run-*/run-*.wandb"))
    deadline = time.monotonic() + timeout
    while not all(any(r.WhichOneof("record_type") == "exit" for r in wandb_records(p)) for p in paths):
        assert time.monotonic() < deadline, "W&B never finished writing its offline runs"
        time.sleep(0.1)
    return paths


def wandb_points(wandb_dir, key):
    """(step, value) of `key` over every offline run W&B wrote under `wandb_dir`, in file order."""
    import json

    points = []
    for path in finished_wandb_logs(wandb_dir):
        for record in wandb_records(path):
            if record.WhichOneof("record_type") != "history":
                continue
            row = {item.key or "/".join(item.nested_key): json.loads(item.value_json)
                   for item in record.history.item}
            if key in row:
                points.append((row["smoothprobe/step"], row[key]))
    return points


@pytest.fixture
def wandb_offline(tmp_path, monkeypatch):
    """W&B in offline mode writing under tmp_path: no network, no account."""
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    wandb.teardown()  # W&B reads its settings once per process: start from these
    yield wandb
    wandb.teardown()


def test_hf_resume_logs_each_step_once_to_tensorboard_mlflow_and_wandb(hf, tmp_path, wandb_offline):
    pytest.importorskip("tensorboard")
    mlflow = pytest.importorskip("mlflow")
    from smoothprobe.integrations.huggingface import SmoothprobeCallback, SmoothprobeTrainer

    uri = sqlite_uri(tmp_path / "mlflow.db")

    def train(resume=None):
        probe = SmoothprobeCallback(tmp_path / "run", every=2, tensorboard=tmp_path / "tb", mlflow=uri,
                                    wandb="smoothprobe-test")
        trainer = SmoothprobeTrainer(model=gpt2(hf), train_dataset=token_data(), callbacks=[probe],
                                     args=hf_args(hf, tmp_path, save_strategy="steps", save_steps=3))
        trainer.train(resume_from_checkpoint=resume)

    train()
    train(resume=str(tmp_path / "out" / "checkpoint-3"))
    steps = load_run(tmp_path / "run").steps
    assert len(list((tmp_path / "tb").glob("events.out.tfevents.*"))) == 2
    for tag, column in (("smoothprobe/loss", "loss"), ("smoothprobe/secant_K", "secant_K")):
        expected = steps.dropna(subset=[column])
        logged = tensorboard_scalars(tmp_path / "tb", tag)
        assert [s for s, _ in logged] == expected.step.tolist(), tag
        np.testing.assert_allclose([v for _, v in logged], expected[column], rtol=1e-5)

    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("smoothprobe").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    history = client.get_metric_history(runs[0].info.run_id, "smoothprobe/loss")
    assert sorted(m.step for m in history) == list(range(6))
    np.testing.assert_allclose([m.value for m in sorted(history, key=lambda m: m.step)], steps.loss,
                               rtol=1e-5)
    secants = client.get_metric_history(runs[0].info.run_id, "smoothprobe/secant_K")
    assert sorted(m.step for m in secants) == [0, 2, 4]

    # W&B: two offline runs with one id (the resume), each step once across both
    assert len({p.name.split("-")[-1] for p in tmp_path.glob("wandb/offline-run-*")}) == 1
    loss = wandb_points(tmp_path, "smoothprobe/loss")
    assert [s for s, _ in loss] == list(range(6))
    np.testing.assert_allclose([v for _, v in loss], steps.loss, rtol=1e-5)
    assert [s for s, _ in wandb_points(tmp_path, "smoothprobe/secant_K")] == [0, 2, 4]


def recorded_run(run_dir, steps=4):
    """A Recorder run of a linear regression: `steps` steps, every 2nd probed."""
    from smoothprobe import Recorder

    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    data = [(torch.randn(8, 3), torch.randn(8, 1)) for _ in range(steps)]
    loss_of = lambda m, b: nn.functional.mse_loss(m(b[0]), b[1])
    with Recorder(model, opt, run_dir, loss_fn=loss_of, every=2) as rec:
        for step, batch in enumerate(data):
            loss = loss_of(model, batch)
            loss.backward()
            rec.before_step(step, batch, loss=loss.item())
            opt.step()
            opt.zero_grad()
            rec.after_step()
    return load_run(run_dir).steps


def test_mlflow_export_logs_the_tensorboard_names_once_however_often_it_runs(tmp_path):
    mlflow = pytest.importorskip("mlflow")
    from smoothprobe.integrations.mlflow import export_mlflow

    steps = recorded_run(tmp_path / "run")
    uri = sqlite_uri(tmp_path / "mlflow.db")
    run_id = export_mlflow(tmp_path / "run", uri)
    assert [export_mlflow(tmp_path / "run", uri) for _ in range(2)] == [run_id, run_id]
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    assert len(client.search_runs([client.get_experiment_by_name("smoothprobe").experiment_id])) == 1
    loss = client.get_metric_history(run_id, "smoothprobe/loss")
    assert [m.step for m in loss] == [0, 1, 2, 3]
    np.testing.assert_allclose([m.value for m in loss], steps.loss, rtol=1e-6)
    assert [m.step for m in client.get_metric_history(run_id, "smoothprobe/secant_K")] == [0, 2]
    assert "smoothprobe/step" not in client.get_run(run_id).data.metrics


def test_mlflow_export_after_the_run_was_deleted_starts_a_new_run(tmp_path):
    mlflow = pytest.importorskip("mlflow")
    from smoothprobe.integrations.mlflow import export_mlflow

    recorded_run(tmp_path / "run")
    uri = sqlite_uri(tmp_path / "mlflow.db")
    first = export_mlflow(tmp_path / "run", uri)
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    client.delete_run(first)  # RUN/mlflow.json now names a deleted run
    second = export_mlflow(tmp_path / "run", uri)
    assert second != first
    assert [m.step for m in client.get_metric_history(second, "smoothprobe/loss")] == [0, 1, 2, 3]


def test_tensorboard_export_replaces_its_earlier_export(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    from smoothprobe.integrations.tensorboard import export_tensorboard

    steps = recorded_run(tmp_path / "run")
    for _ in range(3):
        log_dir = export_tensorboard(tmp_path / "run")
    files = list(log_dir.glob("events.out.tfevents.*"))
    raw = [(e.step, v.tag) for f in files for e in EventFileLoader(str(f)).Load()
           for v in e.summary.value]
    assert len(files) == 1 and sorted(s for s, tag in raw if tag == "smoothprobe/loss") == [0, 1, 2, 3]
    shown = tensorboard_scalars(log_dir, "smoothprobe/loss")
    np.testing.assert_allclose([v for _, v in shown], steps.loss, rtol=1e-6)


def test_tensorboard_export_over_a_live_mirror_shows_each_step_once(tmp_path):
    pytest.importorskip("tensorboard")
    from smoothprobe.integrations.tensorboard import TensorBoardSink, export_tensorboard

    steps = recorded_run(tmp_path / "run")
    live = TensorBoardSink(tmp_path / "run" / "tb")
    for row in steps.to_dict("records"):
        live.write(int(row["step"]), row)
    live.close()
    export_tensorboard(tmp_path / "run")
    assert [s for s, _ in tensorboard_scalars(tmp_path / "run" / "tb", "smoothprobe/loss")] == [0, 1, 2, 3]


def test_wandb_export_logs_each_step_once_however_often_it_runs(tmp_path, wandb_offline):
    from smoothprobe.integrations.wandb import export_wandb

    steps = recorded_run(tmp_path / "run", steps=6)
    ids = {export_wandb(tmp_path / "run") for _ in range(3)}
    assert len(ids) == 1 and len(list(tmp_path.glob("wandb/offline-run-*"))) == 1
    loss = wandb_points(tmp_path, "smoothprobe/loss")
    assert [s for s, _ in loss] == list(range(6))
    np.testing.assert_allclose([v for _, v in loss], steps.loss, rtol=1e-6)
    assert [s for s, _ in wandb_points(tmp_path, "smoothprobe/secant_K")] == [0, 2, 4]
    assert wandb_points(tmp_path, "smoothprobe/phase") == []


def test_wandb_export_after_a_partial_live_mirror_adds_only_the_missing_steps(tmp_path, wandb_offline):
    from smoothprobe.integrations.wandb import WandbSink, export_wandb

    steps = recorded_run(tmp_path / "run", steps=6)
    live = WandbSink(run_dir=tmp_path / "run")
    for row in steps.to_dict("records")[:3]:  # killed after step 2
        live.write(int(row["step"]), row)
    live.close(exit_code=1)
    time.sleep(1.1)  # W&B names an offline run's folder by the second: a resume must not share it
    assert export_wandb(tmp_path / "run") == live.run_id
    loss = wandb_points(tmp_path, "smoothprobe/loss")
    assert [s for s, _ in loss] == list(range(6))
    np.testing.assert_allclose([v for _, v in loss], steps.loss, rtol=1e-6)


def test_hf_run_directory_has_the_common_shape_and_a_report_without_unknowns(hf, tmp_path):
    """The adapter writes run.json and step columns like `train` does, so the report knows the
    optimizer, geometry and overhead of an HF run (no "?" and no "n/a%")."""
    from smoothprobe.integrations.huggingface import SmoothprobeCallback, SmoothprobeTrainer
    from smoothprobe.report import write_report
    from smoothprobe.writer import ALWAYS

    probe = SmoothprobeCallback(tmp_path / "run", every=2)
    SmoothprobeTrainer(model=gpt2(hf), args=hf_args(hf, tmp_path), train_dataset=token_data(),
                       callbacks=[probe]).train()
    run = load_run(tmp_path / "run")
    built = load_run(smoothprobe.train(smoothprobe.TrainConfig(task="quadratic", steps=2), tmp_path / "t",
                                       progress=False))
    assert set(run.info) == set(built.info)
    assert run.info["source"] == "transformers" and run.info["status"] == "finished"
    assert run.info["optimizer"]["class"] == "AdamW" and run.info["probes"]["family"] == "euclidean"
    assert run.steps[list(ALWAYS)].notna().all().all()
    html = write_report([tmp_path / "run"], tmp_path / "report.html").read_text()
    assert ">?<" not in html and "n/a%" not in html
    assert "<li>no fit: f_star=&#39;auto&#39; needs at least 20 finite losses; got 6" in html  # a warning

    from click.testing import CliRunner
    from smoothprobe.cli.main import main

    result = CliRunner().invoke(main, ["report", str(tmp_path / "run")])
    assert result.exit_code == 0 and result.output == f"report written to {tmp_path / 'run' / 'report.html'}\n"


def test_train_recorder_hf_and_lightning_write_run_json_and_its_config_in_one_shape(hf, pl, tmp_path):
    """Whichever entry point writes a run, run.json has the same keys, and so has its `config` block:
    TrainConfig's fields (None where the writer does not know them), ProbeConfig's under `probes`."""
    import dataclasses

    from smoothprobe.config import ProbeConfig, TrainConfig
    from smoothprobe.integrations import huggingface, lightning

    smoothprobe.train(TrainConfig(task="quadratic", steps=2, probes={"every": 1}), tmp_path / "train",
                      progress=False)
    recorded_run(tmp_path / "recorder", steps=2)
    huggingface.SmoothprobeTrainer(model=gpt2(hf), args=hf_args(hf, tmp_path, max_steps=2), train_dataset=token_data(),
                                   callbacks=[huggingface.SmoothprobeCallback(tmp_path / "hf", every=1)]).train()
    probe = lightning.SmoothprobeCallback(tmp_path / "pl", loss_fn=lambda m, b: m.loss(b), every=1)
    lightning_trainer(pl, [probe], max_steps=2).fit(quadratic_module(pl), regression_data())

    infos = {name: load_run(tmp_path / name).info for name in ("train", "recorder", "hf", "pl")}
    assert [info["source"] for info in infos.values()] == ["train", "recorder", "transformers", "lightning"]
    assert all(info["status"] == "finished" for info in infos.values())
    for shape in (set, lambda info: set(info["config"]), lambda info: set(info["config"]["probes"])):
        assert len({frozenset(shape(info)) for info in infos.values()}) == 1
    assert list(infos["hf"]["config"]) == [f.name for f in dataclasses.fields(TrainConfig)]
    assert set(infos["pl"]["config"]["probes"]) == {f.name for f in dataclasses.fields(ProbeConfig)}
    assert infos["hf"]["config"]["steps"] == infos["pl"]["config"]["steps"] == 2
    assert infos["hf"]["config"]["task"] is None and infos["train"]["config"]["task"] == "quadratic"


def test_wandb_export_of_an_overwritten_run_directory_starts_a_new_run(tmp_path, wandb_offline):
    import json

    from smoothprobe.integrations.wandb import export_wandb

    recorded_run(tmp_path / "run", steps=4)
    first = export_wandb(tmp_path / "run")
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    info["created"] = "2000-01-01T00:00:00+0000"  # what a new run written over it would have
    (tmp_path / "run" / "run.json").write_text(json.dumps(info))
    time.sleep(1.1)  # a new offline folder (W&B names them by the second)
    second = export_wandb(tmp_path / "run")
    assert second != first
    assert [s for s, _ in wandb_points(tmp_path, "smoothprobe/loss")] == [0, 1, 2, 3] * 2  # two runs


def test_wandb_init_failure_is_one_smoothprobe_error(tmp_path, wandb_offline):
    from smoothprobe import SmoothprobeError
    from smoothprobe.integrations.wandb import WandbSink

    with pytest.raises(SmoothprobeError, match=r"^wandb.init failed: .*'offline'.*pass mode='offline'\)$"):
        WandbSink(run_dir=tmp_path / "run", mode="bogus")
    assert not (tmp_path / "run" / "wandb.json").exists()


def test_lightning_partial_accumulation_window_and_grad_norm_follow_what_lightning_differentiated(pl, tmp_path):
    """8 batches an epoch, accumulate_grad_batches 3: windows of 3, 3 and 2 batches. Lightning divides every
    micro-batch's loss by 3, also in the short window, so the step's Hessian is Σ 2xᵀx/n over its batches
    divided by 3 and its gradient Σ 2xᵀ(xw − y)/n divided by 3: the secant K and the pre-clip grad_norm
    match them on every step, the 2-batch steps included."""
    from smoothprobe.integrations.lightning import SmoothprobeCallback

    module = quadratic_module(pl)
    probe = SmoothprobeCallback(tmp_path / "run", loss_fn=lambda m, b: m.loss(b), every=1)
    spy = LightningSpy(pl)
    lightning_trainer(pl, [probe, spy], accumulate_grad_batches=3).fit(module, regression_data())
    steps = load_run(tmp_path / "run").steps
    assert [len(spy.steps[t]["batches"]) for t in range(6)] == [3, 3, 2, 3, 3, 2]
    for row in steps.itertuples():
        record = spy.steps[row.step]
        w0, d = record["w0"].flatten(), (record["w1"] - record["w0"]).flatten()
        hessian = sum(2 * x.T @ x / len(x) for x, _ in record["batches"]) / 3
        grad = sum(2 * x.T @ (x @ w0 - y) / len(x) for x, y in record["batches"]) / 3
        assert row.secant_K_euclid == pytest.approx((hessian @ d).norm().item() / d.norm().item(), rel=1e-9)
        assert row.grad_norm == pytest.approx(grad.norm().item(), rel=1e-9)


def test_lightning_and_hf_runs_that_raise_keep_their_rows_and_say_they_crashed(pl, hf, tmp_path):
    """An exception at step 4 (a RuntimeError; Ctrl-C marks the run interrupted the same way): the rows of
    steps 0-3 are on disk and run.json says crashed, not running."""
    from smoothprobe.integrations.huggingface import SmoothprobeCallback as HFCallback
    from smoothprobe.integrations.huggingface import SmoothprobeTrainer
    from smoothprobe.integrations.lightning import SmoothprobeCallback

    module = quadratic_module(pl)
    losses = module.training_step

    def failing(batch, batch_idx):
        if module.trainer.global_step == 4:
            raise RuntimeError("boom")
        return losses(batch, batch_idx)

    module.training_step = failing
    probe = SmoothprobeCallback(tmp_path / "pl", loss_fn=lambda m, b: m.loss(b), every=1)
    with pytest.raises(RuntimeError, match="boom"):
        lightning_trainer(pl, [probe], max_steps=10).fit(module, regression_data())

    class Failing(SmoothprobeTrainer):
        def training_step(self, *args, **kwargs):
            if self.state.global_step == 4:
                raise RuntimeError("boom")
            return super().training_step(*args, **kwargs)

    trainer = Failing(model=gpt2(hf), args=hf_args(hf, tmp_path, max_steps=10), train_dataset=token_data(),
                      callbacks=[HFCallback(tmp_path / "hf", every=1)])
    with pytest.raises(RuntimeError, match="boom"):
        trainer.train()
    for run in ("pl", "hf"):
        got = load_run(tmp_path / run)
        assert got.steps.step.tolist() == [0, 1, 2, 3] and got.info["status"] == "crashed", run


def test_hf_callback_refuses_hvp_chunks_it_cannot_split(hf):
    from smoothprobe import SmoothprobeError
    from smoothprobe.integrations.huggingface import SmoothprobeCallback

    with pytest.raises(SmoothprobeError, match="hvp_chunks must be 1"):
        SmoothprobeCallback("unused", preset="full", hvp_chunks=2)
