"""A stream's window state on the server: the last ``window`` input samples and the overlap-add.

The client sends each new hop of input only; the server slides it into the stream's window, runs the
model on the whole window (batched with other streams' windows) and overlap-adds the stems exactly as a
local :class:`~streamer.stream.worker.WindowWorker` does, returning only the finished hop region. So a
stream through the service gives the stems a local engine with the same settings gives.
"""
from __future__ import annotations

import numpy as np

from ..errors import SettingsError
from ..inference.residual import output_stems
from ..stream.overlap import OverlapAdd, window_weights
from ..stream.settings import StreamSettings
from .protocol import ModelInfo, RemoteError


class StreamState:
    """One stream of one model: hop ``k`` of input completes the window ending at ``(k + 1) * hop``, whose
    finished region is hop region ``k`` (``streamer.stream.worker``'s numbering)."""

    def __init__(self, info: ModelInfo, hop: int | None = None, lookahead: int | None = None,
                 crossfade=None, residual: str | None = None, start_hop: int = 0):
        hop = info.hop if hop is None else hop
        lookahead = info.lookahead if lookahead is None else lookahead
        if crossfade is None and hop == info.hop and lookahead == info.lookahead:
            crossfade = info.crossfade
        self.settings = StreamSettings.make(info.window, hop, lookahead, crossfade, info.sample_rate)
        s = self.settings
        self.stems, residual_index = output_stems(list(info.stems), residual)
        self.model_stems = len(info.stems)
        self.channels = info.channels
        self.window, self.hop = s.window, s.hop
        weights = window_weights(s.window, s.hop, s.lookahead, s.crossfade)
        self.overlap = OverlapAdd(self.model_stems, len(self.stems), info.channels, s.window, s.hop, s.lookahead,
                                  weights, residual_index)
        self.win = np.zeros((info.channels, s.window), np.float32)
        if start_hop < 0:
            raise SettingsError(f"start_hop must be >= 0, got {start_hop}")
        self.next_hop = int(start_hop)
        self.primed = start_hop == 0   # a stream that starts later needs its window's earlier input first
        self.hops = 0

    def describe(self) -> dict:
        s = self.settings
        return {"window": s.window, "hop": s.hop, "lookahead": s.lookahead, "crossfade": s.crossfade,
                "stems": self.stems, "start_hop": self.next_hop}

    def shape_of(self, kind_name: str) -> tuple[int, ...] | None:
        if kind_name == "PRIME":
            return (self.channels, self.window - self.hop)
        if kind_name == "HOP":
            return (self.channels, self.hop)
        return None

    def prime(self, samples: np.ndarray) -> None:
        self.win[:, :self.window - self.hop] = samples
        self.primed = True

    def push(self, index: int, samples: np.ndarray) -> np.ndarray:
        """Slide hop ``index`` into the window; returns the window to run (a copy: it is also the dry input
        of :meth:`finish`)."""
        if not self.primed:
            raise RemoteError(f"hop {index} before the PRIME frame of a stream that starts at hop {self.next_hop}")
        if index != self.next_hop:
            raise RemoteError(f"hop {index} out of order (expected {self.next_hop}): open the stream again to skip")
        h = self.hop
        self.win[:, :-h] = self.win[:, h:]
        self.win[:, -h:] = samples
        self.next_hop += 1
        return self.win.copy()

    def finish(self, model_out: np.ndarray, window: np.ndarray) -> np.ndarray:
        """The window's stems (model_stems, channels, window) overlap-added: its finished region (a copy)."""
        self.hops += 1
        return self.overlap.add(model_out, window).copy()
