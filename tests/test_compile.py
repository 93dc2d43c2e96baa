"""The Recorder on a torch.compile'd model: HVP probes run the model eagerly (compiled autograd
has no double backward) and read the same numbers as on the plain model."""

import pytest
import torch
import torch.nn.functional as F

from smoothprobe.model import Llama, LlamaConfig
from smoothprobe.probes.recorder import Recorder

VOCAB = 32


def loss_fn(model: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(model(batch[:, :-1]).reshape(-1, VOCAB), batch[:, 1:].reshape(-1))


def probe_rows(compile_model: bool) -> list[dict]:
    torch.manual_seed(0)
    model = Llama(LlamaConfig(vocab_size=VOCAB, d_model=16, n_layers=1, n_heads=2, context=8)).double()
    run = torch.compile(model, backend="aot_eager") if compile_model else model
    optimizer = torch.optim.SGD(run.parameters(), lr=0.1)
    recorder = Recorder(run, optimizer, loss_fn=loss_fn, preset="full", every=1)
    rows = []
    for step in range(2):
        batch = torch.randint(0, VOCAB, (4, 9), generator=torch.Generator().manual_seed(step))
        loss_fn(run, batch).backward()
        recorder.before_step(step, batch)
        optimizer.step()
        optimizer.zero_grad()
        rows.append(recorder.after_step())
    return rows


def test_full_preset_on_a_compiled_model_matches_the_plain_model():
    plain, compiled = probe_rows(False), probe_rows(True)
    assert "top_eig" in compiled[0] and "curv_dual" in compiled[0] and "top_eig" not in compiled[1]
    for expected, got in zip(plain, compiled):
        assert set(got) == set(expected)
        for column, value in expected.items():
            if not column.startswith(("time_", "probe_time")):
                assert got[column] == pytest.approx(value, rel=1e-6, abs=1e-9), column
