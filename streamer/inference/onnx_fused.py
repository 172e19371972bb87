"""The Roformers' attention written for export as ONNX Runtime's fused operators.

Traced as it is, one attention block becomes about forty small ONNX nodes: the qkv split, the head
split and merge (Transposes), the interleaved halves of the rotary embedding (Split, Neg, Concat), the
transposed keys, the scaled product and the softmax. On a CPU most of them move data rather than
compute, and ONNX Runtime runs its data-movement kernels on one thread. Inside :func:`fused_attention`
each :class:`streamer.models.layers.Attention` exports instead as

    q, k, v = three MatMuls on views of ``to_qkv``'s weight (no Split)
    q, k    = com.microsoft.RotaryEmbedding (interleaved, per head, positions from 0)
    out     = com.microsoft.MultiHeadAttention (heads split and merged inside, batched over them)
    out     = out * sigmoid(gates) per head, then ``to_out``

ONNX Runtime's contrib operators, part of its standard CPU build. In torch the two functions below
compute exactly what the model computes (tested to the bit), so tracing still yields the right shapes;
only the exported graph differs. The caller (``onnx_core``) compares the session with the model on a
window and exports the plain graph instead when a runtime lacks these operators.

Only attention the fused operators express exactly is replaced: rotary embeddings over the whole head
without xpos or interpolation (what every MSST Roformer config builds), or none. Anything else keeps
the traced graph.
"""
from __future__ import annotations

import contextlib
import threading
import types
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..models.layers import Attention

_SWAP_LOCK = threading.Lock()  # one export at a time swaps forwards (they are the modules' own state)


class _Rotary(torch.autograd.Function):
    """Interleaved rotary embedding of (B, N, heads*d) at positions 0..N-1 with the given cos/sin tables
    (N, d/2); exported as ``com.microsoft.RotaryEmbedding``."""

    @staticmethod
    def forward(ctx, x, position, cos, sin, heads):  # noqa: ARG004 - position only feeds the graph
        b, n, hd = x.shape
        d = hd // heads
        pairs = x.reshape(b, n, heads, d // 2, 2)
        x1, x2 = pairs[..., 0], pairs[..., 1]
        c = cos[:n].reshape(1, n, 1, d // 2)
        s = sin[:n].reshape(1, n, 1, d // 2)
        return torch.stack([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1).reshape(b, n, hd)

    @staticmethod
    def symbolic(g, x, position, cos, sin, heads):
        out = g.op("com.microsoft::RotaryEmbedding", x, position, cos, sin, interleaved_i=1, num_heads_i=heads)
        out.setType(x.type())
        return out


class _MultiHeadAttention(torch.autograd.Function):
    """Softmax attention of (B, N, heads*d) queries, keys and values, heads split and merged inside;
    exported as ``com.microsoft.MultiHeadAttention`` (scale 1/sqrt(d), no mask)."""

    @staticmethod
    def forward(ctx, q, k, v, heads):
        b, n, hd = q.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(b, t.shape[1], heads, -1).transpose(1, 2)

        out = F.scaled_dot_product_attention(split(q), split(k), split(v))
        return out.transpose(1, 2).reshape(b, n, -1)

    @staticmethod
    def symbolic(g, q, k, v, heads):
        out = g.op("com.microsoft::MultiHeadAttention", q, k, v, num_heads_i=heads)
        out.setType(q.type())
        return out


def fusable(module: Attention) -> bool:
    """True when ``module``'s attention is exactly what the fused operators compute."""
    if module.to_qkv.bias is not None:
        return False
    rotary = module.rotary_embed
    if rotary is None:
        return True
    inner = module.to_qkv.weight.shape[0] // 3
    if inner % module.heads:
        return False
    d = inner // module.heads
    return (not getattr(rotary, "use_xpos", False)
            and float(getattr(rotary, "interpolate_factor", 1.0)) == 1.0
            and not getattr(rotary, "seq_before_head_dim", False)
            and rotary.freqs.ndim == 1 and 2 * rotary.freqs.numel() == d and d % 2 == 0)


def _fused_forward(self: Attention, x: torch.Tensor) -> torch.Tensor:
    """``Attention.forward`` in the fused operators' terms (same result)."""
    h = self.norm(x)
    weight = self.to_qkv.weight
    inner = weight.shape[0] // 3
    q = F.linear(h, weight[:inner])
    k = F.linear(h, weight[inner:2 * inner])
    v = F.linear(h, weight[2 * inner:])
    if self.rotary_embed is not None:
        n = x.shape[1]
        freqs = self.rotary_embed.freqs.detach().float()
        angles = torch.arange(n, dtype=torch.float32, device=x.device)[:, None] * freqs[None, :]
        cos, sin = angles.cos(), angles.sin()
        start = torch.zeros(1, dtype=torch.int64, device=x.device)
        q = _Rotary.apply(q, start, cos, sin, self.heads)
        k = _Rotary.apply(k, start, cos, sin, self.heads)
    out = _MultiHeadAttention.apply(q, k, v, self.heads)
    b, n, _ = out.shape
    gates = self.to_gates(h).sigmoid().unsqueeze(-1)                    # (B, N, heads, 1)
    out = (out.reshape(b, n, self.heads, -1) * gates).reshape(b, n, inner)
    return self.to_out(out)


@contextlib.contextmanager
def fused_attention(model: nn.Module) -> Iterator[int]:
    """While inside, every fusable :class:`Attention` of ``model`` runs (and so exports) as the fused
    operators; yields how many were replaced. What each module had before comes back on exit. Meant
    for the exporter, in fp32 (the tables are fp32; in torch the results are the model's to the bit in
    fp32); one such block at a time in the process (a lock), and the model should not run elsewhere
    meanwhile (it would still compute the same numbers, through the replacement)."""
    with _SWAP_LOCK:
        replaced: list[tuple[Attention, object]] = []
        missing = object()
        try:
            for module in model.modules():
                if isinstance(module, Attention) and fusable(module):
                    replaced.append((module, module.__dict__.get("forward", missing)))
                    module.forward = types.MethodType(_fused_forward, module)
            yield len(replaced)
        finally:
            for module, before in replaced:
                if before is missing:
                    module.__dict__.pop("forward", None)
                else:
                    module.forward = before
