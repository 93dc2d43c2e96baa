"""Byte-level (or pre-tokenised) language modelling on an embedded or user-given corpus."""

from __future__ import annotations

import hashlib
import sysconfig
from pathlib import Path

import numpy as np
import torch

from smoothprobe.errors import SmoothprobeError
from smoothprobe.tasks.base import Batch, batch_rng
from smoothprobe.tasks.tokens import TokenTask

VAL_FRACTION = 0.1
MAX_CORPUS_BYTES = 8 * 2**20


def stdlib_files() -> list[Path]:
    """The Python standard library's own .py sources: a corpus present on every machine."""
    root = Path(sysconfig.get_paths()["stdlib"])
    return sorted(p for p in root.rglob("*.py") if "site-packages" not in p.parts)


def read_text_corpus(files: list[Path], limit: int = MAX_CORPUS_BYTES) -> np.ndarray:
    """Concatenate files (sorted order) as bytes, up to `limit` bytes, as a uint8 array."""
    chunks, size = [], 0
    for path in files:
        try:
            data = path.read_bytes()
        except OSError:
            continue
        chunks.append(data)
        size += len(data)
        if size >= limit:
            break
    return np.frombuffer(b"".join(chunks)[:limit], dtype=np.uint8)


def split(tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic split: the last VAL_FRACTION of the stream is validation."""
    cut = int(len(tokens) * (1 - VAL_FRACTION))
    return tokens[:cut], tokens[cut:]


def token_file(path: Path, vocab_size: int, chunk: int = 1 << 26) -> np.ndarray:
    """The uint16 tokens of `path`, memory-mapped, after one chunked read that refuses an id at or
    above `vocab_size`: a bad id fails before the first step, not at the batch that happens to draw it."""
    tokens = np.memmap(path, dtype=np.uint16, mode="r")
    for start in range(0, len(tokens), chunk):
        piece = np.asarray(tokens[start : start + chunk])
        if int(piece.max()) >= vocab_size:
            where = start + int(np.argmax(piece >= vocab_size))
            raise SmoothprobeError(f"{path.name} holds token id {int(tokens[where])} (token {where}), not below "
                                   f"vocab_size {vocab_size}: give the tokenizer's vocabulary size",
                                   params=["vocab_size"])
    return tokens


def load_tokens(data: str | None, vocab_size: int | None) -> tuple[np.ndarray, np.ndarray, dict]:
    """Train/val token streams and a description. `data` is None (stdlib corpus), a text file or
    folder (bytes), a uint16 `.bin` file, or a folder holding nanoGPT's train.bin and val.bin."""
    if data is None:
        tokens = read_text_corpus(stdlib_files())
        return (*split(tokens), {"source": "python-stdlib", "vocab_size": 256})
    path = Path(data)
    if not path.exists():
        raise SmoothprobeError(f"data path does not exist: {path}")
    bins = [path] if path.suffix == ".bin" else sorted(path.glob("*.bin")) if path.is_dir() else []
    if bins:
        if vocab_size is None:
            raise SmoothprobeError("token .bin data needs vocab_size (e.g. 50304 for GPT-2 tokens)", params=["vocab_size"])
        named = {p.stem: p for p in bins}
        if "train" in named and "val" in named:
            train, val = (token_file(named[name], vocab_size) for name in ("train", "val"))
        elif len(bins) > 1:
            raise SmoothprobeError(f"a folder of .bin token files must hold train.bin and val.bin; {path} holds "
                                   f"{', '.join(p.name for p in bins[:4])}{', ...' if len(bins) > 4 else ''} (rename "
                                   "them, or pass one .bin file, which is split 90/10)", params=["data"])
        else:
            train, val = split(token_file(bins[0], vocab_size))
        return train, val, {"source": str(path.resolve()), "format": "uint16-bin", "vocab_size": vocab_size}
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    tokens = read_text_corpus(files)
    return (*split(tokens), {"source": str(path.resolve()), "format": "bytes", "vocab_size": 256})


class LanguageModelTask(TokenTask):
    """Next-token prediction on random windows of a token stream; f* is unknown."""

    name = "lm"

    def __init__(
        self,
        model: str = "tiny",
        batch_size: int = 16,
        seq_len: int = 128,
        seed: int = 0,
        data: str | None = None,
        vocab_size: int | None = None,
        eval_batches: int = 8,
    ) -> None:
        super().__init__(model, batch_size, seq_len, seed)
        self.train_tokens, self.val_tokens, self.source = load_tokens(data, vocab_size)
        self.vocab_size = self.source["vocab_size"]
        for label, stream in (("training", self.train_tokens), ("validation", self.val_tokens)):
            if len(stream) < seq_len + 2:
                raise SmoothprobeError(
                    f"{label} split has {len(stream)} tokens, fewer than seq-len + 2 = {seq_len + 2}"
                )
        self.eval_batches = eval_batches
        self.digest = hashlib.sha256(np.ascontiguousarray(self.train_tokens[:2**20]).tobytes()).hexdigest()[:16]

    def _windows(self, stream: np.ndarray, starts: np.ndarray) -> Batch:
        idx = starts[:, None] + np.arange(self.seq_len + 1)
        return torch.from_numpy(np.asarray(stream[idx], dtype=np.int64))

    def train_batch(self, step: int, micro: int = 0) -> Batch:
        high = len(self.train_tokens) - self.seq_len - 1
        return self._windows(self.train_tokens, batch_rng(self.seed, step, micro).integers(0, high, self.batch_size))

    def val_batches(self) -> list[Batch]:
        n = self.eval_batches * self.batch_size
        starts = np.linspace(0, len(self.val_tokens) - self.seq_len - 1, n).astype(np.int64)
        return [self._windows(self.val_tokens, s) for s in starts.reshape(self.eval_batches, -1)]

    def describe(self) -> dict:
        return {
            "name": self.name,
            "f_star": None,
            **self.source,
            "train_tokens": len(self.train_tokens),
            "val_tokens": len(self.val_tokens),
            "train_digest": self.digest,
            **self.model_facts(),
        }
