"""Benchmarks that print numbers: a model's forward pass per chunk (``stemstream bench-model``) and
the streaming engine at real-time pace (``stemstream bench``).

The real-time benchmark feeds audio through a simulated callback that wakes at each block's due
time (as a sound card would), hands the block to ``StreamEngine.process_into`` and measures how long
that took and how late the callback itself started (a busy worker holding the GIL shows up there).
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ..stream.engine import StreamEngine
from .testsignals import generated_clip


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


@dataclass
class BenchResult:
    seconds: float
    block: int
    stats: dict
    cost_us: np.ndarray = field(repr=False)       # audio-side time per block
    wake_late_us: np.ndarray = field(repr=False)  # how late each callback started
    overruns: int = 0                             # callbacks that finished after the next was due

    def summary(self) -> dict:
        c, w = self.cost_us, self.wake_late_us
        return {
            "cost_us_median": float(np.median(c)), "cost_us_p99": float(np.percentile(c, 99)),
            "cost_us_max": float(c.max()), "wake_late_us_p99": float(np.percentile(w, 99)),
            "wake_late_us_max": float(w.max()), "overruns": self.overruns,
        }


def bench_signal(engine: StreamEngine, seconds: float, seed: int = 0) -> np.ndarray:
    """A generated multi-stem clip (looped from 10 s) at the engine's rate and channel count."""
    clip, _ = generated_clip(min(seconds, 10.0), engine.sample_rate, seed=seed, channels=engine.channels)
    n = int(round(seconds * engine.sample_rate))
    reps = -(-n // clip.shape[1])
    return np.ascontiguousarray(np.tile(clip, (1, reps))[:, :n])


def run_realtime(engine: StreamEngine, seconds: float, block: int = 256, progress=None) -> BenchResult:
    """Feed ``seconds`` of audio at real-time pace in ``block``-frame callbacks; the engine must be started."""
    audio = bench_signal(engine, seconds)
    out = np.zeros((len(engine.stems), engine.channels, block), np.float32)
    blocks = audio.shape[1] // block
    period = block / engine.sample_rate
    cost = np.zeros(blocks)
    late = np.zeros(blocks)
    overruns = 0
    engine.reset()
    engine.reset_stats()
    start = time.perf_counter() + 0.05
    for i in range(blocks):
        due = start + i * period
        while True:
            now = time.perf_counter()
            if now >= due:
                break
            time.sleep(min(0.001, due - now))
        t0 = time.perf_counter()
        engine.process_into(audio[:, i * block:(i + 1) * block], out)
        t1 = time.perf_counter()
        cost[i] = t1 - t0
        late[i] = t0 - due
        if t1 > due + period:
            overruns += 1
        if progress is not None and i % 200 == 0:
            progress(i / blocks)
    return BenchResult(seconds, block, engine.stats, cost * 1e6, late * 1e6, overruns)
