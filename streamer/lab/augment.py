"""Augmentation on the fly for training: every example is a new mixture.

What happens to one training example (each draw independent, probabilities and ranges in
:class:`Augment`; the defaults are what ``stemstream train`` uses unless ``--no-augment``):

* per stem, taken from a random song at a random offset (the remix itself, ``RemixDataset``):
  a speed change (pitch and tempo together, varispeed by resampling), a random gain, a random
  channel swap and polarity, then an effect chain with pedalboard: EQ (a peak and a shelf), a
  compressor, saturation, chorus, delay, reverb, each with its own probability and random
  settings (the stem after its effects is the target: the model learns to separate processed
  stems, as in a real mix); or the stem is left out (silent), so the model meets songs without
  vocals, without bass...
* on the mix bus: compression and limiting. Their gain is computed from the mixture and applied to
  every stem alike, so the mixture stays the exact sum of its stems (the targets stay consistent).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
import soxr

from ..audio import fit_length


@dataclass
class Augment:
    """Probabilities (``p_*``) and ranges of the augmentations; see the module docstring."""

    gain_db: tuple[float, float] = (-9.0, 3.0)       # per-stem gain, uniform in dB
    p_swap: float = 0.5                              # left/right swapped
    p_polarity: float = 0.5                          # polarity inverted
    p_speed: float = 0.3                             # varispeed (pitch and tempo together)
    speed: tuple[float, float] = (0.94, 1.06)        # about +-1 semitone
    p_silent: float = 0.08                           # the stem is missing from this example
    p_eq: float = 0.4                                # a peak filter and a shelf
    eq_db: tuple[float, float] = (-9.0, 9.0)
    p_compress: float = 0.25
    p_saturate: float = 0.15
    p_chorus: float = 0.1
    p_delay: float = 0.1
    p_reverb: float = 0.25
    p_bus_compress: float = 0.3                      # mix-bus compression (gain shared by all stems)
    p_limit: float = 0.3                             # mix-bus peak limiting (gain shared by all stems)

    @classmethod
    def off(cls) -> "Augment":
        """No augmentation beyond the remix's gain and channel swap (the earlier training recipe)."""
        aug = cls(gain_db=(-4.0, 3.0))
        for f in fields(cls):
            if f.name.startswith("p_") and f.name != "p_swap":
                setattr(aug, f.name, 0.0)
        return aug

    def describe(self) -> list[tuple[str, str]]:
        """(name, value) rows for the model card and the README."""
        return [(f.name, str(getattr(self, f.name))) for f in fields(self)]

    # ------------------------------------------------------------------ per stem
    def read_length(self, rng: np.random.Generator, length: int) -> tuple[int, float]:
        """How many samples to read for an output of ``length``, and the speed factor drawn."""
        speed = 1.0
        if rng.random() < self.p_speed:
            speed = float(rng.uniform(*self.speed))
        return int(math.ceil(length * speed)) + (8 if speed != 1.0 else 0), speed

    def stem(self, piece: np.ndarray, speed: float, length: int, rate: int, rng: np.random.Generator) -> np.ndarray:
        """(channels, n) float32 -> (channels, length) float32: speed, gain, swap, polarity, effects."""
        x = np.asarray(piece, np.float32)
        if speed != 1.0 and x.shape[-1] > 16:
            x = soxr.resample(x.T, rate * speed, rate, quality="HQ").T
        x = fit_length(np.ascontiguousarray(x, dtype=np.float32), length)
        if rng.random() < self.p_silent:
            return np.zeros_like(x)
        gain = 10 ** (rng.uniform(*self.gain_db) / 20)
        if rng.random() < self.p_polarity:
            gain = -gain
        if x.shape[0] == 2 and rng.random() < self.p_swap:
            x = x[::-1]
        x = np.ascontiguousarray(x * gain, dtype=np.float32)
        board = self._effects(rng)
        if board is not None and np.any(x):
            level = _rms(x)
            y = board(x, rate, reset=True)
            y = fit_length(np.asarray(y, np.float32), length)
            if np.isfinite(y).all() and _rms(y) > 0:
                x = (y * (level / _rms(y))).astype(np.float32)  # effects change colour, not level
        return x

    def _effects(self, rng: np.random.Generator):
        import pedalboard as pb

        chain = []
        if rng.random() < self.p_eq:
            chain.append(pb.PeakFilter(cutoff_frequency_hz=float(np.exp(rng.uniform(np.log(120), np.log(8000)))),
                                       gain_db=float(rng.uniform(*self.eq_db)), q=float(rng.uniform(0.5, 2.5))))
            shelf = pb.LowShelfFilter if rng.random() < 0.5 else pb.HighShelfFilter
            cutoff = rng.uniform(80, 300) if shelf is pb.LowShelfFilter else rng.uniform(3000, 10000)
            chain.append(shelf(cutoff_frequency_hz=float(cutoff), gain_db=float(rng.uniform(*self.eq_db))))
        if rng.random() < self.p_compress:
            chain.append(pb.Compressor(threshold_db=float(rng.uniform(-30, -10)), ratio=float(rng.uniform(2, 8)),
                                       attack_ms=float(rng.uniform(1, 30)), release_ms=float(rng.uniform(50, 300))))
        if rng.random() < self.p_saturate:
            chain.append(pb.Distortion(drive_db=float(rng.uniform(3, 15))))
        if rng.random() < self.p_chorus:
            chain.append(pb.Chorus(rate_hz=float(rng.uniform(0.3, 2.0)), depth=float(rng.uniform(0.1, 0.4)),
                                   mix=float(rng.uniform(0.2, 0.5))))
        if rng.random() < self.p_delay:
            chain.append(pb.Delay(delay_seconds=float(rng.uniform(0.08, 0.4)), feedback=float(rng.uniform(0.1, 0.4)),
                                  mix=float(rng.uniform(0.1, 0.3))))
        if rng.random() < self.p_reverb:
            chain.append(pb.Reverb(room_size=float(rng.uniform(0.1, 0.9)), damping=float(rng.uniform(0.2, 0.8)),
                                   wet_level=float(rng.uniform(0.1, 0.4)), dry_level=float(rng.uniform(0.7, 1.0))))
        return pb.Pedalboard(chain) if chain else None

    # ------------------------------------------------------------------ mix bus
    def mix_bus(self, stems: np.ndarray, rate: int, rng: np.random.Generator) -> np.ndarray:
        """(stems, channels, length) -> the same, with the mix bus's compression and limiting: one gain
        curve computed from the mixture, applied to every stem."""
        gain = None
        if rng.random() < self.p_bus_compress:
            mix = stems.sum(axis=0)
            gain = _compressor_gain(mix, rate, threshold_db=rng.uniform(-24, -8), ratio=rng.uniform(1.5, 4),
                                    attack_ms=rng.uniform(5, 30), release_ms=rng.uniform(60, 250))
        if rng.random() < self.p_limit:
            mix = stems.sum(axis=0) * (gain if gain is not None else 1.0)
            peak = float(np.abs(mix).max())
            if peak > 0:
                ceiling = peak * 10 ** (-rng.uniform(2, 8) / 20)  # shave 2-8 dB off the peaks
                limit = _limiter_gain(mix, rate, ceiling, release_ms=rng.uniform(20, 120))
                gain = limit if gain is None else gain * limit
        if gain is None:
            return stems
        return (stems * gain[None, None, :]).astype(np.float32)



def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def _smooth(level: np.ndarray, rate: int, attack_ms: float, release_ms: float) -> np.ndarray:
    """A peak follower: rises with the attack time constant, falls with the release one."""
    a = math.exp(-1.0 / max(1.0, attack_ms * 1e-3 * rate))
    r = math.exp(-1.0 / max(1.0, release_ms * 1e-3 * rate))
    out = np.empty_like(level)
    env = 0.0
    for i, v in enumerate(level):  # plain loop on a block envelope (see _block_level): a few thousand steps
        coeff = a if v > env else r
        env = coeff * env + (1 - coeff) * v
        out[i] = env
    return out


BLOCK = 64  # the envelopes are computed per block of samples and interpolated back


def _block_level(mix: np.ndarray) -> np.ndarray:
    """The mixture's peak over both channels per block of BLOCK samples."""
    peak = np.abs(mix).max(axis=0)
    n = peak.shape[-1]
    pad = (-n) % BLOCK
    return np.pad(peak, (0, pad)).reshape(-1, BLOCK).max(axis=1)


def _to_samples(gain_blocks: np.ndarray, n: int) -> np.ndarray:
    centres = (np.arange(gain_blocks.shape[0]) + 0.5) * BLOCK
    return np.interp(np.arange(n), centres, gain_blocks).astype(np.float32)


def _compressor_gain(mix: np.ndarray, rate: int, threshold_db: float, ratio: float, attack_ms: float,
                     release_ms: float) -> np.ndarray:
    level = _smooth(_block_level(mix), rate / BLOCK, attack_ms, release_ms)
    level_db = 20 * np.log10(np.maximum(level, 1e-9))
    peak_db = 20 * np.log10(max(float(np.abs(mix).max()), 1e-9))
    over = np.maximum(level_db - (peak_db + threshold_db), 0.0)  # threshold relative to the example's peak
    gain_db = -over * (1 - 1 / ratio)
    makeup = -float(gain_db.min()) * 0.5 if gain_db.size else 0.0
    return _to_samples(10 ** ((gain_db + makeup) / 20), mix.shape[-1])


def _limiter_gain(mix: np.ndarray, rate: int, ceiling: float, release_ms: float) -> np.ndarray:
    peak = _block_level(mix)
    need = np.minimum(1.0, ceiling / np.maximum(peak, 1e-12))       # gain each block needs
    # instant attack (the block's own need, and its neighbours' so interpolation does not overshoot),
    # smooth release
    need = np.minimum(need, np.minimum(np.roll(need, 1), np.roll(need, -1)))
    r = math.exp(-1.0 / max(1.0, release_ms * 1e-3 * rate / BLOCK))
    out = np.empty_like(need)
    g = 1.0
    for i, v in enumerate(need):
        g = v if v < g else r * g + (1 - r) * v
        out[i] = g
    return _to_samples(out, mix.shape[-1])
