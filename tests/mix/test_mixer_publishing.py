"""The mixer's cross-thread parameter publishing: control threads set targets (``_changed`` publishes
``_pending`` and bumps ``_version`` under a lock), the audio side picks them up at block boundaries
without locking. Changes hammered from several threads while blocks are mixed must converge to
exactly the final controls' targets; a change lands at the next block boundary, once."""
import math
import sys
import threading
import time

import numpy as np

from bridge.mix.mixer import StemMixer

RATE = 44100
STEMS = ["vocals", "drums", "bass", "other"]
BUSES = ("main", "monitor", "phones")
F32 = np.float32


def final_targets(mixer):
    return np.stack([mixer.buses[b].targets() for b in mixer.bus_names])


def expected_mix(stems, gains):
    """out (channels, n) = sum over stems of gains[s, i] * stems[s, :, i], in mix_bus's order, float32."""
    out = np.zeros(stems.shape[1:], F32)
    for s in range(stems.shape[0]):
        out += gains[s] * stems[s]
    return out


def control(mixer, seed, changes, errors):
    try:
        rng = np.random.default_rng(seed)
        for i in range(changes):
            if i % 8 == 0:
                time.sleep(0)  # yield the GIL now and then, so changes and blocks interleave finely
            bus = mixer.buses[BUSES[rng.integers(len(BUSES))]]
            c = bus.stems[STEMS[rng.integers(len(STEMS))]]
            op = rng.integers(5)
            if op == 0:
                c.gain_db = -math.inf if rng.random() < 0.1 else float(rng.uniform(-40, 6))
            elif op == 1:
                c.mute = bool(rng.random() < 0.3)
            elif op == 2:
                c.solo = bool(rng.random() < 0.2)
            elif op == 3:
                bus.gain_db = float(rng.uniform(-20, 6))
            else:
                c.fader = float(rng.uniform(0, 0.9))
    except Exception as exc:  # noqa: BLE001 - reported by the test thread
        errors.append(exc)


def test_hammered_controls_converge_to_the_final_targets():
    mixer = StemMixer(STEMS, RATE, buses=BUSES, ramp_ms=10.0)
    rng = np.random.default_rng(0)
    block = 64
    stems = (rng.standard_normal((len(STEMS), 2, block)) * 0.1).astype(F32)
    out = np.zeros((len(BUSES), 2, block), F32)
    errors = []
    threads = [threading.Thread(target=control, args=(mixer, seed, 3000, errors)) for seed in (1, 2, 3)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # interleave the threads as finely as possible
    try:
        blocks_during = pickups = 0
        applied = mixer._applied
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            mixer.process(stems, out)  # must never raise, whatever a control thread is doing
            assert np.isfinite(out).all()
            blocks_during += 1
            pickups += mixer._applied != applied
            applied = mixer._applied
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert not errors
    assert mixer._version == 3 * 3000
    assert blocks_during >= 50 and pickups >= 50  # blocks really ran while targets kept changing

    # no more changes: one ramp time after the last pickup every gain is exactly on its target
    expected = final_targets(mixer)
    samples = mixer.ramp_samples + 1
    for _ in range(samples // block + 1):
        mixer.process(stems, out)
        assert np.isfinite(out).all()
    assert mixer._applied == mixer._version
    np.testing.assert_array_equal(mixer._targets, expected)
    np.testing.assert_array_equal(mixer._current, expected)
    mixer.process(stems, out)  # a whole block at the final gains
    for b in range(len(BUSES)):
        np.testing.assert_allclose(out[b], expected_mix(stems, expected[b][:, None, None]), rtol=1e-6, atol=1e-7)
    assert (expected != 1).any() and (expected == 0).any()  # the final state is not trivial


def test_a_change_takes_effect_at_the_next_block_boundary_once():
    mixer = StemMixer(STEMS, RATE, ramp_ms=1.0)  # every change ramps over 44 samples
    rng = np.random.default_rng(1)
    n = 64
    blocks = [(rng.standard_normal((len(STEMS), 2, n)) * 0.1).astype(F32) for _ in range(5)]
    out = np.zeros((1, 2, n), F32)
    assert mixer.ramp_samples == 44

    mixer.process(blocks[0], out)
    np.testing.assert_array_equal(out[0], expected_mix(blocks[0], np.ones((4, 1, 1), F32)))
    assert mixer._version == mixer._applied == 0

    # between two blocks: published, but nothing on the audio side moves until the next block starts
    mixer.stems["drums"].mute = True
    assert mixer._version == 1 and mixer._applied == 0
    np.testing.assert_array_equal(mixer._pending[0], [1, 0, 1, 1])
    np.testing.assert_array_equal(mixer._targets[0], 1)
    np.testing.assert_array_equal(mixer._current[0], 1)

    # the next block ramps the drums down from its very first sample
    mixer.process(blocks[1], out)
    assert mixer._applied == 1
    ramp = np.zeros(n, F32)
    g, step = F32(1.0), (F32(0.0) - F32(1.0)) / F32(44)
    for i in range(43):
        g = F32(g + step)
        ramp[i] = g                          # and exactly 0 from the 44th sample on
    assert ramp[0] < 1 and ramp[-1] == 0  # the ramp starts at once and ends within the block
    gains = np.ones((4, 1, n), F32)
    gains[1, 0] = ramp
    np.testing.assert_allclose(out[0], expected_mix(blocks[1], gains), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(mixer._current[0], [1, 0, 1, 1])

    # picked up once: without a version bump, whatever sits in _pending is not copied again
    mixer._pending[0] = 0.5
    mixer.process(blocks[2], out)
    np.testing.assert_array_equal(mixer._targets[0], [1, 0, 1, 1])
    np.testing.assert_array_equal(out[0], expected_mix(blocks[2], np.array([1, 0, 1, 1], F32)[:, None, None]))

    # several changes while no block runs: one version each, all picked up together at the next block
    mixer.stems["bass"].gain_db = -6.0
    mixer.stems["vocals"].solo = True
    mixer.stems["bass"].solo = True
    assert mixer._version == 4 and mixer._applied == 1
    mixer.process(blocks[3], out)
    assert mixer._applied == 4
    expected = final_targets(mixer)
    np.testing.assert_array_equal(mixer._targets, expected)
    np.testing.assert_allclose(expected[0], [1, 0, 10 ** (-6 / 20), 0], rtol=1e-6)
    mixer.process(blocks[4], out)
    np.testing.assert_array_equal(mixer._current, expected)
    np.testing.assert_array_equal(out[0], expected_mix(blocks[4], expected[0][:, None, None]))
