"""Small deterministic stand-in models for the streaming tests (importable by worker processes)."""
from __future__ import annotations

import time

import torch
from torch import nn


class ContextModel(nn.Module):
    """Context-dependent stems: each output sample depends on its neighbours and on the whole window.

    stem s = a_s * x + b_s * (x shifted right by 1 + s) + c_s * mean(x over the window).
    """

    audio_channels = 2

    def __init__(self, stems: int = 3):
        super().__init__()
        self.register_buffer("a", torch.linspace(0.2, 0.6, stems))
        self.register_buffer("b", torch.linspace(-0.3, 0.3, stems))
        self.register_buffer("c", torch.linspace(1.0, -1.0, stems))
        self.stems = stems

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = []
        for s in range(self.stems):
            shifted = torch.roll(x, 1 + s, dims=-1)
            shifted[..., : 1 + s] = 0
            outs.append(self.a[s] * x + self.b[s] * shifted + self.c[s] * x.mean(dim=-1, keepdim=True))
        return torch.stack(outs, dim=1)


class IdentityModel(nn.Module):
    """Stem 0 is the input, the other stems are silent: the engine must output the delayed input."""

    audio_channels = 2

    def __init__(self, stems: int = 2):
        super().__init__()
        self.stems = stems

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(x.shape[0], self.stems, *x.shape[1:])
        out[:, 0] = x
        return out


class WindowMeanModel(nn.Module):
    """Every sample of the window gets the window's mean: outputs jump from window to window."""

    audio_channels = 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.mean(dim=-1, keepdim=True).expand_as(x)
        return torch.stack([m, x - m], dim=1)


class SlowModel(ContextModel):
    """ContextModel that sleeps ``delay`` seconds per call once warmed up (after ``fast_calls``)."""

    def __init__(self, delay: float, fast_calls: int = 2, stems: int = 3):
        super().__init__(stems)
        self.delay = delay
        self.fast_calls = fast_calls
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls > self.fast_calls:
            time.sleep(self.delay)
        return super().forward(x)


class NaNModel(ContextModel):
    """Returns NaN in its first stem's first samples."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        out[:, 0, :, :10] = float("nan")
        return out


class FailingModel(ContextModel):
    """Raises on every call after the warm-up."""

    def __init__(self, ok_calls: int = 2):
        super().__init__()
        self.ok_calls = ok_calls
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls > self.ok_calls:
            raise RuntimeError("simulated model failure")
        return super().forward(x)
