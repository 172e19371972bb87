"""Timing a model's forward pass per chunk (used by ``stemstream bench-model``)."""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch


@dataclass
class ChunkTiming:
    seconds: float
    samples: int
    times: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def realtime_factor(self) -> float:
        """Compute time over audio time for one chunk (below 1 is faster than real time)."""
        return self.median / self.seconds


def time_chunks(model: torch.nn.Module, sample_rate: int, seconds: list[float], repeats: int = 3,
                warmup: int = 1, device: str | torch.device = "cpu") -> list[ChunkTiming]:
    """Median wall time of one forward call for a batch of one chunk of each length."""
    channels = getattr(model, "audio_channels", 2)
    gen = torch.Generator().manual_seed(0)
    results = []
    with torch.inference_mode():
        for sec in seconds:
            n = int(round(sec * sample_rate))
            x = (torch.rand(1, channels, n, generator=gen) * 2 - 1).to(device) * 0.5
            for _ in range(warmup):
                model(x)
            times = []
            for _ in range(repeats):
                if torch.device(device).type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                model(x)
                if torch.device(device).type == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
            results.append(ChunkTiming(sec, n, times))
    return results
