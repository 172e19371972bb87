"""Worker side of the streaming engine: crossfade weights and the overlap-add of window outputs.

Windows end at every multiple of ``hop`` (in input samples since the stream started) and span the
``window`` samples before that point. The window ending at e finalises the hop region
[e - lookahead - hop, e - lookahead); that region's samples are the weighted average of every
window whose weight covers them, divided by the summed weights, exactly as offline ``demix``
combines its chunks. A window's weight is therefore zero before position window - lookahead - hop,
so no window that ends later than e ever contributes to a region that e finalises.
"""
from __future__ import annotations

import numpy as np

from ..inference.chunks import msst_window
from ..inference.residual import apply_residual
from .settings import MSST_CROSSFADE, check_crossfade, check_lengths


def window_weights(window: int, hop: int, lookahead: int, crossfade: int | str) -> np.ndarray:
    """The weight of each position of a window, float32 of length ``window``.

    ``"msst"``: MSST's offline window (linear fades of window // 10 at both ends); needs
    lookahead == window - hop, so every position of every window counts, as offline.

    An int X: 1 on the window's own region [window - lookahead - hop, window - lookahead), a
    linear fade-in over its first X samples and a fade-out over the X samples after it (which lie
    in the look-ahead, so X <= lookahead). Each fade-in meets the previous window's fade-out, so
    neighbouring windows crossfade over X samples; X = 0 is a hard cut.
    """
    check_lengths(window, hop, lookahead)
    check_crossfade(window, hop, lookahead, crossfade)
    if crossfade == MSST_CROSSFADE:
        return msst_window(window).numpy().astype(np.float32)
    x = int(crossfade)
    w = np.zeros(window, np.float32)
    start, end = window - lookahead - hop, window - lookahead
    w[start:end] = 1.0
    if x:
        ramp = ((np.arange(x) + 0.5) / x).astype(np.float32)
        w[start:start + x] = ramp
        w[end:end + x] = 1.0 - ramp
    return w


class OverlapAdd:
    """Accumulates window outputs and hands out finished hop regions.

    ``stems_out`` is the number of output stems: the model's stems, plus one when the residual stem
    is not among them. ``residual`` (``streamer.inference.residual``): -1 none; -2 spread, every stem
    gets an equal share of the dry input minus the stems' sum; an index >= 0, that residual stem is
    never taken from the model but is the dry input minus the other stems. Either way the stems sum
    to the input.
    """

    def __init__(self, model_stems: int, stems_out: int, channels: int, window: int, hop: int, lookahead: int,
                 weights: np.ndarray, residual: int = -1):
        self.model_stems = model_stems
        self.window, self.hop, self.lookahead = window, hop, lookahead
        self.weights = weights.astype(np.float32)
        self.residual = residual
        self.acc = np.zeros((stems_out, channels, window), np.float32)
        self.wsum = np.zeros(window, np.float32)
        self.region = np.zeros((stems_out, channels, hop), np.float32)
        self.nonfinite = 0
        self._first, self._last = window - lookahead - hop, window - lookahead

    def reset(self) -> None:
        self.acc[:] = 0
        self.wsum[:] = 0

    def shift(self, samples: int) -> None:
        """Move the accumulators ``samples`` later in time (the next window ends that much later)."""
        if samples <= 0:
            return
        if samples >= self.window:
            self.reset()
            return
        self.acc[..., :-samples] = self.acc[..., samples:]
        self.acc[..., -samples:] = 0
        self.wsum[:-samples] = self.wsum[samples:]
        self.wsum[-samples:] = 0

    def add(self, model_out: np.ndarray, dry: np.ndarray) -> np.ndarray:
        """Add one window's stems (model_stems, channels, window) and return its finished region.

        ``dry`` is the window's input (channels, window). The returned (stems_out, channels, hop)
        array is reused by the next call. Non-finite model output is replaced by 0 and counted.
        """
        bad = ~np.isfinite(model_out)
        if bad.any():
            self.nonfinite += int(bad.sum())
            model_out = np.where(bad, np.float32(0), model_out)
        w = self.weights
        for s in range(self.model_stems):
            if s != self.residual:
                self.acc[s] += model_out[s] * w
        self.wsum += w
        a, b = self._first, self._last
        total = self.wsum[a:b]
        self.region[:] = 0
        np.divide(self.acc[..., a:b], total, out=self.region, where=total > 0)  # 0 where no window counts
        apply_residual(self.region, dry[:, a:b], self.residual)
        self.shift(self.hop)
        return self.region
