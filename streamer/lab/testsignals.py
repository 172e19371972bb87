"""Small deterministic multi-stem clips made from numpy alone, for demos and tests.

This is not music data for training (see the synth module for that); it gives every stem a
distinct, recognisable character so that separation output can be checked and listened to.
"""
from __future__ import annotations

import numpy as np

STEMS = ("vocals", "drums", "bass", "other")


def _note_hz(midi: float) -> float:
    return 440.0 * 2 ** ((midi - 69) / 12)


def generated_clip(seconds: float = 4.0, sample_rate: int = 44100, seed: int = 0,
                   channels: int = 2) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(mix, stems): stems are (channels, samples) float32 and the mix is their exact sum."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sample_rate))
    t = np.arange(n) / sample_rate
    bpm = rng.uniform(90, 130)
    beat = 60.0 / bpm
    root = rng.integers(45, 52)

    # vocals: a vibrato melody with harmonics and a formant-like emphasis, one note per beat
    steps = rng.choice([0, 2, 4, 5, 7, 9, 12], size=int(seconds / beat) + 2)
    idx = np.minimum((t / beat).astype(int), len(steps) - 1)
    f0 = np.array([_note_hz(root + 24 + s) for s in steps])[idx] * (1 + 0.01 * np.sin(2 * np.pi * 5.5 * t))
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    vocals = sum((0.6 / k) * np.sin(k * phase) * (1.0 if k in (2, 3) else 0.6) for k in range(1, 7))
    vocals *= np.clip(np.sin(np.pi * (t % beat) / beat) * 1.5, 0, 1)

    # drums: kick (pitched decay) on beats, hats (filtered noise) on off-beats
    drums = np.zeros(n)
    for b in np.arange(0, seconds, beat):
        i = int(b * sample_rate)
        m = min(n - i, int(0.25 * sample_rate))
        tt = np.arange(m) / sample_rate
        drums[i : i + m] += np.sin(2 * np.pi * (50 + 90 * np.exp(-tt * 30)) * tt) * np.exp(-tt * 12)
        j = int((b + beat / 2) * sample_rate)
        if j < n:
            k = min(n - j, int(0.05 * sample_rate))
            noise = np.diff(rng.standard_normal(k + 1))
            drums[j : j + k] += 0.3 * noise * np.exp(-np.arange(k) / sample_rate * 60)

    # bass: root and fifth, plucked
    bass_notes = np.array([_note_hz(root + (0 if i % 4 < 2 else 7)) for i in range(len(steps))])
    fb = bass_notes[idx]
    env = np.exp(-(t % beat) * 4)
    bass = (np.sin(2 * np.pi * np.cumsum(fb) / sample_rate) + 0.3 * np.sin(4 * np.pi * np.cumsum(fb) / sample_rate)) * env

    # other: a sustained major chord with slow tremolo
    chord = sum(np.sin(2 * np.pi * _note_hz(root + 12 + s) * t + rng.uniform(0, 6)) for s in (0, 4, 7))
    other = 0.25 * chord * (0.8 + 0.2 * np.sin(2 * np.pi * 0.5 * t))

    gains = {"vocals": 0.25, "drums": 0.35, "bass": 0.3, "other": 0.2}
    pans = {"vocals": 0.0, "drums": -0.2, "bass": 0.0, "other": 0.4}
    stems = {}
    for name, sig in zip(STEMS, (vocals, drums, bass, other)):
        sig = sig / (np.abs(sig).max() + 1e-9) * gains[name]
        if channels == 2:
            left, right = np.sqrt(0.5 * (1 - pans[name])), np.sqrt(0.5 * (1 + pans[name]))
            stems[name] = np.stack([sig * left, sig * right]).astype(np.float32)
        else:
            stems[name] = sig[None].astype(np.float32)
    mix = np.sum([stems[s] for s in STEMS], axis=0).astype(np.float32)
    return mix, stems
