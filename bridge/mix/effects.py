"""Per-stem effect chains: pedalboard plugins run on fixed blocks, with every stem kept sample-aligned.

Effects run in streaming mode on fixed blocks of ``block`` samples, so pedalboard never re-prepares
a plugin mid-stream (which would wipe reverb tails). Each chain's latency is measured when it is
assigned (the samples a streaming call withholds, or a VST3's reported latency, whichever is larger).
Every stem, processed or not, and the dry signal are delayed by the stage's latency: one block plus
the stream's *latency budget*, so all of them stay aligned.

The latency budget is fixed for a whole stream, because the host has already compensated the
stage's latency. With ``latency_budget=N`` it is always N samples (and the stage always delays by
``block + N``, with or without effects); without it, it is the slowest chain's latency when the
stream starts (``clear()``), and a stream that starts without effects has no room for any. A chain
whose latency exceeds the budget is refused with a ``SettingsError`` (a ``ValueError``) and nothing
changes; between streams (before any ``process`` call after ``clear()``) chains may be assigned
freely when no fixed budget is given.

Changing a chain while streaming crossfades: the new chain starts (reset) on the next block not yet
processed, its output is aligned like every chain's, and over ``crossfade_ms`` (10 ms) the stem's
output moves from what it was to the new chain's with an equal-gain raised-cosine crossfade
(``w = sin^2``, ``1 - w``) while the old chain keeps running; swaps that come faster than the
crossfade nest (the mix so far fades into the new chain), and switching back to a chain that is
still fading out reuses it, without a reset.

A chain belongs to one stem: a chain, or a plugin inside it, that is already another stem's effects (or
still fading out of one) is refused with a ``SettingsError``, because plugins keep state (reverb tails,
delay lines, envelopes) and one object running on two stems would mix their signals. Give each stem
its own chain (build the same ``Pedalboard([...])`` twice); a chain may move to another stem once the
first stem no longer uses it (after its crossfade).

A chain that returns inf or NaN loses that block: the stem's output fades from the last good sample
to silence over ``fault_fade_ms`` (3 ms), the chain is reset, and its output fades in again once it
restarts on the next block. ``nonfinite_blocks`` counts such blocks per stem; other stems are
untouched.
"""
from __future__ import annotations

import threading
from typing import Any, Sequence

import numpy as np

from streamer.errors import SettingsError


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


def chain_parts(chain) -> list:
    """The chain and every plugin inside it (pedalboard containers and ``bridge.Chain`` opened): what
    holds audio state. The objects are returned (not their ids), so they stay alive while compared."""
    import pedalboard

    parts, stack = [], [chain]
    while stack:
        part = stack.pop()
        if any(part is p for p in parts):
            continue
        parts.append(part)
        inner = getattr(part, "plugins", None)            # bridge.Chain
        if isinstance(inner, list):
            stack.extend(inner)
        elif isinstance(part, pedalboard.PluginContainer):  # Pedalboard, Chain, Mix
            stack.extend(list(part))
    return parts


def fade_in(v: np.ndarray) -> np.ndarray:
    """The crossfade's fade-in over ``v`` in [0, 1] (raised cosine, 0 to 1); ``1 - fade_in`` fades out,
    so the two always sum to one (equal gain)."""
    return (np.sin(0.5 * np.pi * np.clip(v, 0.0, 1.0)) ** 2).astype(np.float32)


def _is_empty(chain) -> bool:
    return chain is None or (hasattr(chain, "__len__") and len(chain) == 0)


class _Voice:
    """One chain running on a stem's blocks (``chain`` None: the stem itself), with its output for the
    stage's input positions ``[start, end)`` not yet emitted."""

    __slots__ = ("chain", "latency", "buf", "start", "end", "last", "fade_in_at")

    def __init__(self, chain, latency: int, start: int, channels: int):
        self.chain = chain
        self.latency = latency
        self.buf: list[np.ndarray] = []
        self.start = self.end = start
        self.last = np.zeros(channels, np.float32)   # the last sample it produced (for a fault fade)
        self.fade_in_at: int | None = None           # restarted here after a fault: fade in from here


class _StemFx:
    """What a stem sounds like: ``base`` fully, then each swap ``(at, voice)`` crossfading into ``voice``
    from input position ``at``."""

    __slots__ = ("base", "swaps")

    def __init__(self, base: _Voice):
        self.base = base
        self.swaps: list[tuple[int, _Voice]] = []

    def voices(self) -> list[_Voice]:
        seen: list[_Voice] = []
        for v in [self.base] + [v for _, v in self.swaps]:
            if not any(v is u for u in seen):
                seen.append(v)
        return seen


class EffectStage:
    """The effect chains of a set of stems and the aligned stream through them."""

    def __init__(self, stem_names: Sequence[str], sample_rate: int, channels: int, block: int = 256,
                 latency_budget: int | None = None, crossfade_ms: float = 10.0, fault_fade_ms: float = 3.0):
        self.stem_names = list(stem_names)
        self.sample_rate = int(sample_rate)
        self.channels = int(channels)
        self.block = int(block)
        if latency_budget is not None and int(latency_budget) < 0:
            raise SettingsError(f"the effects latency budget must be 0 samples or more, got {latency_budget}")
        self.latency_budget = None if latency_budget is None else int(latency_budget)
        self.crossfade_samples = max(1, int(round(crossfade_ms * self.sample_rate / 1000)))
        self.fault_fade_samples = max(1, int(round(fault_fade_ms * self.sample_rate / 1000)))
        self.chains: dict[str, Any] = {}
        self.latencies: dict[str, int] = {}
        self.nonfinite_blocks: dict[str, int] = {name: 0 for name in self.stem_names}
        self._index = {name: i for i, name in enumerate(self.stem_names)}
        self._lock = threading.RLock()
        self.clear()

    # ------------------------------------------------------------------ state
    @property
    def active(self) -> bool:
        """Whether the stage is in the signal path (it delays the stream) for this stream."""
        return self._lead > 0

    @property
    def latency_samples(self) -> int:
        """Extra latency of the stage for this stream: one block plus the latency budget (0 without
        effects and without a fixed budget). It never changes between two ``clear()`` calls once
        ``process`` has run."""
        return self._lead

    def get(self, name: str):
        return self.chains.get(name)

    def clear(self) -> None:
        """Start a new stream: chains reset, every stem primed with the stage's latency of silence."""
        with self._lock:
            if self.latency_budget is not None:
                self._lead = self.block + self.latency_budget
            else:
                self._lead = self.block + max(self.latencies.values()) if self.chains else 0
            lead = self._lead
            self._in: list[np.ndarray] = []      # pending (stems + dry) samples
            self._in_len = 0
            self._ready: list[np.ndarray] = []
            self._fed = 0          # input position of the next block the chains get
            self._emitted = 0      # samples returned so far (output position)
            self._started = False
            self._fx: dict[str, _StemFx] = {}
            if lead:
                # pedalboard chains return their output aligned with their input but withhold their latency,
                # and we feed them whole blocks: starting every stem (processed or not) this far behind keeps
                # enough output ready at every call and all stems sample-aligned
                self._ready = [np.zeros((len(self.stem_names) + 1, self.channels, lead), np.float32)]
            for name, chain in self.chains.items():
                chain.reset()
                v = _Voice(chain, self.latencies[name], -lead, self.channels)
                v.buf, v.end = [np.zeros((self.channels, lead), np.float32)], 0
                self._fx[name] = _StemFx(v)

    # ------------------------------------------------------------------ chains
    def set(self, name: str, chain, live: bool | None = None) -> None:
        """Give stem ``name`` this chain (None or an empty chain removes it).

        Between streams the stream is re-primed (``clear()``); while streaming (``process`` ran since
        the last ``clear()``, or ``live`` is true: the caller streams without calling ``process``) the
        stage's latency stays and the stem crossfades into the new chain. A chain with more latency
        than the budget is refused (``SettingsError``) and nothing changes."""
        if name not in self._index:
            raise SettingsError(f"no stem {name!r}: the stems are {', '.join(self.stem_names)}")
        empty = _is_empty(chain)
        if not empty and not callable(getattr(chain, "process", None)):
            raise TypeError(f"effects for {name!r} must be a pedalboard plugin or Pedalboard, got {type(chain)}")
        target = None if empty else chain
        parts = [] if empty else chain_parts(chain)
        with self._lock:
            self._check_not_shared(name, parts)
            if self._started or live:
                running = self._voice_of(name, target)
                if running is not None:            # still sounding in this stem: no reset, no re-measuring
                    self._check(name, running.latency, True, running.chain is None)
                    self._assign(name, target, running.latency)
                    self._schedule(name, running)
                    return
        latency = 0 if empty else plugin_latency(chain, self.sample_rate, self.channels, self.block)
        with self._lock:
            live = bool(self._started or live)
            self._check(name, latency, live, empty)
            self._assign(name, target, latency)
            if live:
                self._schedule(name, _Voice(target, latency, self._fed, self.channels))
            else:
                self.clear()

    def _assign(self, name: str, chain, latency: int) -> None:
        if chain is None:
            self.chains.pop(name, None)
            self.latencies.pop(name, None)
        else:
            self.chains[name] = chain
            self.latencies[name] = latency

    def _check(self, name: str, latency: int, live: bool, empty: bool = False) -> None:
        if empty:
            return
        if self.latency_budget is not None:
            budget, why = self.latency_budget, "set when the effect stage was made"
        elif not live:
            return
        elif not self._lead:
            raise SettingsError(
                f"cannot add effects to {name!r} while streaming: this stream started without effects, so the "
                "effect stage adds no latency and adding some now would shift the output; assign effects "
                "before streaming (or after reset()), or give the effect stage a fixed latency budget")
        else:
            budget, why = self._lead - self.block, "fixed for this stream by the effects it started with"
        if latency > budget:
            raise SettingsError(
                f"effects for {name!r} have {latency} samples of latency, more than the effect stage's latency "
                f"budget of {budget} samples ({why}); the stage's latency cannot change while streaming: assign "
                "them between streams (after reset()) or give the effect stage a larger fixed latency budget")

    def _check_not_shared(self, name: str, parts: list) -> None:
        """Refuse a chain that is, or holds a plugin of, another stem's chain (see the module docstring)."""
        if not parts:
            return
        for other in self.stem_names:
            if other == name:
                continue
            chains = [self.chains.get(other)] + [v.chain for v in
                                                 (self._fx[other].voices() if other in self._fx else [])]
            for chain in chains:
                if chain is None:
                    continue
                theirs = chain_parts(chain)
                shared = next((p for p in parts if any(p is q for q in theirs)), None)
                if shared is None:
                    continue
                what = "this chain" if shared is parts[0] else f"its plugin {type(shared).__name__}"
                raise SettingsError(
                    f"effects for {name!r}: {what} is already in the effects of {other!r} (or still fading out "
                    "of them); a plugin keeps its state (reverb tails, delay lines), so one object cannot run on "
                    f"two stems: give {name!r} a chain of its own (build the same Pedalboard([...]) again)")

    def _voice_of(self, name: str, chain) -> _Voice | None:
        st = self._fx.get(name)
        if st is None:
            return None
        for v in st.voices():
            if v.chain is chain:
                return v
        return None

    def _schedule(self, name: str, voice: _Voice) -> None:
        """Crossfade stem ``name`` into ``voice`` from the next block not yet processed."""
        at = self._fed
        st = self._fx.get(name)
        if st is None:
            if voice.chain is None:
                return
            st = self._fx[name] = _StemFx(_Voice(None, 0, -self._lead, self.channels))
        if st.swaps and st.swaps[-1][0] == at:
            st.swaps[-1] = (at, voice)            # the previous swap has not sounded yet: replace it
        elif (st.swaps[-1][1] if st.swaps else st.base) is not voice:
            st.swaps.append((at, voice))

    # ------------------------------------------------------------------ audio
    def _feed(self, name: str, v: _Voice, x: np.ndarray, at: int) -> None:
        """Block ``x`` (input positions ``[at, at + block)``) through voice ``v``."""
        E = self.block
        y = np.asarray(v.chain(x, self.sample_rate, buffer_size=E, reset=False), np.float32)
        y = y.reshape(self.channels, -1)
        if not np.isfinite(y).all():
            # lose this block: fade the last good sample out, silence up to the next block, reset the
            # chain, which starts again (withholding its latency, so aligned) on the next block
            self.nonfinite_blocks[name] = self.nonfinite_blocks.get(name, 0) + 1
            v.chain.reset()
            n = at + E - v.end
            pad = np.zeros((self.channels, n), np.float32)
            f = min(self.fault_fade_samples, n)
            pad[:, :f] = v.last[:, None] * (1.0 - fade_in(np.arange(1, f + 1) / f))
            v.buf.append(pad)
            v.end = at + E
            v.last = np.zeros(self.channels, np.float32)
            v.fade_in_at = at + E
            return
        k = y.shape[1]
        if not k:
            return
        if v.fade_in_at is not None:
            pos = v.end - v.fade_in_at
            y = y * fade_in((pos + np.arange(k)) / self.fault_fade_samples)
            if pos + k >= self.fault_fade_samples:
                v.fade_in_at = None
        v.buf.append(y)
        v.end += k
        v.last = y[:, -1].copy()

    def _take(self, v: _Voice, q: int, m: int) -> np.ndarray:
        """Voice ``v``'s output for input positions ``[q, q + m)`` (silence where it has none), consumed."""
        data = v.buf[0] if len(v.buf) == 1 else (np.concatenate(v.buf, axis=-1) if v.buf
                                                 else np.zeros((self.channels, 0), np.float32))
        lo = q - v.start
        if lo == 0 and data.shape[1] >= m:
            out = data[:, :m]
        else:
            out = np.zeros((self.channels, m), np.float32)
            a, b = max(0, -lo), min(m, data.shape[1] - lo)
            if b > a:
                out[:, a:b] = data[:, lo + a:lo + b]
        cut = min(max(0, q + m - v.start), data.shape[1])
        v.buf = [data[:, cut:]]
        v.start += cut
        return out

    def process(self, stems: np.ndarray, dry: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(stems, dry) delayed by ``latency_samples``, each stem through its chain, same length as given."""
        with self._lock:
            self._started = True
            if not self._lead:
                return stems, dry
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
                    for name, st in self._fx.items():
                        x = block[self._index[name]]
                        for v in st.voices():
                            if v.chain is not None:
                                self._feed(name, v, x, self._fed)
                    self._ready.append(block)
                    self._fed += E
            ready = np.concatenate(self._ready, axis=-1)
            m = stems.shape[-1]
            take = ready[..., :m]
            self._ready = [ready[..., m:]]
            q = self._emitted - self._lead          # input position of the first sample returned
            self._emitted += m
            result = take.copy()
            X = self.crossfade_samples
            for name in list(self._fx):
                st = self._fx[name]
                s = self._index[name]
                while st.swaps and st.swaps[0][0] + X <= q:   # crossfades over: the target sounds fully
                    st.base = st.swaps.pop(0)[1]
                if not st.swaps:
                    if st.base.chain is None:
                        del self._fx[name]                     # back to the plain (delayed) stem
                    else:
                        result[s] = self._take(st.base, q, m)
                    continue
                t = np.arange(q, q + m)
                voices = st.voices()
                gains = [np.ones(m, np.float32) if v is st.base else np.zeros(m, np.float32) for v in voices]
                for at, target in st.swaps:
                    w = fade_in((t - at) / X)
                    for i, v in enumerate(voices):
                        gains[i] *= 1.0 - w
                        if v is target:
                            gains[i] += w
                mix = np.zeros((self.channels, m), np.float32)
                for g, v in zip(gains, voices):
                    mix += g * (take[s] if v.chain is None else self._take(v, q, m))
                result[s] = mix
            return result[:-1], result[-1]
