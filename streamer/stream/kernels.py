"""Audio-side kernels of the streaming engine, compiled with numba.

These run on the caller's thread (an audio callback or a pedalboard-style ``process`` call), so
they allocate nothing, take no locks and never wait: they copy the block into the input ring and
read finished stems out of the output ring, falling back to the dry delayed input for any hop the
inference worker has not published in time.

Signatures are explicit (any memory layout, ``A``) so everything compiles once, at import, and is
cached on disk; no JIT compile can happen on the audio side later, whatever arrays are passed.

The shared-state slots come from ``streamer.stream.ring`` (``AudioSlot``); numba sees them as the
integer constants below, bound at compile time.
"""
from __future__ import annotations

import numpy as np
from numba import njit, types

from .ring import AUDIO_STATE_SIZE, TAG_SHIFT, AudioSlot

FED = int(AudioSlot.FED)
OUT_POS = int(AudioSlot.OUT_POS)
CUR_HOP = int(AudioSlot.CUR_HOP)
CUR_OK = int(AudioSlot.CUR_OK)
MISSES = int(AudioSlot.MISSES)
GENERATION = int(AudioSlot.GENERATION)

# the block may be read-only (np.frombuffer, a slice of a memory-mapped file): the signature says so, and a
# writable block matches it too, so there is still exactly one compiled version
_WRITE_SIG = types.int64(types.Array(types.float32, 2, "A", readonly=True), types.float32[:, :], types.int64)


@njit(_WRITE_SIG, cache=True, nogil=True)
def write_input(block, in_ring, fed):
    """Copy ``block`` (channels, n) into the ring at absolute position ``fed``; NaN/inf become 0.

    Returns the number of non-finite samples replaced.
    """
    channels, n = block.shape
    cap = in_ring.shape[1]
    bad = 0
    for i in range(n):
        pos = (fed + i) % cap
        for c in range(channels):
            v = block[c, i]
            if not np.isfinite(v):
                v = np.float32(0.0)
                bad += 1
            in_ring[c, pos] = v
    return bad


_READ_SIG = ("void(float32[:, :, :], float32[:, :, :], int64[:], float32[:, :], int64[:], float32[:], "
             "int64, int64, int64, int64, int64, float32)")


@njit(_READ_SIG, cache=True, nogil=True)
def read_output(out, out_ring, hop_tag, in_ring, state, gain, latency, hop, lookahead, num_slots, residual,
                fade_step):
    """Fill ``out`` (stems, channels, n) with the stems of the input delayed by ``latency``.

    Output sample t plays input sample m = t - latency; m < 0 (before the stream) is silence. Sample
    m belongs to hop region k = (m + lookahead) // hop, published by the worker in ring slot
    k % num_slots with tag (generation << TAG_SHIFT) | k. Whether a region is ready is decided once,
    when playback enters it: a region that was not ready is played entirely from the fallback (the
    dry delayed input in stem ``residual``, or split equally over the stems when residual < 0), so
    a result arriving half-way never causes a jump. After a fallback, separation fades back in
    linearly at ``fade_step`` per sample; ``gain[0]`` holds the current mix of separated vs dry.
    """
    stems, channels, n = out.shape
    cap_in = in_ring.shape[1]
    cap_out = out_ring.shape[2]
    gen_tag = state[GENERATION] << TAG_SHIFT
    t0 = state[OUT_POS]
    split = np.float32(1.0 / stems)
    for i in range(n):
        m = t0 + i - latency
        if m < 0:
            for s in range(stems):
                for c in range(channels):
                    out[s, c, i] = 0.0
            continue
        k = (m + lookahead) // hop
        if k != state[CUR_HOP]:
            state[CUR_HOP] = k
            if hop_tag[k % num_slots] == (gen_tag | k):
                state[CUR_OK] = 1
            else:
                state[CUR_OK] = 0
                state[MISSES] += 1
        dpos = m % cap_in
        if state[CUR_OK] == 1:
            slot = (m + lookahead) % cap_out
            g = gain[0]
            if g < 1.0:
                g = min(np.float32(1.0), g + fade_step)
                gain[0] = g
            if g >= 1.0:
                for s in range(stems):
                    for c in range(channels):
                        out[s, c, i] = out_ring[s, c, slot]
            else:
                for s in range(stems):
                    for c in range(channels):
                        if residual >= 0:
                            dry = in_ring[c, dpos] if s == residual else np.float32(0.0)
                        else:
                            dry = in_ring[c, dpos] * split
                        out[s, c, i] = g * out_ring[s, c, slot] + (np.float32(1.0) - g) * dry
        else:
            gain[0] = 0.0
            for s in range(stems):
                for c in range(channels):
                    if residual >= 0:
                        out[s, c, i] = in_ring[c, dpos] if s == residual else np.float32(0.0)
                    else:
                        out[s, c, i] = in_ring[c, dpos] * split
    state[OUT_POS] = t0 + n


@njit("void(float32[:, :], float32[:, :], int64, int64)", cache=True, nogil=True)
def read_dry(out, in_ring, out_pos, latency):
    """``out`` (channels, n) = the input delayed by ``latency``, for output samples from ``out_pos`` on."""
    channels, n = out.shape
    cap = in_ring.shape[1]
    for i in range(n):
        m = out_pos + i - latency
        for c in range(channels):
            out[c, i] = in_ring[c, m % cap] if m >= 0 else np.float32(0.0)


def warm_up() -> None:
    """Call every kernel once (they are compiled at import; this also loads numba's runtime)."""
    ring = np.zeros((1, 8), np.float32)
    write_input(np.zeros((1, 2), np.float32), ring, 0)
    read_dry(np.zeros((1, 2), np.float32), ring, 0, 1)
    state = np.zeros(AUDIO_STATE_SIZE, np.int64)
    state[CUR_HOP] = -1
    read_output(np.zeros((1, 1, 2), np.float32), np.zeros((1, 1, 4), np.float32), np.full(2, -1, np.int64),
                ring, state, np.ones(1, np.float32), 0, 2, 0, 2, -1, np.float32(0.5))
