"""The inference side: which window a late real-time worker jumps to (skip_target), and a WindowWorker
on a real ring publishing exactly the windows whose input arrived, with the right tags and data,
and nothing once the stream's generation changed."""
import numpy as np
import torch
from standins import ContextModel

from streamer.stream import kernels as rt
from streamer.stream.overlap import OverlapAdd, window_weights
from streamer.stream.ring import TAG_SHIFT, AudioSlot, SharedBuffers, WorkerSlot, ring_sizes
from streamer.stream.settings import StreamSettings, WorkerSettings
from streamer.stream.worker import WindowWorker, build_worker, skip_target

F32 = np.float32


# ---------------------------------------------------------------------------------------------- skip_target

def brute_skip_target(fed, next_end, hop, allowance):
    """The rule, from skip_target's docstring and the timing model: the window ending at e (a multiple
    of hop) finalises a region that starts playing when the input reaches e + allowance, so with
    ``fed`` samples in, it is still in time iff e + allowance >= fed. The target is the oldest window
    e >= next_end that is in time, but at most the newest complete window (fed // hop * hop), and
    never less than next_end (which is returned whenever it is in time or not yet complete)."""
    newest = max((m for m in range(0, fed + 1, hop)), default=0)
    e = next_end
    while e + allowance < fed:
        e += hop
    return max(next_end, min(e, newest))


def test_skip_target_matches_the_brute_force_rule():
    rng = np.random.default_rng(0)
    skipped = capped = 0
    for _ in range(3000):
        hop = int(rng.integers(1, 200))
        next_end = hop * int(rng.integers(1, 60))
        fed = int(rng.integers(0, next_end + 30 * hop))
        allowance = int(rng.integers(0, 4 * hop))
        got = skip_target(fed, next_end, hop, allowance)
        assert got == brute_skip_target(fed, next_end, hop, allowance), (fed, next_end, hop, allowance)
        assert got >= next_end and got % hop == 0
        assert got <= max(next_end, fed // hop * hop)  # never past the newest complete window
        if next_end + allowance >= fed:
            assert got == next_end  # still in time (or not even complete): no skip
        else:
            # every skipped window could only be late; the target is in time unless capped at the newest
            assert all(e + allowance < fed for e in range(next_end, got, hop))
            assert got + allowance >= fed or got == fed // hop * hop
            skipped += got > next_end
            capped += got + allowance < fed
    assert skipped > 100 and capped > 50


def test_skip_target_examples():
    hop = 100
    assert skip_target(fed=250, next_end=200, hop=hop, allowance=100) == 200  # plays from 300: in time
    assert skip_target(fed=300, next_end=200, hop=hop, allowance=100) == 200  # plays from 300: just in time
    assert skip_target(fed=301, next_end=200, hop=hop, allowance=100) == 300  # region 200 already playing
    assert skip_target(fed=1050, next_end=200, hop=hop, allowance=100) == 1000  # oldest in time: 1000
    assert skip_target(fed=1050, next_end=200, hop=hop, allowance=0) == 1000  # 1100 is in time but incomplete
    assert skip_target(fed=150, next_end=200, hop=hop, allowance=0) == 200  # not complete yet: no jump back


# ---------------------------------------------------------------------------------------------- WindowWorker

def ring(window, hop, lookahead, allowance, stems, channels):
    latency = lookahead + hop + allowance
    max_block, cap_in, num_slots = ring_sizes(window, hop, latency)
    b, _ = SharedBuffers.allocate(stems, channels, cap_in, num_slots, hop, shared=False)
    b.clear_stream()
    b.clear_counters()
    return b, max_block


def write(b, block):
    fed = int(b.audio_state[AudioSlot.FED])
    b.audio_state[AudioSlot.NONFINITE] += rt.write_input(block, b.in_ring, fed)
    b.audio_state[AudioSlot.FED] = fed + block.shape[1]


def region_of(x, k, hop, lookahead):
    """Input samples of hop region k ([k*hop - lookahead, (k+1)*hop - lookahead)), 0 before the start."""
    pos = np.arange(k * hop - lookahead, (k + 1) * hop - lookahead)
    return np.where(pos >= 0, x[:, np.clip(pos, 0, None)], F32(0))


def slot_data(b, k, hop):
    s = k % b.num_slots
    return b.out_ring[:, :, s * hop:(s + 1) * hop]


class Doubler:
    """A trivial runner: stems (window, 2 * window). Every window sees the same sample at the same
    stream position, so the overlap-add must return exactly that input (and twice it)."""

    def __init__(self):
        self.calls = 0

    def __call__(self, win):
        self.calls += 1
        return np.stack([win, 2 * win])


def test_run_due_publishes_exactly_the_windows_whose_input_arrived():
    rng = np.random.default_rng(1)
    window, hop, lookahead, allowance, channels = 48, 12, 12, 12, 2
    b, max_block = ring(window, hop, lookahead, allowance, 2, channels)
    b.audio_state[AudioSlot.GENERATION] = 7
    ola = OverlapAdd(2, 2, channels, window, hop, lookahead, window_weights(window, hop, lookahead, 6))
    runner = Doubler()
    worker = WindowWorker(b, runner, ola, window, hop, allowance)
    x = rng.standard_normal((channels, 4 * b.in_ring.shape[1])).astype(F32)  # wraps the input ring 4 times
    fed = done = 0
    while fed < x.shape[1]:
        n = int(min(rng.integers(1, max_block + 1), x.shape[1] - fed))
        write(b, x[:, fed:fed + n])
        fed += n
        assert worker.run_due() == fed // hop - done
        done = fed // hop
        assert worker.next_end == (done + 1) * hop
        assert int(b.worker_state[WorkerSlot.WINDOWS]) == done == runner.calls
        for k in range(max(0, done - b.num_slots), done):  # the regions still in the ring
            assert int(b.hop_tag[k % b.num_slots]) == (7 << TAG_SHIFT) | k
            assert b.is_published(k)
            expected = region_of(x, k, hop, lookahead)
            np.testing.assert_allclose(slot_data(b, k, hop), np.stack([expected, 2 * expected]), rtol=1e-6,
                                       atol=1e-6, err_msg=f"region {k}")
        assert not b.is_published(done)  # its window's input has not fully arrived
    assert done > 3 * b.num_slots
    assert int(b.worker_state[WorkerSlot.TIMES]) == done and (b.window_times() >= 0).all()
    assert int(b.worker_state[WorkerSlot.LATE]) == 0 and ola.nonfinite == 0


def test_a_generation_change_publishes_nothing():
    rng = np.random.default_rng(2)
    window, hop, lookahead, channels = 40, 10, 10, 2
    b, _ = ring(window, hop, lookahead, hop, 2, channels)
    runner = Doubler()
    worker = WindowWorker(b, runner, OverlapAdd(2, 2, channels, window, hop, lookahead,
                                                window_weights(window, hop, lookahead, 5)), window, hop, hop)
    x = rng.standard_normal((channels, 100)).astype(F32)
    write(b, x[:, :55])
    assert worker.run_due() == 5
    assert all(b.is_published(k) for k in range(5))
    data, windows = b.out_ring.copy(), int(b.worker_state[WorkerSlot.WINDOWS])

    # the owner resets the stream (clear, then bump the generation), new input arrives
    b.clear_stream()
    b.audio_state[AudioSlot.GENERATION] += 1
    write(b, x)
    old = worker.generation
    assert not worker.run_window(hop, old)  # computed for the old stream: dropped
    assert worker.run_due() == 5  # windows ending at 60..100, still for the old generation: all dropped
    assert runner.calls == 5 + 1 + 5  # they were computed, only not published
    np.testing.assert_array_equal(b.hop_tag, -1)
    np.testing.assert_array_equal(b.out_ring, data)
    assert int(b.worker_state[WorkerSlot.WINDOWS]) == windows

    # a reset while a window computes: the result belongs to the old stream
    worker.generation = int(b.audio_state[AudioSlot.GENERATION])
    worker.reset()
    gen = worker.generation

    def bump_meanwhile(win):
        b.audio_state[AudioSlot.GENERATION] += 1
        return runner(win)

    worker.runner = bump_meanwhile
    assert not worker.run_window(hop, gen)
    np.testing.assert_array_equal(b.hop_tag, -1)
    np.testing.assert_array_equal(b.out_ring, data)
    assert int(b.worker_state[WorkerSlot.WINDOWS]) == windows

    # following the new generation, windows publish again with its tag
    worker.runner = runner
    worker.generation = int(b.audio_state[AudioSlot.GENERATION])
    worker.reset()
    assert worker.run_due() == 10
    for k in range(10):
        assert int(b.hop_tag[k]) == (worker.generation << TAG_SHIFT) | k and b.is_published(k)
        expected = region_of(x, k, hop, lookahead)
        np.testing.assert_allclose(slot_data(b, k, hop), np.stack([expected, 2 * expected]), rtol=1e-6, atol=1e-6)
    assert int(b.worker_state[WorkerSlot.WINDOWS]) == windows + 10


def test_overwritten_input_is_not_computed_and_late_results_are_counted():
    window, hop, lookahead, channels = 40, 10, 10, 2
    b, _ = ring(window, hop, lookahead, hop, 2, channels)
    runner = Doubler()
    worker = WindowWorker(b, runner, OverlapAdd(2, 2, channels, window, hop, lookahead,
                                                window_weights(window, hop, lookahead, 5)), window, hop, hop)
    cap = b.in_ring.shape[1]
    b.audio_state[AudioSlot.FED] = 200 + cap + 1  # the window ending at 200 starts at 160: overwritten
    assert not worker.run_window(200, worker.generation)
    assert runner.calls == 0 and not b.is_published(200 // hop - 1)
    b.audio_state[AudioSlot.FED] = 160 + cap  # just still there
    b.audio_state[AudioSlot.CUR_HOP] = 200 // hop - 1  # playback already entered its region
    assert worker.run_window(200, worker.generation)
    assert b.is_published(200 // hop - 1)
    assert int(b.worker_state[WorkerSlot.LATE]) == 1


def test_build_worker_publishes_the_model_regions_and_the_residual_completes_the_input():
    """build_worker with a tiny torch model: each published region is the weighted average of the
    model's outputs of every window covering it (brute force), and the residual stem makes the stems
    sum to the input."""
    torch.manual_seed(0)
    rng = np.random.default_rng(3)
    window, hop, lookahead, crossfade, channels = 64, 16, 16, 8, 2
    model = ContextModel(stems=2)
    settings = WorkerSettings(stream=StreamSettings(window, hop, lookahead, crossfade), device="cpu", precision="fp32",
                              channels=channels, model_stems=2, stems_out=3, residual=2, threads=1, allowance=hop)
    b, _ = ring(window, hop, lookahead, hop, 3, channels)
    worker = build_worker(b, model, settings)
    x = rng.standard_normal((channels, 10 * hop + 5)).astype(F32)
    write(b, x[:, :100])
    write(b, x[:, 100:])
    assert worker.run_due() == 10

    w = window_weights(window, hop, lookahead, crossfade).astype(np.float64)
    pad = np.concatenate([np.zeros((channels, window), F32), x], axis=1)
    with torch.inference_mode():
        outs = [model(torch.from_numpy(pad[:, e:e + window].copy())[None])[0].double().numpy()
                for e in range(hop, 11 * hop + 1, hop)]  # windows ending at hop, 2 hop, ... (index shifted by pad)
    for k in range(10):
        pos = np.arange(k * hop - lookahead, (k + 1) * hop - lookahead)
        num, den = np.zeros((2, channels, hop)), np.zeros(hop)
        for j, y in enumerate(outs):
            idx = pos - ((j + 1) * hop - window)
            ok = (idx >= 0) & (idx < window)
            wj = np.where(ok, w[np.clip(idx, 0, window - 1)], 0)
            den += wj
            num += wj * np.where(ok, y[..., np.clip(idx, 0, window - 1)], 0)
        got = slot_data(b, k, hop)
        assert b.is_published(k)
        np.testing.assert_allclose(got[:2], num / den, rtol=1e-4, atol=1e-5, err_msg=f"region {k}")
        np.testing.assert_allclose(got.sum(axis=0), region_of(x, k, hop, lookahead), atol=1e-5)
    assert not b.is_published(10)
