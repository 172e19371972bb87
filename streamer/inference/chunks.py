"""MSST's chunking: the chunk window (linear fades), the chunk plan and each chunk's weights.

Shared by offline ``demix`` and by the streaming engine's ``crossfade="msst"`` (offline-exact) setting,
which must weight windows exactly as offline separation weights chunks.
"""
from __future__ import annotations

import torch

from ..errors import SettingsError


def msst_window(chunk_size: int) -> torch.Tensor:
    """1 in the middle, linear fades of chunk_size // 10 at both ends (end points included)."""
    fade = chunk_size // 10
    window = torch.ones(chunk_size)
    if fade > 0:
        window[:fade] = torch.linspace(0, 1, fade)
        window[-fade:] = torch.linspace(1, 0, fade)
    return window


def chunk_plan(length: int, chunk_size: int, num_overlap: int) -> tuple[int, int, list[int]]:
    """(border, padded length, chunk starts) for an input of ``length`` samples."""
    if chunk_size < 1 or num_overlap < 1:
        raise SettingsError(f"chunk_size and num_overlap must be >= 1, got {chunk_size} and {num_overlap}")
    step = chunk_size // num_overlap
    if step < 1:
        raise SettingsError(f"num_overlap {num_overlap} is larger than chunk_size {chunk_size}")
    border = chunk_size - step
    if not (length > 2 * border and border > 0):
        border = 0  # short input (or no overlap): no border padding
    padded = length + 2 * border
    return border, padded, list(range(0, padded, step))


def chunk_weights(chunk_size: int, starts: list[int], step: int, padded: int) -> list[torch.Tensor]:
    """The window each chunk is weighted with (first: no fade-in, last: no fade-out)."""
    base = msst_window(chunk_size)
    fade = chunk_size // 10
    out = []
    for s in starts:
        w = base
        if s == 0:
            w = base.clone()
            if fade:
                w[:fade] = 1
        elif s + step >= padded:
            w = base.clone()
            if fade:
                w[-fade:] = 1
        out.append(w)
    return out
