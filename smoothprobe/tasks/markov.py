"""Sequences from a seeded random Markov chain; f* is the chain's exact entropy rate."""

from __future__ import annotations

import numpy as np
import torch

from smoothprobe.errors import SmoothprobeError
from smoothprobe.tasks.base import Batch, batch_rng
from smoothprobe.tasks.tokens import TokenTask


class MarkovChain:
    """Order-k chain over `vocab` tokens; each context's next-token law is Dirichlet(alpha),
    mixed with a uniform share `smoothing` so the chain is irreducible and aperiodic."""

    def __init__(self, vocab: int, order: int, alpha: float, smoothing: float, seed: int) -> None:
        if vocab < 2 or order < 1 or vocab**order > 2**20 or vocab ** (order + 1) > 2**24:
            raise SmoothprobeError(
                f"markov chain needs vocab >= 2, order >= 1, vocab**order <= 2**20 contexts and "
                f"vocab**(order + 1) <= 2**24 transition probabilities (128 MiB); got vocab {vocab}, order {order}"
            )
        self.vocab, self.order = vocab, order
        self.n_states = vocab**order
        rng = np.random.default_rng(np.random.SeedSequence([seed, 7919]))
        probs = rng.dirichlet(np.full(vocab, alpha), size=self.n_states)
        self.probs = (1 - smoothing) * probs + smoothing / vocab
        self.cdf = np.cumsum(self.probs, axis=1)
        self.cdf[:, -1] = 1.0
        # State s holds the last `order` tokens in base `vocab`; appending token v gives next_state.
        self.next_state = (np.arange(self.n_states)[:, None] * vocab + np.arange(vocab)) % self.n_states
        self.stationary = self._stationary()
        entropies = -(self.probs * np.log(self.probs)).sum(axis=1)
        self.entropy_rate = float(self.stationary @ entropies)

    def _stationary(self, tol: float = 1e-14, max_iter: int = 100_000) -> np.ndarray:
        """Stationary law of the state chain by power iteration (converges: the chain mixes)."""
        pi = np.full(self.n_states, 1.0 / self.n_states)
        for _ in range(max_iter):
            new = np.bincount(
                self.next_state.ravel(), weights=(pi[:, None] * self.probs).ravel(), minlength=self.n_states
            )
            if np.abs(new - pi).sum() < tol:
                return new / new.sum()
            pi = new
        raise RuntimeError("Markov chain stationary distribution did not converge")

    def sample(self, rng: np.random.Generator, batch: int, length: int) -> np.ndarray:
        """`batch` stationary sequences of `length` tokens (length >= order)."""
        states = rng.choice(self.n_states, size=batch, p=self.stationary)
        out = np.empty((batch, length), dtype=np.int64)
        for j in range(self.order):  # decode the initial state's tokens, oldest first
            out[:, j] = (states // self.vocab ** (self.order - 1 - j)) % self.vocab
        u = rng.random((batch, length))
        for t in range(self.order, length):
            tok = (u[:, t, None] > self.cdf[states]).sum(axis=1)
            out[:, t] = tok
            states = self.next_state[states, tok]
        return out

    def log_loss(self, seqs: np.ndarray) -> np.ndarray:
        """Per-token −log p of positions >= order under the true chain."""
        weights = self.vocab ** np.arange(self.order - 1, -1, -1)
        losses = []
        for t in range(self.order, seqs.shape[1]):
            states = seqs[:, t - self.order : t] @ weights
            losses.append(-np.log(self.probs[states, seqs[:, t]]))
        return np.stack(losses, axis=1)


class MarkovTask(TokenTask):
    """Tiny LLaMA on Markov sequences. Targets with fewer than `order` tokens of context are not
    scored, so the best achievable loss is exactly the entropy rate."""

    name = "markov"

    def __init__(
        self,
        model: str = "tiny",
        batch_size: int = 16,
        seq_len: int = 64,
        seed: int = 0,
        vocab: int = 16,
        order: int = 2,
        alpha: float = 0.2,
        smoothing: float = 0.01,
        chain_seed: int = 0,
        eval_batches: int = 4,
    ) -> None:
        super().__init__(model, batch_size, seq_len, seed)
        if seq_len <= order:
            raise SmoothprobeError(f"seq-len must exceed the chain order {order}; got {seq_len}")
        self.chain = MarkovChain(vocab, order, alpha, smoothing, chain_seed)
        self.vocab_size, self.ignore_prefix = vocab, order - 1
        self.f_star = self.chain.entropy_rate
        self.chain_seed, self.alpha, self.smoothing = chain_seed, alpha, smoothing
        self.eval_batches = eval_batches

    def train_batch(self, step: int, micro: int = 0) -> Batch:
        seqs = self.chain.sample(batch_rng(self.seed, step, micro), self.batch_size, self.seq_len + 1)
        return torch.from_numpy(seqs)

    def val_batches(self) -> list[Batch]:
        rng = batch_rng(self.seed, -1, 0)
        return [
            torch.from_numpy(self.chain.sample(rng, self.batch_size, self.seq_len + 1))
            for _ in range(self.eval_batches)
        ]

    def describe(self) -> dict:
        return {
            "name": self.name,
            "f_star": self.f_star,
            "f_star_source": "entropy rate of the true chain",
            "markov_vocab": self.chain.vocab,
            "markov_order": self.chain.order,
            "alpha": self.alpha,
            "smoothing": self.smoothing,
            "chain_seed": self.chain_seed,
            **self.model_facts(),
        }
