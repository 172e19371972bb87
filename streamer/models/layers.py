"""Building blocks of the Roformers, laid out so their state_dict keys match MSST checkpoints.

Module names and nesting (``net.1``, ``to_out.0``, ``to_qkv.0`` ...) are part of the checkpoint
format; see the reference spec, section 3.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from rotary_embedding_torch import RotaryEmbedding, apply_rotary_emb
from torch import nn


def l2_normalize(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """``F.normalize(x, dim=-1)`` to the bit (x / max(||x||, eps)), written with a broadcast division
    instead of ``expand_as``: an exported graph then has no Expand node per norm (about 5% of the
    demo model's time in ONNX Runtime)."""
    return x / torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(eps)


class RMSNorm(nn.Module):
    """y = x / max(||x||, 1e-12) * sqrt(d) * gamma (no eps inside the root, no bias)."""

    def __init__(self, dim: int):
        super().__init__()
        self.scale = dim**0.5
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return l2_normalize(x) * self.scale * self.gamma


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4, dropout: float = 0.0):
        super().__init__()
        inner = dim * mult
        self.net = nn.Sequential(
            RMSNorm(dim),
            nn.Linear(dim, inner),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(inner, dim),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def rotate(rotary: RotaryEmbedding, t: torch.Tensor) -> torch.Tensor:
    """``rotary.rotate_queries_or_keys(t)`` (positions 0..N-1 on axis -2), with the positions and their
    angles always made in fp32 outside any autocast. The library makes the positions in ``t``'s dtype:
    under bf16 autocast ``arange`` rounds every position above 256 (an 8 s window has about 800
    frames), and it caches the angles it made for every later call, fp32 ones included."""
    n = t.shape[-2]
    with torch.autocast(device_type=t.device.type, enabled=False):
        positions = torch.arange(n, device=t.device, dtype=torch.float32)
        freqs = rotary(positions, seq_len=n)
    return apply_rotary_emb(freqs, t)


class Attention(nn.Module):
    """Gated multi-head self-attention with rotary positions (shared RotaryEmbedding module)."""

    def __init__(self, dim: int, heads: int, dim_head: int, rotary_embed: RotaryEmbedding | None,
                 dropout: float = 0.0):
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        inner = heads * dim_head
        self.rotary_embed = rotary_embed
        self.norm = RMSNorm(dim)
        self.to_qkv = nn.Linear(dim, inner * 3, bias=False)
        self.to_gates = nn.Linear(dim, heads)
        self.to_out = nn.Sequential(nn.Linear(inner, dim, bias=False), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        q, k, v = rearrange(self.to_qkv(h), "b n (qkv h d) -> qkv b h n d", qkv=3, h=self.heads)
        if self.rotary_embed is not None:
            q = rotate(self.rotary_embed, q)
            k = rotate(self.rotary_embed, k)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        gates = self.to_gates(h)
        out = out * rearrange(gates, "b n h -> b h n 1").sigmoid()
        return self.to_out(rearrange(out, "b h n d -> b n (h d)"))


class LinearAttention(nn.Module):
    """Cross-covariance attention over the feature axis (XCA), used by ``linear_transformer_depth``."""

    def __init__(self, dim: int, heads: int, dim_head: int, scale: float = 8.0, dropout: float = 0.0):
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.scale = scale
        self.dropout = dropout
        self.norm = RMSNorm(dim)
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.to_qkv = nn.Sequential(nn.Linear(dim, inner * 3, bias=False))
        self.to_out = nn.Sequential(nn.Identity(), nn.Linear(inner, dim, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        q, k, v = rearrange(self.to_qkv(h), "b n (qkv h d) -> qkv b h d n", qkv=3, h=self.heads)
        q = l2_normalize(q) * self.temperature.exp()
        k = l2_normalize(k)
        out = F.scaled_dot_product_attention(
            q, k, v, scale=self.scale, dropout_p=self.dropout if self.training else 0.0
        )
        return self.to_out(rearrange(out, "b h d n -> b n (h d)"))


class Transformer(nn.Module):
    def __init__(self, *, dim: int, depth: int, heads: int, dim_head: int, attn_dropout: float = 0.0,
                 ff_dropout: float = 0.0, ff_mult: int = 4, norm_output: bool = True,
                 rotary_embed: RotaryEmbedding | None = None, linear_attn: bool = False):
        super().__init__()
        self.layers = nn.ModuleList()
        for _ in range(depth):
            if linear_attn:
                attn = LinearAttention(dim, heads, dim_head, dropout=attn_dropout)
            else:
                attn = Attention(dim, heads, dim_head, rotary_embed, dropout=attn_dropout)
            self.layers.append(nn.ModuleList([attn, FeedForward(dim, ff_mult, ff_dropout)]))
        self.norm = RMSNorm(dim) if norm_output else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for attn, ff in self.layers:
            x = attn(x) + x
            x = ff(x) + x
        return self.norm(x)


def mlp(dim_in: int, dim_out: int, dim_hidden: int, depth: int) -> nn.Sequential:
    """``depth`` Linear layers with Tanh between them (indices 0, 2, 4 ... hold the Linears)."""
    dims = (dim_in, *((dim_hidden,) * (depth - 1)), dim_out)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            layers.append(nn.Tanh())
    return nn.Sequential(*layers)
