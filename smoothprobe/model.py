"""A small LLaMA-style decoder: RMSNorm, rotary embeddings, SwiGLU MLP, tied embedding, no biases."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from smoothprobe.errors import SmoothprobeError


@dataclass(frozen=True)
class LlamaConfig:
    """Shape of the decoder; `PRESETS` names the shapes the CLI offers."""

    vocab_size: int = 256
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    context: int = 128
    mlp_ratio: float = 8 / 3
    rope_base: float = 10000.0

    @property
    def d_mlp(self) -> int:
        """SwiGLU hidden width, rounded up to a multiple of 8."""
        return 8 * ((int(self.mlp_ratio * self.d_model) + 7) // 8)


PRESETS: dict[str, LlamaConfig] = {
    "tiny": LlamaConfig(d_model=128, n_layers=4, n_heads=4, context=128),
    "small": LlamaConfig(d_model=256, n_layers=6, n_heads=8, context=256),
    "124m": LlamaConfig(d_model=768, n_layers=12, n_heads=12, context=512),
}


class RMSNorm(nn.Module):
    """Root-mean-square normalisation with a learned gain (Zhang & Sennrich, 2019)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        xf = x.to(torch.promote_types(x.dtype, torch.float32))
        norm = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return norm.type_as(x) * self.weight


def rotary_tables(head_dim: int, length: int, base: float) -> tuple[Tensor, Tensor]:
    """cos/sin tables of rotary position embeddings (Su et al., 2021), shape (length, head_dim/2)."""
    inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(length, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate channel pairs of x (batch, heads, time, head_dim) by position-dependent angles."""
    x1, x2 = x.to(torch.promote_types(x.dtype, torch.float32)).unflatten(-1, (-1, 2)).unbind(-1)
    out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)
    return out.type_as(x)


class Attention(nn.Module):
    """Causal multi-head self-attention through `scaled_dot_product_attention`."""

    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.n_heads = cfg.n_heads
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.n_heads, d // self.n_heads).unbind(2)
        q, k, v = (z.transpose(1, 2) for z in (q, k, v))
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class SwiGLU(nn.Module):
    """Gated MLP: down(silu(gate(x)) * up(x)) (Shazeer, 2020)."""

    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.gate = nn.Linear(cfg.d_model, cfg.d_mlp, bias=False)
        self.up = nn.Linear(cfg.d_model, cfg.d_mlp, bias=False)
        self.down = nn.Linear(cfg.d_mlp, cfg.d_model, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


class Block(nn.Module):
    """Pre-norm residual block: attention then MLP."""

    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(cfg.d_model)
        self.attn = Attention(cfg)
        self.mlp_norm = RMSNorm(cfg.d_model)
        self.mlp = SwiGLU(cfg)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        x = x + self.attn(self.attn_norm(x), cos, sin)
        return x + self.mlp(self.mlp_norm(x))


class Llama(nn.Module):
    """Decoder-only language model; the output head is the transposed token embedding."""

    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        if cfg.d_model % cfg.n_heads:
            raise SmoothprobeError(f"d_model must be divisible by n_heads. Got {cfg.d_model}, {cfg.n_heads}.")
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model)
        cos, sin = rotary_tables(cfg.d_model // cfg.n_heads, cfg.context, cfg.rope_base)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """GPT-2 style init: N(0, 0.02), residual projections scaled by 1/sqrt(2·layers)."""
        for name, p in self.named_parameters():
            if p.ndim == 2:
                std = 0.02 / (2 * self.cfg.n_layers) ** 0.5 if name.endswith(("proj.weight", "down.weight")) else 0.02
                nn.init.normal_(p, std=std)

    def forward(self, idx: Tensor) -> Tensor:
        """Logits of shape (batch, time, vocab) for token ids of shape (batch, time)."""
        t = idx.shape[1]
        if t > self.cfg.context:
            raise SmoothprobeError(f"sequence length {t} exceeds the model context {self.cfg.context}")
        x = self.embed(idx)
        cos, sin = self.rope_cos[:t], self.rope_sin[:t]
        for block in self.blocks:
            x = block(x, cos, sin)
        return F.linear(self.norm(x), self.embed.weight)
