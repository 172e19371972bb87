"""A stem deck: stems that are already separated (a stem file's), played where the engine's would be.

A Native Instruments Stem file, or any set of stems, needs no model: :class:`StemDeck` stands in for
:class:`~streamer.stream.engine.StreamEngine` behind the separator and the live path, with the same
face (``process_into``, ``reset``, ``stats``, ``latency_samples``, ``start``/``stop``...) and zero
latency. Each block of input it is handed is the mix at some position of the song; it writes the
stems at that position, and as the dry signal their sum, so that a bus at unity plays exactly what the
stems add up to and any fader move starts from there (no jump between a file's encoded mix and its
encoded stems, which differ by the codec's error).

The position is its own count of frames handed to it (``reset`` rewinds it), or, for a live file
source, the source's (``position``: a callable giving the frames the source has read so far, the
block just handed over included), so that the deck and the source cannot drift apart whatever
resets happen. Past the end the deck plays silence, or, with ``loop``, starts again, as the file
source does. Nothing is allocated per block.
"""
from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Callable, Sequence

import numpy as np

from ..errors import AudioError, SettingsError


class StemDeck:
    """Pre-separated ``stems`` (stems, channels, frames) named ``names`` at ``sample_rate``."""

    kind = "deck"
    residual = None
    device = "none (stems from a file)"
    precision = "-"

    def __init__(self, stems: np.ndarray, names: Sequence[str], sample_rate: int, loop: bool = False,
                 position: Callable[[], int] | None = None, label: str = "stem deck"):
        stems = np.asarray(stems)
        if stems.ndim != 3 or stems.shape[0] == 0 or stems.shape[2] == 0:
            raise AudioError(f"a stem deck needs stems shaped (stems, channels, frames), got {stems.shape}")
        if len(names) != stems.shape[0] or len(set(names)) != len(names):
            raise SettingsError(f"{stems.shape[0]} stems need {stems.shape[0]} different names, got {list(names)}")
        if not np.isfinite(stems).all():
            raise AudioError("the stems hold NaN or inf samples")
        self.audio = np.ascontiguousarray(stems, np.float32)
        self.stems = list(names)
        self.sample_rate = int(sample_rate)
        self.channels = int(stems.shape[1])
        self.frames = int(stems.shape[2])
        self.loop = bool(loop)
        self.label = label
        self.model = self          # what status lines name (``type(engine.model).__name__``)
        self._position = position
        self.pos = 0               # frames handed over so far (own count)
        self.blocks = 0
        # the engine's lengths, all zero: nothing is windowed, nothing waits
        self.window = self.hop = self.lookahead = self.compute_allowance = 0
        self.settings = SimpleNamespace(crossfade=0, live_latency=0, describe=lambda rate=None: self.describe())

    def follow(self, position: Callable[[], int], loop: bool) -> None:
        """Take the position from a file source from now on: ``position()`` is the frames it has read
        (the block being handed over included), ``loop`` whether it wraps at the end as this deck does."""
        self._position = position
        self.loop = bool(loop)

    # ------------------------------------------------------------------ the engine's face
    @property
    def latency_samples(self) -> int:
        return 0

    @property
    def latency_seconds(self) -> float:
        return 0.0

    @property
    def latency_parts(self) -> dict[str, int]:
        return {"algorithmic": 0, "processing": 0}

    @property
    def running(self) -> bool:
        return False

    @property
    def worker_pid(self) -> None:
        return None

    @property
    def stats(self) -> dict:
        return {"hops": self.blocks, "infer_ms_median": 0.0, "infer_ms_p99": 0.0, "infer_ms_max": 0.0,
                "realtime_factor": 0.0, "deadline_misses": 0, "late_results": 0, "skipped_windows": 0,
                "nonfinite_input": 0, "nonfinite_output": 0, "latency_ms": 0.0, "cuda_graph": False,
                "backend": "none (stems from a file)", "worker_deaths": 0, "worker_restarts": 0,
                "worker_given_up": 0, "error": None}

    def describe(self) -> str:
        return (f"{self.label}: {len(self.stems)} stems ({', '.join(self.stems)}), "
                f"{self.frames / self.sample_rate:.1f} s at {self.sample_rate} Hz, no model, zero latency")

    def start(self, timeout: float = 120.0) -> "StemDeck":
        return self

    def stop(self) -> None:
        pass

    def __enter__(self) -> "StemDeck":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def reset(self) -> None:
        self.pos = 0

    def reset_stats(self) -> None:
        self.blocks = 0

    # ------------------------------------------------------------------ per block
    def process_into(self, block: np.ndarray, stems: np.ndarray, dry: np.ndarray | None = None) -> None:
        """The stems at the block's position into ``stems`` (stems, channels, n), their sum into ``dry``."""
        n = block.shape[-1]
        if stems.shape[0] != len(self.stems) or stems.shape[-1] < n:
            raise AudioError(f"stems buffer of shape {stems.shape} for {len(self.stems)} stems and {n} frames")
        start = self._position() - n if self._position is not None else self.pos
        self.pos = start + n
        self.blocks += 1
        done = 0
        while done < n:
            at = start + done
            if self.loop:
                at %= self.frames
            elif at >= self.frames or at < 0:
                stems[:, :, done:n] = 0.0
                break
            k = min(n - done, self.frames - at)
            stems[:, :, done:done + k] = self.audio[:, :, at:at + k]
            done += k
        if dry is not None:
            np.sum(stems[:, :, :n], axis=0, out=dry[:, :n])

    def process(self, block: np.ndarray) -> np.ndarray:
        """(channels, n) -> (stems, channels, n): the stems at the block's position (allocates)."""
        out = np.zeros((len(self.stems), self.channels, block.shape[-1]), np.float32)
        self.process_into(block, out)
        return out

    def flush(self) -> np.ndarray:
        return np.zeros((len(self.stems), self.channels, 0), np.float32)

    def separate(self, audio: np.ndarray, block: int = 4096) -> np.ndarray:
        """The whole song from the start, as the engine's ``separate``: (stems, channels, n)."""
        self.reset()
        n = audio.shape[-1]
        out = np.zeros((len(self.stems), self.channels, n), np.float32)
        for at in range(0, n, max(1, int(block))):
            m = min(block, n - at)
            self.process_into(audio[:, at:at + m], out[:, :, at:at + m])
        return out

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else math.nan
