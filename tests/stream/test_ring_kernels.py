"""The audio-side ring kernels against a plain numpy/python model of the ring: write_input, read_dry,
read_output (hop tags, generations, the once-per-region fallback decision, the fade back in) and
ring_sizes. Randomised with fixed seeds, so a failure reproduces."""
import numpy as np
import pytest

from streamer.stream import kernels as rt
from streamer.stream.ring import TAG_SHIFT, AudioSlot, SharedBuffers, ring_sizes

F32 = np.float32


def buffers(stems, channels, cap_in, num_slots, hop):
    b, _ = SharedBuffers.allocate(stems, channels, cap_in, num_slots, hop, shared=False)
    b.clear_stream()
    b.clear_counters()
    return b


def with_nonfinite(rng, x, fraction=0.05):
    """``x`` with NaN, +inf and -inf at random positions (and a huge finite value, which must stay)."""
    x = x.copy()
    bad = rng.random(x.shape) < fraction
    x[bad] = rng.choice(np.array([np.nan, np.inf, -np.inf], F32), size=int(bad.sum()))
    x.flat[rng.integers(0, x.size)] = F32(3e38)
    return x


def finite(x):
    return np.where(np.isfinite(x), x, F32(0))


# ---------------------------------------------------------------------------------------------- write_input

@pytest.mark.parametrize("seed,start", [(0, 0), (1, 0), (2, 10**12 + 12345)])
def test_write_input_matches_a_numpy_ring(seed, start):
    """Every write lands at (absolute position % capacity), non-finite samples become 0 and are counted,
    and nothing else in the ring changes; blocks of 1..cap samples, many wrapping around the end."""
    rng = np.random.default_rng(seed)
    channels, cap = int(rng.integers(1, 4)), int(rng.integers(40, 300))
    b = buffers(2, channels, cap, 4, 8)
    ring = b.in_ring
    ring[:] = rng.standard_normal(ring.shape).astype(F32)  # stale contents must be overwritten, not kept
    ref = ring.copy()
    fed, wrapped, total_bad = start, 0, 0
    sizes = list(rng.integers(1, cap + 1, size=60)) + [1, cap, cap - 1]
    for n in sizes:
        n = int(n)
        block = with_nonfinite(rng, rng.standard_normal((channels, n)).astype(F32))
        bad = rt.write_input(block, ring, fed)
        pos = (fed + np.arange(n)) % cap
        ref[:, pos] = finite(block)
        assert bad == int((~np.isfinite(block)).sum())
        np.testing.assert_array_equal(ring, ref)
        assert np.isfinite(ring).all()
        wrapped += (fed % cap) + n > cap
        total_bad += bad
        fed += n
    assert wrapped >= 10 and total_bad > 0  # the interesting cases really happened


# ---------------------------------------------------------------------------------------------- read_dry

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_read_dry_is_the_delayed_input(seed):
    """read_dry(out, ring, out_pos, latency) = input sample out_pos + i - latency (0 before the stream
    starts), for any latency and block size, including reads that wrap around the ring end."""
    rng = np.random.default_rng(seed)
    channels, cap = 2, int(rng.integers(50, 200))
    b = buffers(2, channels, cap, 4, 8)
    x = with_nonfinite(rng, rng.standard_normal((channels, 12 * cap)).astype(F32), 0.01)
    xz = finite(x)
    fed, wrapped, before_start = 0, 0, 0
    while fed < x.shape[1]:
        n_in = int(min(rng.integers(1, cap + 1), x.shape[1] - fed))
        rt.write_input(x[:, fed:fed + n_in], b.in_ring, fed)
        fed += n_in
        for _ in range(3):
            n = int(rng.integers(1, cap // 2 + 1))
            # first input sample read: anywhere from before the stream start to fed - n, still in the ring
            m0 = int(rng.integers(max(-n - 10, fed - cap), fed - n + 1))
            latency = int(rng.integers(max(0, -m0), max(0, -m0) + 3 * cap))
            out_pos = m0 + latency
            out = np.full((channels, n), F32(np.nan))
            rt.read_dry(out, b.in_ring, out_pos, latency)
            m = np.arange(m0, m0 + n)
            expected = np.where(m >= 0, xz[:, np.clip(m, 0, None)], F32(0))
            np.testing.assert_array_equal(out, expected)
            wrapped += (m0 % cap) + n > cap and m0 >= 0
            before_start += m0 < 0
    assert wrapped >= 5 and before_start >= 1


# ---------------------------------------------------------------------------------------------- read_output

class RingModel:
    """A python model of read_output's rule (see its docstring), fed the same published regions."""

    def __init__(self, x, stems, hop, lookahead, latency, num_slots, residual, fade_step, generation):
        self.x = finite(x)  # the stream as write_input leaves it
        self.stems, self.hop, self.lookahead, self.latency = stems, hop, lookahead, latency
        self.num_slots, self.residual, self.fade_step, self.generation = num_slots, residual, F32(fade_step), generation
        self.slots = {}  # slot -> (generation, k, data (stems, channels, hop))
        self.out_pos, self.cur_hop, self.cur_ok, self.misses, self.gain = 0, -1, False, 0, F32(1.0)
        self.entered = set()
        self.blended = 0
        self.late_after_entry = 0

    def publish(self, k, data, generation):
        if k in self.entered:
            self.late_after_entry += 1
        self.slots[k % self.num_slots] = (generation, k, data)

    def fallback(self, m):
        fb = np.zeros((self.stems, self.x.shape[0]), F32)
        if self.residual >= 0:
            fb[self.residual] = self.x[:, m]
        else:
            fb[:] = self.x[:, m] * F32(1.0 / self.stems)
        return fb

    def read(self, n):
        out = np.zeros((self.stems, self.x.shape[0], n), F32)
        for i in range(n):
            m = self.out_pos + i - self.latency
            if m < 0:
                continue
            k = (m + self.lookahead) // self.hop
            if k != self.cur_hop:  # entering a region: decide once
                self.cur_hop = k
                self.entered.add(k)
                entry = self.slots.get(k % self.num_slots)
                self.cur_ok = entry is not None and entry[0] == self.generation and entry[1] == k
                self.misses += not self.cur_ok
            fb = self.fallback(m)
            if not self.cur_ok:
                self.gain = F32(0.0)
                out[:, :, i] = fb
                continue
            gen, kk, data = self.slots[k % self.num_slots]
            assert (gen, kk) == (self.generation, k), "a playing region was overwritten: ring too small"
            sep = data[:, :, (m + self.lookahead) % self.hop]
            if self.gain < 1:
                self.gain = min(F32(1.0), F32(self.gain + self.fade_step))
            if self.gain >= 1:
                out[:, :, i] = sep
            else:
                self.blended += 1
                out[:, :, i] = self.gain * sep + (F32(1.0) - self.gain) * fb
        self.out_pos += n
        return out


def drive_read_output(seed, fade_step, residual, stems=3, channels=2):
    """Stream random blocks through write_input/read_output while a fake worker publishes a random
    subset of regions (some late, some with a stale generation's tag); compare against RingModel."""
    rng = np.random.default_rng(seed)
    hop = int(rng.integers(8, 40))
    lookahead = int(rng.integers(0, 2 * hop + 1))
    allowance = int(rng.integers(0, hop + 1))
    window = lookahead + hop + int(rng.integers(0, 2 * hop))
    latency = lookahead + hop + allowance
    max_block, cap_in, num_slots = ring_sizes(window, hop, latency)
    b = buffers(stems, channels, cap_in, num_slots, hop)
    generation = 5
    b.audio_state[AudioSlot.GENERATION] = generation
    x = with_nonfinite(rng, rng.standard_normal((channels, 60 * hop)).astype(F32), 0.002)
    model = RingModel(x, stems, hop, lookahead, latency, num_slots, residual, fade_step, generation)

    # each region's fate: published with the right tag, with a stale generation's tag, or never; and after
    # how many blocks (past the one in which its window's input arrived) the fake worker gets to it
    fate = rng.choice(["ok", "stale", "never"], p=[0.6, 0.2, 0.2], size=x.shape[1] // hop + 2)
    delay = rng.choice([0, 0, 0, 1, 2, 6], size=fate.size)
    due = {}  # step -> regions to publish then
    eligible = 0  # regions 0..eligible-1 have had their window's input arrive
    fed, step, outs = 0, 0, []
    while fed < x.shape[1]:
        n = int(min(rng.integers(1, 3 * hop + 1), x.shape[1] - fed))
        assert n <= max_block
        rt.write_input(x[:, fed:fed + n], b.in_ring, fed)
        fed += n
        b.audio_state[AudioSlot.FED] = fed
        while (eligible + 1) * hop <= fed:
            due.setdefault(step + int(delay[eligible]), []).append(eligible)
            eligible += 1
        for k in due.pop(step, []):
            if fate[k] == "never":
                continue
            data = rng.standard_normal((stems, channels, hop)).astype(F32)
            gen = generation if fate[k] == "ok" else generation - 1
            slot = k % num_slots
            b.out_ring[:, :, slot * hop:(slot + 1) * hop] = data
            b.hop_tag[slot] = (gen << TAG_SHIFT) | k  # data first, then the tag
            model.publish(k, data, gen)
        out = np.full((stems, channels, n), F32(np.nan))
        rt.read_output(out, b.out_ring, b.hop_tag, b.in_ring, b.audio_state, b.gain, latency, hop, lookahead,
                       num_slots, residual, F32(fade_step))
        expected = model.read(n)
        np.testing.assert_array_equal(out, expected, err_msg=f"block {step} (output samples {fed - n}..{fed})")
        assert int(b.audio_state[AudioSlot.MISSES]) == model.misses
        assert b.gain[0] == model.gain
        outs.append(out)
        step += 1
    st = b.audio_state
    assert int(st[AudioSlot.OUT_POS]) == fed == model.out_pos
    assert int(st[AudioSlot.CUR_HOP]) == model.cur_hop and bool(st[AudioSlot.CUR_OK]) == model.cur_ok
    # the scenario exercised what it should: hits, misses, stale tags and results arriving too late
    assert model.misses >= 5 and len(model.entered) - model.misses >= 5
    assert model.late_after_entry >= 1
    assert (fate[sorted(model.entered)] == "stale").sum() >= 1
    return model


def test_read_output_without_fade_follows_the_model_residual_stem():
    model = drive_read_output(seed=0, fade_step=1.0, residual=1)
    assert model.blended == 0  # fade_step 1: a region is either fully separated or fully dry


def test_read_output_without_fade_split_over_stems():
    model = drive_read_output(seed=1, fade_step=1.0, residual=-1, stems=4)
    assert model.blended == 0


@pytest.mark.parametrize("seed,residual", [(2, 0), (3, -1), (4, 2), (5, -2)])  # -2: spread, dry split as for -1
def test_read_output_fades_back_in_after_a_fallback(seed, residual):
    model = drive_read_output(seed=seed, fade_step=1 / 23, residual=residual)
    assert model.blended >= 20  # the linear fade really ran


def test_read_output_ignores_a_region_published_after_playback_entered_it():
    """Deterministic: region 0 is missing when playback enters it, then published half-way: the rest of
    the region still plays dry (one miss), and region 1, ready in time, plays separated."""
    stems, channels, hop, lookahead, latency, slots = 2, 1, 4, 0, 4, 4
    b = buffers(stems, channels, 64, slots, hop)
    x = np.arange(1, 17, dtype=F32)[None]
    rt.write_input(x, b.in_ring, 0)
    b.audio_state[AudioSlot.FED] = 16
    args = (b.out_ring, b.hop_tag, b.in_ring, b.audio_state, b.gain, latency, hop, lookahead, slots, 1, F32(1.0))
    out = np.zeros((stems, channels, 6), F32)
    rt.read_output(out, *args)  # output 0..5: silence, then input 0, 1 (region 0 unpublished)
    np.testing.assert_array_equal(out[1, 0], [0, 0, 0, 0, 1, 2])
    np.testing.assert_array_equal(out[0, 0], 0)
    for k in (0, 1):
        b.out_ring[:, :, k * hop:(k + 1) * hop] = 100 + 10 * k + np.arange(hop, dtype=F32)
        b.hop_tag[k] = b.tag(k)
    out = np.zeros((stems, channels, 4), F32)
    rt.read_output(out, *args)  # output 6..9: input 2, 3 (region 0, still dry), 4, 5 (region 1, separated)
    np.testing.assert_array_equal(out[:, 0], [[0, 0, 110, 111], [3, 4, 110, 111]])
    assert int(b.audio_state[AudioSlot.MISSES]) == 1


# ---------------------------------------------------------------------------------------------- layouts

def test_kernels_take_non_contiguous_arrays_without_a_new_signature():
    rng = np.random.default_rng(7)
    kernels = (rt.write_input, rt.read_dry, rt.read_output)
    assert [len(k.signatures) for k in kernels] == [1, 1, 1]
    stems, channels, hop, slots, cap, n = 3, 2, 16, 6, 200, 50
    x = rng.standard_normal((channels, 150)).astype(F32)

    contiguous = buffers(stems, channels, cap, slots, hop)
    strided = buffers(stems, channels, cap, slots, hop)
    rt.write_input(x, contiguous.in_ring, 0)
    assert rt.write_input(np.ascontiguousarray(x.T).T, strided.in_ring, 0) == 0  # a transposed view
    np.testing.assert_array_equal(strided.in_ring, contiguous.in_ring)
    ring = np.zeros((channels, 2 * cap), F32)[:, ::2]  # a strided ring too
    assert rt.write_input(x[:, ::3], ring, 190) == 0  # a strided block, wrapping
    np.testing.assert_array_equal(np.concatenate([ring[:, 190:], ring[:, :40]], axis=1), x[:, ::3])

    dry = np.empty((channels, n), F32)
    dry_t = np.empty((n, channels), F32).T
    rt.read_dry(dry, contiguous.in_ring, 70, 20)
    rt.read_dry(dry_t, contiguous.in_ring, 70, 20)
    np.testing.assert_array_equal(dry_t, x[:, 50:100])
    np.testing.assert_array_equal(dry, dry_t)

    contiguous.out_ring[:] = rng.standard_normal(contiguous.out_ring.shape).astype(F32)
    strided.out_ring[:] = contiguous.out_ring
    for b in (contiguous, strided):
        b.hop_tag[:] = [b.tag(k) if k % 2 else -1 for k in range(slots)]  # regions 1, 3, 5 published
    out = np.empty((stems, channels, n), F32)
    out_t = np.empty((n, channels, stems), F32).transpose(2, 1, 0)
    for b, o in ((contiguous, out), (strided, out_t)):
        rt.read_output(o, b.out_ring, b.hop_tag, b.in_ring, b.audio_state, b.gain, 20, hop, 4, slots, -1,
                       F32(0.25))
    np.testing.assert_array_equal(out_t, out)
    assert np.isfinite(out).all() and np.abs(out).sum() > 0
    assert contiguous.audio_state[AudioSlot.MISSES] == strided.audio_state[AudioSlot.MISSES] > 0
    assert [len(k.signatures) for k in kernels] == [1, 1, 1]


# ---------------------------------------------------------------------------------------------- ring_sizes

def test_ring_sizes_hold_what_both_sides_need():
    """The input ring holds a window + the latency + two sub-blocks, the output ring covers the latency
    + a sub-block; so, with the audio side writing a sub-block of at most ``max_block`` and then reading
    as many output samples, (1) the dry input it reads is still in the ring, (2) a window is still whole
    in the ring until its region starts playing, and (3) the newest region the worker can publish never
    lands in the slot of a region still being played."""
    rng = np.random.default_rng(11)
    for _ in range(300):
        hop = int(rng.integers(1, 5000))
        window = hop + int(rng.integers(0, 5 * hop))
        lookahead = int(rng.integers(0, window - hop + 1))
        allowance = int(rng.integers(0, 3 * hop))
        latency = lookahead + hop + allowance
        max_block, cap_in, num_slots = ring_sizes(window, hop, latency)
        assert max_block == max(256, hop)
        assert cap_in >= window + latency + 2 * max_block
        assert num_slots * hop >= latency + max_block
        assert num_slots >= 5
        for n in rng.integers(1, max_block + 1, size=20):
            t = int(rng.integers(0, 50 * window))  # first output sample of the block
            fed = t + int(n)  # input written before the block's output is read
            assert fed - (t - latency) <= cap_in  # (1)
            # (2) a window ending at e plays its region from output e + allowance on
            e = (t - allowance) // hop * hop
            assert fed - (e - window) <= cap_in
            # (3) regions being played in this block vs the newest one whose window's input arrived
            oldest_playing = (t - latency + lookahead) // hop
            newest_publishable = fed // hop - 1
            assert newest_publishable - oldest_playing < num_slots
