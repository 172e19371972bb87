"""Per-stem effect chains: pedalboard plugins run on fixed blocks, with every stem kept sample-aligned.

Effects run in streaming mode on fixed blocks of ``block`` samples, so pedalboard never re-prepares
a plugin mid-stream (which would wipe reverb tails). Each chain's latency is measured when it is
assigned (the samples a streaming call withholds, or a VST3's reported latency, whichever is larger)
and every stem, processed or not, and the dry signal are delayed to the slowest chain plus one
block, so all of them stay aligned.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def plugin_latency(chain, sample_rate: int, channels: int, block: int) -> int:
    """Latency of a pedalboard plugin chain, measured the way pedalboard reports it: the samples a
    streaming call withholds (VST3 plugins also report it; the larger of the two is used)."""
    reported = int(getattr(chain, "reported_latency_samples", 0) or 0)
    chain.reset()
    probe = np.zeros((channels, block * 64), np.float32)
    got = 0
    for i in range(0, probe.shape[1], block):
        got += chain(probe[:, i:i + block], sample_rate, buffer_size=block, reset=False).shape[-1]
    chain.reset()
    return max(reported, probe.shape[1] - got)


class EffectStage:
    """The effect chains of a set of stems and the aligned stream through them."""

    def __init__(self, stem_names: Sequence[str], sample_rate: int, channels: int, block: int = 256):
        self.stem_names = list(stem_names)
        self.sample_rate = int(sample_rate)
        self.channels = int(channels)
        self.block = int(block)
        self.chains: dict[str, Any] = {}
        self.latencies: dict[str, int] = {}
        self.clear()

    @property
    def active(self) -> bool:
        return bool(self.chains)

    def get(self, name: str):
        return self.chains.get(name)

    def set(self, name: str, chain) -> None:
        """Give stem ``name`` this chain (None or an empty chain removes it); clears the stream."""
        if chain is None or (hasattr(chain, "__len__") and len(chain) == 0):
            self.chains.pop(name, None)
            self.latencies.pop(name, None)
        else:
            if not callable(getattr(chain, "process", None)):
                raise TypeError(f"effects for {name!r} must be a pedalboard plugin or Pedalboard, got {type(chain)}")
            self.chains[name] = chain
            self.latencies[name] = plugin_latency(chain, self.sample_rate, self.channels, self.block)
        self.clear()

    @property
    def latency_samples(self) -> int:
        """Extra latency of the stage: one block plus the slowest chain's latency (0 without effects)."""
        if not self.chains:
            return 0
        return self.block + max(self.latencies.values())

    def clear(self) -> None:
        """Start a new stream: chains reset, every stem primed with the stage's latency of silence."""
        self._in: list[np.ndarray] = []      # pending (stems + dry) samples
        self._in_len = 0
        self._out: dict[str, list[np.ndarray]] = {}
        self._ready: list[np.ndarray] = []
        if self.chains:
            # pedalboard chains return their output aligned with their input but withhold their latency,
            # and we feed them whole blocks: starting every stem (processed or not) this far behind keeps
            # enough output ready at every call and all stems sample-aligned
            lead = self.latency_samples
            self._ready = [np.zeros((len(self.stem_names) + 1, self.channels, lead), np.float32)]
            for name, chain in self.chains.items():
                chain.reset()
                self._out[name] = [np.zeros((self.channels, lead), np.float32)]

    def process(self, stems: np.ndarray, dry: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(stems, dry) delayed by ``latency_samples``, each stem through its chain, same length as given."""
        E = self.block
        self._in.append(np.concatenate([stems, dry[None]], axis=0))
        self._in_len += stems.shape[-1]
        if self._in_len >= E:
            pending = np.concatenate(self._in, axis=-1)
            usable = (pending.shape[-1] // E) * E
            self._in = [pending[..., usable:]]
            self._in_len = pending.shape[-1] - usable
            for pos in range(0, usable, E):
                block = pending[..., pos:pos + E].copy()
                for name, chain in self.chains.items():
                    s = self.stem_names.index(name)
                    processed = chain(block[s], self.sample_rate, buffer_size=E, reset=False)
                    self._out[name].append(np.asarray(processed, np.float32).reshape(self.channels, -1))
                self._ready.append(block)
        ready = np.concatenate(self._ready, axis=-1)
        m = stems.shape[-1]
        take = ready[..., :m]
        self._ready = [ready[..., m:]]
        result = take.copy()
        for name in self.chains:
            s = self.stem_names.index(name)
            chunks = np.concatenate(self._out[name], axis=-1)
            result[s] = chunks[:, :m]
            self._out[name] = [chunks[:, m:]]
        return result[:-1], result[-1]
