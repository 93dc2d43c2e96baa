"""Built-in tasks against closed forms: quadratic loss/gradient, Markov entropy rate, lm data."""

import numpy as np
import pytest
import torch

from smoothprobe.errors import SmoothprobeError
from smoothprobe.tasks import make_task
from smoothprobe.tasks.lm import LanguageModelTask, token_file
from smoothprobe.tasks.markov import MarkovChain, MarkovTask
from smoothprobe.tasks.quadratic import QuadraticTask


def test_quadratic_loss_and_gradient_are_closed_form():
    task = QuadraticTask(dtype=torch.float64, cond=50.0)
    model = task.build_model()
    x = model().detach()
    d = x - task.x_star
    loss = task.loss(model, task.train_batch(0))
    assert loss.item() == pytest.approx(0.5 * float(d @ task.hessian @ d), rel=1e-12)
    loss.backward()
    grad = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    torch.testing.assert_close(grad, task.hessian @ d, rtol=1e-10, atol=1e-12)
    eig = torch.linalg.eigvalsh(task.hessian)
    assert eig.max().item() == pytest.approx(1.0, rel=1e-9)
    assert (eig.max() / eig.min()).item() == pytest.approx(50.0, rel=1e-6)
    assert all(p.ndim == 2 for p in model.parameters())
    # the loss reads the parameters through forward(), where FSDP2 gathers its shards
    calls = []
    model.register_forward_pre_hook(lambda module, args: calls.append(1))
    task.loss(model, task.train_batch(0))
    assert calls == [1]


def test_quadratic_noise_keeps_the_hessian_and_has_zero_mean():
    task = QuadraticTask(dtype=torch.float64, noise=0.5)
    model = task.build_model()
    batches = [task.train_batch(s) for s in range(400)]
    grads = []
    for b in batches[:2]:
        model.zero_grad()
        task.loss(model, b).backward()
        grads.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]))
    torch.testing.assert_close(grads[0] - grads[1], 0.5 * (batches[0] - batches[1]))
    mean_noise = torch.stack(batches).mean(0)
    assert mean_noise.abs().max() < 4 * 1 / np.sqrt(400) * 1.5


def test_markov_entropy_rate_matches_monte_carlo():
    chain = MarkovChain(vocab=8, order=2, alpha=0.3, smoothing=0.01, seed=3)
    rng = np.random.default_rng(0)
    losses = chain.log_loss(chain.sample(rng, 500, 400))
    # Sequences start in the stationary law, so every position is an unbiased draw; the standard
    # error uses per-sequence means (tokens within a sequence are correlated).
    per_seq = losses.mean(axis=1)
    se = per_seq.std(ddof=1) / np.sqrt(len(per_seq))
    assert abs(per_seq.mean() - chain.entropy_rate) < 3 * se
    assert chain.entropy_rate < np.log(8)


def test_markov_stationary_distribution_is_invariant():
    chain = MarkovChain(vocab=4, order=2, alpha=0.5, smoothing=0.05, seed=1)
    nxt = np.bincount(chain.next_state.ravel(), weights=(chain.stationary[:, None] * chain.probs).ravel(),
                      minlength=chain.n_states)
    np.testing.assert_allclose(nxt, chain.stationary, atol=1e-12)


def test_markov_task_masks_positions_without_full_context():
    task = MarkovTask(batch_size=4, seq_len=16, vocab=8, order=3)
    assert task.ignore_prefix == 2
    assert task.f_star == pytest.approx(task.chain.entropy_rate)
    batch = task.train_batch(5)
    assert batch.shape == (4, 17) and batch.dtype == torch.int64
    torch.testing.assert_close(batch, task.train_batch(5))
    assert not torch.equal(batch, task.train_batch(6))


def test_lm_text_folder_and_bin_data(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"hello world " * 200)
    task = LanguageModelTask(batch_size=2, seq_len=8, data=str(tmp_path / "a.txt"))
    assert task.vocab_size == 256 and task.train_batch(0).shape == (2, 9)
    tokens = np.arange(1000, dtype=np.uint16) % 300
    tokens.tofile(tmp_path / "tok.bin")
    task = LanguageModelTask(batch_size=2, seq_len=8, data=str(tmp_path / "tok.bin"), vocab_size=300)
    assert task.train_batch(1).max() < 300
    with pytest.raises(SmoothprobeError, match="vocab_size"):
        LanguageModelTask(data=str(tmp_path / "tok.bin"))
    with pytest.raises(SmoothprobeError, match="does not exist"):
        LanguageModelTask(data=str(tmp_path / "missing"))


def test_lm_default_corpus_is_the_stdlib():
    task = make_task("lm", batch_size=2, seq_len=32)
    assert task.describe()["source"] == "python-stdlib"
    assert task.train_batch(0).max() < 256 and len(task.val_batches()) == task.eval_batches


def test_unknown_task_is_a_clear_error():
    with pytest.raises(SmoothprobeError, match="unknown task 'nope'"):
        make_task("nope")


def test_a_folder_of_bin_files_not_named_train_and_val_is_refused(tmp_path):
    """Two token files a.bin and b.bin: reading the first alone dropped the second without a word."""
    for name in ("a", "b"):
        np.arange(200, dtype=np.uint16).tofile(tmp_path / f"{name}.bin")
    with pytest.raises(SmoothprobeError, match="must hold train.bin and val.bin; .* holds a.bin, b.bin"):
        LanguageModelTask(data=str(tmp_path), vocab_size=256)


def test_a_markov_chain_too_large_to_hold_is_refused_before_it_is_built():
    """1024 tokens of order 2: 2**20 contexts × 1024 probabilities = 8 GiB, refused in one line."""
    with pytest.raises(SmoothprobeError, match=r"vocab\*\*\(order \+ 1\) <= 2\*\*24"):
        MarkovChain(1024, 2, 0.5, 0.0, 0)


def test_a_token_id_beyond_the_vocabulary_is_refused_at_load_wherever_it_lies(tmp_path):
    """One bad id deep in the validation part: the window check found it only when a batch drew it,
    so a run could fail hundreds of steps in; now the load reads every id, in chunks."""
    tokens = np.arange(5000, dtype=np.uint16) % 300
    tokens[4700] = 301
    tokens.tofile(tmp_path / "tok.bin")
    with pytest.raises(SmoothprobeError, match=r"tok.bin holds token id 301 \(token 4700\), not below vocab_size 300"):
        LanguageModelTask(batch_size=2, seq_len=8, data=str(tmp_path / "tok.bin"), vocab_size=300)
    for chunk in (7, 4700, 4701):  # the bad id first, last or alone in its chunk
        with pytest.raises(SmoothprobeError, match="token 4700"):
            token_file(tmp_path / "tok.bin", 300, chunk=chunk)
    tokens[4700] = 299
    tokens.tofile(tmp_path / "tok.bin")
    assert len(token_file(tmp_path / "tok.bin", 300, chunk=7)) == 5000
