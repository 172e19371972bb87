"""Stem mixer: gains, fader law, mute/solo, click-free ramps, bit-exact unity, buses, meters."""
import math

import numpy as np
import pytest
from standins import ContextModel

from bridge.mix.mixer import StemMixer, db_to_fader, fader_to_db
from streamer import StreamEngine

RATE = 44100
STEMS = ["vocals", "drums", "bass", "other"]


def blocks(rng, n_blocks=20, block=256, stems=4):
    return [(rng.standard_normal((stems, 2, block)) * 0.1).astype(np.float32) for _ in range(n_blocks)]


def run(mixer, stem_blocks, dry=None, buses=1):
    outs = []
    for i, s in enumerate(stem_blocks):
        out = np.zeros((buses, 2, s.shape[-1]), np.float32)
        mixer.process(s, out, None if dry is None else dry[i])
        outs.append(out)
    return np.concatenate(outs, axis=-1)


def test_fader_law_matches_x32_points():
    assert fader_to_db(0.75) == pytest.approx(0.0)
    assert fader_to_db(1.0) == pytest.approx(10.0)
    assert fader_to_db(0.5) == pytest.approx(-10.0)
    assert fader_to_db(0.25) == pytest.approx(-30.0)
    assert fader_to_db(0.0625) == pytest.approx(-60.0)
    assert fader_to_db(0.0) == -math.inf
    for f in (0.01, 0.1, 0.3, 0.6, 0.9):
        assert db_to_fader(fader_to_db(f)) == pytest.approx(f, abs=1e-9)


def test_gains_mute_and_additive_solo_after_the_ramp():
    rng = np.random.default_rng(0)
    mixer = StemMixer(STEMS, RATE, ramp_ms=1.0)
    mixer.stems["drums"].gain_db = -6.0
    mixer.stems["vocals"].mute = True
    b = blocks(rng, 4)
    out = run(mixer, b)[0]
    last = b[-1]
    expected = 10 ** (-6 / 20) * last[1] + last[2] + last[3]
    np.testing.assert_allclose(out[:, -256:], expected, atol=1e-6)
    mixer.stems["bass"].solo = True
    mixer.stems["other"].solo = True
    out = run(mixer, b)[0]
    np.testing.assert_allclose(out[:, -256:], last[2] + last[3], atol=1e-6)
    mixer.stems["other"].mute = True  # mute wins over solo
    out = run(mixer, b)[0]
    np.testing.assert_allclose(out[:, -256:], last[2], atol=1e-6)
    mixer.stems["other"].fader = 0.5  # -10 dB
    assert mixer.stems["other"].gain_db == pytest.approx(-10.0)


def test_changes_ramp_without_clicks():
    """A DC signal through a step change: the output moves by at most one ramp step per sample."""
    mixer = StemMixer(STEMS, RATE, ramp_ms=10.0)
    dc = np.full((4, 2, 256), 0.5, np.float32)
    run(mixer, [dc] * 2)
    mixer.stems["vocals"].mute = True
    mixer.stems["drums"].gain_db = 6.0
    out = run(mixer, [dc] * 4)[0]
    jumps = np.abs(np.diff(out, axis=-1)).max()
    assert jumps <= 0.5 * float(mixer.step) * 2 + 1e-6  # two stems ramping, each by one step per sample
    np.testing.assert_allclose(out[:, -1], 0.5 * (10 ** (6 / 20) + 2), atol=1e-5)


def test_unity_bus_is_the_delayed_input_bit_for_bit():
    rng = np.random.default_rng(1)
    audio = (rng.standard_normal((2, 20000)) * 0.3).astype(np.float32)
    engine = StreamEngine(ContextModel(4), STEMS, RATE, window=4410, hop=441, lookahead=882, residual="other")
    mixer = StemMixer(STEMS, RATE, buses=["main", "monitor"])
    mixer["monitor"]["vocals"].gain_db = -10.0
    outs = []
    for pos in range(0, audio.shape[1], 256):
        blk = audio[:, pos:pos + 256]
        stems = np.zeros((4, 2, blk.shape[1]), np.float32)
        dry = np.zeros_like(blk)
        engine.process_into(blk, stems, dry)
        out = np.zeros((2, 2, blk.shape[1]), np.float32)
        mixer.process(stems, out, dry)
        outs.append(out)
    y = np.concatenate(outs, axis=-1)
    lat = engine.latency_samples
    np.testing.assert_array_equal(y[0, :, lat:], audio[:, : audio.shape[1] - lat])  # main: untouched
    assert np.abs(y[1, :, lat:] - audio[:, : audio.shape[1] - lat]).max() > 1e-3     # monitor: vocals down


def test_buses_are_independent_and_meters_match_numpy():
    rng = np.random.default_rng(2)
    mixer = StemMixer(STEMS, RATE, buses=["main", "monitor"], ramp_ms=0.5)
    mixer["main"]["vocals"].mute = True
    mixer["monitor"]["drums"].solo = True
    b = blocks(rng, 3)
    out = run(mixer, b, buses=2)
    last = b[-1]
    np.testing.assert_allclose(out[0, :, -256:], last[1] + last[2] + last[3], atol=1e-6)
    np.testing.assert_allclose(out[1, :, -256:], last[1], atol=1e-6)
    for s, name in enumerate(STEMS):
        peak, rms = mixer.meter(name)
        assert peak == pytest.approx(20 * np.log10(np.abs(last[s]).max()), abs=1e-3)
        assert rms == pytest.approx(20 * np.log10(np.sqrt(np.mean(last[s].astype(np.float64) ** 2))), abs=1e-3)
    peak, _ = mixer.meter("bus:monitor")
    assert peak == pytest.approx(20 * np.log10(np.abs(out[1, :, -256:]).max()), abs=1e-3)
    silent = StemMixer(STEMS, RATE)
    run(silent, [np.zeros((4, 2, 64), np.float32)])
    assert silent.meter("vocals") == (-120.0, -120.0)


def test_bad_controls_are_refused():
    mixer = StemMixer(STEMS, RATE, buses=["main"])
    with pytest.raises(KeyError, match="no bus 'pa'"):
        mixer["pa"]
    with pytest.raises(KeyError, match="no stem 'guitar'"):
        mixer["main"]["guitar"]
    with pytest.raises(ValueError, match="NaN"):
        mixer.stems["vocals"].gain_db = float("nan")
    with pytest.raises(ValueError, match="distinct"):
        StemMixer(STEMS, RATE, buses=["a", "a"])
