"""Mixer additions for remote control: batched changes, bypass, bus masters, and scenes with fades."""
import math
import time

import numpy as np
import pytest

from bridge.mix.mixer import StemMixer
from bridge.mix.scenes import Scene, SceneRecaller, audible_gains, current_state
from streamer.errors import SettingsError

STEMS = ["vocals", "drums", "bass", "other"]


def stems_audio(n=256, seed=0):
    return (np.random.default_rng(seed).standard_normal((4, 2, n)) * 0.2).astype(np.float32)


def test_a_batch_publishes_once_at_its_end():
    m = StemMixer(STEMS, 44100)
    v = m._version
    with m.batch():
        m.stems["vocals"].mute = True
        m.stems["drums"].gain_db = -6
        with m.batch():
            m.stems["bass"].solo = True
        assert m._version == v            # nothing reaches the audio side mid-batch
    assert m._version == v + 1
    assert m._pending[0].tolist() == pytest.approx([0.0, 0.0, 1.0, 0.0])


def test_bypass_crossfades_to_the_dry_input_and_back_exactly():
    m = StemMixer(STEMS, 44100, ramp_ms=1.0)
    stems, dry = stems_audio(), (np.random.default_rng(9).standard_normal((2, 256)) * 0.2).astype(np.float32)
    out = np.zeros((1, 2, 256), np.float32)
    m.stems["vocals"].mute = True
    m.process(stems, out, dry)            # the mute's ramp
    m.process(stems, out, dry)
    np.testing.assert_allclose(out[0], stems[1:].sum(0), atol=1e-6)
    m.bypass = True
    assert m.bypass
    m.process(stems, out, dry)            # 1 ms ramp = 44 samples, then the dry input itself
    np.testing.assert_array_equal(out[0, :, 60:], dry[:, 60:])
    assert not np.array_equal(out[0, :, :20], dry[:, :20])
    m.process(stems, out, dry)
    np.testing.assert_array_equal(out[0], dry)
    m.bypass = False
    m.process(stems, out, dry)
    m.process(stems, out, dry)
    np.testing.assert_allclose(out[0], stems[1:].sum(0), atol=1e-6)
    with pytest.raises(SettingsError):
        m.bypass = "yes"


def test_bus_master_mute_and_fader():
    m = StemMixer(STEMS, 44100, buses=("main", "monitor"))
    m["monitor"].mute = True
    assert m._pending[1].tolist() == [0.0] * 4 and m._pending[0].tolist() == [1.0] * 4
    m["monitor"].mute = False
    m["monitor"].fader = 0.5
    assert m["monitor"].gain_db == pytest.approx(-10.0)
    assert m._pending[1][0] == pytest.approx(10 ** (-10 / 20))


def test_a_scene_is_a_complete_state():
    m = StemMixer(STEMS, 44100, buses=("main", "monitor"))
    m.stems["drums"].gain_db = -20
    scenes = {"karaoke": Scene("karaoke", {"main": {"stems": {"vocals": {"mute": True}}}}),
              "full": Scene("full")}
    r = SceneRecaller(m, scenes)
    r.recall("karaoke")
    assert m.stems["vocals"].mute and m.stems["drums"].gain_db == 0.0   # unlisted: back to unity
    r.recall("full")
    assert not m.stems["vocals"].mute
    with pytest.raises(SettingsError, match="no scene 'nope'; scenes: karaoke, full"):
        r.recall("nope")
    for bad in (-1, math.nan, math.inf, "2"):
        with pytest.raises(SettingsError):
            r.recall("full", bad)


def test_a_scene_fade_moves_the_audible_gains_smoothly_and_ends_exact():
    m = StemMixer(STEMS, 44100, buses=("main",))
    r = SceneRecaller(m, {"karaoke": Scene("karaoke", {"main": {"stems": {"vocals": {"mute": True},
                                                                            "bass": {"gain_db": -6}}}})})
    start = time.monotonic()
    r.recall("karaoke", 0.3)
    seen = []
    while r.fading:
        seen.append(audible_gains(current_state(m), m)[0].copy())
        time.sleep(0.02)
    took = time.monotonic() - start
    assert 0.25 <= took <= 1.5
    mids = [g[0] for g in seen if 0.05 < g[0] < 0.95]
    assert mids, "the vocals went through intermediate gains"
    assert all(a >= b - 1e-9 for a, b in zip([g[0] for g in seen], [g[0] for g in seen][1:])), "monotonic"
    assert m.stems["vocals"].mute and m.stems["bass"].gain_db == pytest.approx(-6)
    np.testing.assert_allclose(audible_gains(current_state(m), m)[0], [0, 1, 10 ** (-6 / 20), 1], atol=1e-9)
