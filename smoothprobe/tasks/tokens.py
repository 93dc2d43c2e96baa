"""Shared part of the token tasks: the LLaMA model and next-token cross-entropy."""

from __future__ import annotations

import dataclasses

import torch.nn.functional as F
from torch import Tensor, nn

from smoothprobe.errors import SmoothprobeError
from smoothprobe.model import PRESETS, Llama
from smoothprobe.tasks.base import Batch, Task, model_device


class TokenTask(Task):
    """Next-token prediction on (batch, seq_len + 1) int64 token windows with a LLaMA preset."""

    vocab_size: int
    ignore_prefix: int = 0  # targets at positions < this are not scored

    def __init__(self, model: str, batch_size: int, seq_len: int, seed: int) -> None:
        if model not in PRESETS:
            raise SmoothprobeError(f"unknown model preset {model!r}; choose from {', '.join(PRESETS)}")
        if batch_size < 1 or seq_len < 2:
            raise SmoothprobeError(
                f"batch size must be >= 1 and seq-len >= 2; got {batch_size} and {seq_len}"
            )
        self.preset, self.batch_size, self.seq_len, self.seed = model, batch_size, seq_len, seed

    def build_model(self) -> nn.Module:
        cfg = dataclasses.replace(PRESETS[self.preset], vocab_size=self.vocab_size, context=self.seq_len)
        return Llama(cfg)

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        tokens = batch.to(model_device(model), non_blocking=True)
        inputs, targets = tokens[:, :-1], tokens[:, 1:]
        if self.ignore_prefix:
            targets = targets.clone()
            targets[:, : self.ignore_prefix] = -100
        logits = model(inputs)
        return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=-100)

    def model_facts(self) -> dict:
        """Preset and shape facts shared by the token tasks' `describe`."""
        return {
            "model": self.preset,
            "vocab_size": self.vocab_size,
            "batch_size": self.batch_size,
            "seq_len": self.seq_len,
        }
