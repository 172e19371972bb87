"""Timing the stem mixer per audio block (``stemstream bench-mixer``)."""
from __future__ import annotations

import time

import numpy as np

from .mixer import StemMixer


def time_mixer(stems: int, buses: int, block: int, blocks: int, sample_rate: int = 44100,
               change_every: int = 100) -> np.ndarray:
    """Seconds per ``StemMixer.process`` call over ``blocks`` blocks of noise, with a gain change every
    ``change_every`` blocks so the ramps run part of the time."""
    names = [f"stem{i}" for i in range(stems)]
    mixer = StemMixer(names, sample_rate, buses=[f"bus{i}" for i in range(buses)])
    rng = np.random.default_rng(0)
    audio = (rng.standard_normal((stems, 2, block)) * 0.1).astype(np.float32)
    dry = audio.sum(axis=0)
    out = np.zeros((buses, 2, block), np.float32)
    times = np.zeros(blocks)
    for i in range(blocks):
        if i % change_every == 0:
            mixer.stems[names[i // change_every % stems]].gain_db = float(rng.uniform(-12, 0))
        t0 = time.perf_counter()
        mixer.process(audio, out, dry)
        times[i] = time.perf_counter() - t0
    return times
