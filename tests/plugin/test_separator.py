"""StemSeparator against pedalboard's own call contract: alignment, layouts, rates, per-stem effects."""
import numpy as np
import pytest
from pedalboard import Gain, Pedalboard, Reverb
from pedalboard_native._internal import AddLatency

from bridge import StemSeparator

from conftest import write_yaml
from plugin_helpers import RATE, config, noise, sep  # noqa: F401  (config: the fixture sep is built from)


def test_one_shot_is_aligned_and_unity_is_bit_exact(sep):
    x = noise(10000)
    y = sep(x, RATE)
    assert y.dtype == np.float32 and y.shape == x.shape
    np.testing.assert_array_equal(y, x)
    sep.stems["drums"].gain_db = -6  # not unity any more, still the same sum (drums are silent)
    np.testing.assert_allclose(sep(x, RATE), x, atol=1e-6)
    sep.stems["vocals"].mute = True
    y = sep(x, RATE)
    assert np.abs(y[:, 2000:]).max() < 1e-6  # vocals (= everything, for this model) muted after the ramp


def test_streaming_lengths_and_alignment_match_a_native_plugin_of_the_same_latency(sep):
    x = noise(20000, seed=1)
    native = Pedalboard([AddLatency(sep.reported_latency_samples)])
    ours, theirs = [], []
    for i in range(0, x.shape[1], 480):
        ours.append(sep(x[:, i:i + 480], RATE, buffer_size=480, reset=False))
        theirs.append(native(x[:, i:i + 480], RATE, buffer_size=480, reset=False))
    assert [o.shape[1] for o in ours] == [t.shape[1] for t in theirs]
    np.testing.assert_array_equal(np.concatenate(ours, axis=1), np.concatenate(theirs, axis=1))


def test_layouts_and_dtypes_as_pedalboard_decides_them(sep):
    x = noise(3000, seed=2)
    np.testing.assert_array_equal(sep(x.T, RATE), x.T)             # channels-last stays channels-last
    mono = x[0]
    y = sep(mono, RATE)
    assert y.shape == mono.shape
    np.testing.assert_allclose(y, mono, atol=1e-6)
    np.testing.assert_allclose(sep(x.astype(np.float64), RATE), x, atol=1e-6)
    with pytest.raises(TypeError, match="32-bit and 64-bit floating point"):
        sep((x * 1000).astype(np.int16), RATE)
    sep.reset()
    with pytest.raises(RuntimeError, match="Unable to determine channel layout"):
        sep(noise(2, channels=2), RATE)
    sep(x, RATE)
    assert sep(noise(2, channels=2), RATE).shape == (2, 2)  # layout known now
    with pytest.raises(ValueError, match="channels"):
        sep(noise(3000, channels=4), RATE)


def test_other_sample_rates(sep):
    t = np.arange(4800) / 48000
    x = np.stack([np.sin(2 * np.pi * 440 * t), 0.5 * np.sin(2 * np.pi * 3000 * t)]).astype(np.float32)
    y = sep(x, 48000)  # one-shot: resampled in and out
    assert y.shape == x.shape
    np.testing.assert_allclose(y[:, 200:-200], x[:, 200:-200], atol=1e-3)
    with pytest.raises(ValueError, match="model's rate"):
        sep(x, 48000, reset=False)


def test_per_stem_effect_latency_keeps_stems_aligned(sep):
    x = noise(15000, seed=5)
    before = sep.reported_latency_samples
    sep.stems["vocals"].effects = Pedalboard([AddLatency(300), Gain(-6)])
    assert sep.reported_latency_samples == before + sep.effects_block + 300
    y = sep(x, RATE)
    np.testing.assert_allclose(y, 10 ** (-6 / 20) * x, atol=1e-5)  # aligned, not smeared by 300 samples
    parts = [sep(x[:, i:i + 256], RATE, buffer_size=256, reset=False) for i in range(0, x.shape[1], 256)]
    joined = np.concatenate(parts, axis=1)
    assert joined.shape[1] == x.shape[1] - sep.reported_latency_samples
    np.testing.assert_allclose(joined, 10 ** (-6 / 20) * x[:, : joined.shape[1]], atol=1e-5)
    sep.stems["vocals"].effects = None  # mid-stream: the latency the host compensated stays (issue 13 item 8)
    assert sep.reported_latency_samples == before + sep.effects_block + 300
    sep.reset()
    assert sep.reported_latency_samples == before


def test_reverb_on_vocals_with_a_real_model(tmp_path):
    cfg = write_yaml(tmp_path / "m.yaml", stems=("vocals", "drums", "bass", "other"), target=None,
                     extra_model={"num_stems": 4}, chunk_size=8820)
    sep = StemSeparator.from_config(cfg, latency="balanced", buses=("main", "monitor"))
    sep.stems["vocals"].effects = Pedalboard([Reverb(room_size=0.8)])
    sep.mixer["monitor"]["vocals"].gain_db = -10
    x = noise(20000, seed=6)
    y = sep(x, RATE)
    assert y.shape == x.shape and np.isfinite(y).all()
    sep.output = "stems"
    assert sep(x, RATE).shape == (8, 20000)
    sep.output = "buses"
    both = sep(x, RATE)
    sep.output = "monitor"
    np.testing.assert_allclose(both[2:], sep(x, RATE), atol=1e-6)
    with pytest.raises(ValueError, match="latency must be one of"):
        StemSeparator.from_config(cfg, latency="fastest")
