"""The live audio path without a device: LivePath driven block by block, as the audio callback drives it."""
import numpy as np
import pytest
from standins import IdentityModel

import streamer
from bridge import StemSeparator
from bridge.live.path import FileSource, LivePath, check_routes, parse_channels, parse_route
from streamer.errors import SettingsError

from conftest import write_yaml

RATE = 44100
STEMS = ("vocals", "drums", "bass", "other")


@pytest.fixture
def config(tmp_path):
    return streamer.load_config(write_yaml(tmp_path / "four.yaml", stems=STEMS, target=None,
                                           extra_model={"num_stems": 4}, chunk_size=4410))


def separator(config, **kw):
    """Vocals = the input, the other stems silent (the residual, spread, is zero), inline (deterministic)."""
    return StemSeparator(IdentityModel(4), config, latency="low", **kw)


def run(path, blocks, in_channels=2, input_audio=None):
    """Drive ``path`` for ``blocks`` callbacks; returns the device output (frames, channels)."""
    b = path.blocksize
    out = np.zeros((blocks * b, path.out_channels), np.float32)
    for k in range(blocks):
        indata = None if input_audio is None else input_audio[k * b:(k + 1) * b]
        path.process(indata, out[k * b:(k + 1) * b])
    return out


def test_same_rate_first_bus_is_the_delayed_input_bit_for_bit(config):
    sep = separator(config)
    x = (np.random.default_rng(0).standard_normal((RATE, 2)) * 0.2).astype(np.float32)
    path = LivePath(sep, RATE, 256, 2, in_map=[0, 1])
    y = run(path, RATE // 256, input_audio=x)
    L = path.latency_frames
    assert L == sep.reported_latency_samples and path.resampling_ms == 0.0
    n = y.shape[0]
    np.testing.assert_array_equal(y[L:], x[:n - L])
    assert not y[:L].any()


def test_mono_input_channel_is_duplicated_and_routes_carry_their_source(config):
    sep = separator(config, buses=("main", "monitor"))
    sep.mixer["main"]["vocals"].mute = True
    routes = [parse_route("monitor:3-4", sep.mixer.bus_names, sep.stem_names, 2),
              parse_route("vocals:5", sep.mixer.bus_names, sep.stem_names, 2)]
    out_channels = check_routes(routes, 2)
    assert out_channels == 5
    x = np.zeros((RATE // 2, 3), np.float32)
    x[:, 2] = (np.random.default_rng(1).standard_normal(RATE // 2) * 0.2).astype(np.float32)
    path = LivePath(sep, RATE, 256, out_channels, routes, in_map=[2, 2])
    for _ in range(40):   # let the mute's ramp finish before the stream starts, as the session's warm-up does
        path.process(np.zeros((256, 3), np.float32), np.zeros((256, out_channels), np.float32))
    path.reset()
    y = run(path, x.shape[0] // 256, input_audio=x)
    L = path.latency_frames
    d = x[:y.shape[0] - L, 2]
    # main: vocals (= the input, for this model) muted, the rest silent: silence; monitor: the input
    # on both channels, sample-aligned with main; the vocals stem summed to mono on output 5
    assert np.abs(y[:, :2]).max() < 1e-6
    np.testing.assert_array_equal(y[L:, 2], d)
    np.testing.assert_array_equal(y[L:, 3], d)
    np.testing.assert_allclose(y[L:, 4], d, atol=1e-6)


@pytest.mark.parametrize("device_rate", [48000, 32000, 96000])
@pytest.mark.parametrize("file_input", [False, True])
def test_resampled_path_latency_is_exact(config, device_rate, file_input):
    """An impulse at device frame t comes out at exactly t + latency_frames, and the FIFO never runs dry."""
    sep = separator(config)
    blocks = int(1.5 * device_rate / 256)
    t = 1000
    if file_input:
        audio = np.zeros((2, RATE), np.float32)
        t_model = 1000
        audio[:, t_model] = 1.0
        path = LivePath(sep, device_rate, 256, 2, source=FileSource(audio))
        expected = t_model * device_rate / RATE + path.latency_frames
        y = run(path, blocks)
    else:
        x = np.zeros((blocks * 256, 2), np.float32)
        x[t] = 1.0
        path = LivePath(sep, device_rate, 256, 2, in_map=[0, 1])
        expected = t + path.latency_frames
        y = run(path, blocks, input_audio=x)
    assert (path.latency_frames - path.prime) * RATE % device_rate == 0   # a whole number of device frames
    peak = int(np.argmax(np.abs(y[:, 0])))
    assert abs(peak - expected) <= 0.5, (peak, expected)
    assert y[peak, 0] > 0.4   # band-limited by the resamplers (44.1 kHz inside)
    assert path.fifo_underflows == 0 and path.fifo_overflows == 0


def test_file_source_loops_and_ends():
    audio = np.arange(10, dtype=np.float32)[None].repeat(2, 0)
    src = FileSource(audio, loop=True)
    out = np.zeros((2, 25), np.float32)
    src.read(out, 25)
    np.testing.assert_array_equal(out[0], np.arange(25) % 10)
    once = FileSource(audio)
    once.read(out, 25)
    np.testing.assert_array_equal(out[0], np.r_[np.arange(10), np.zeros(15)])
    assert once.finished and not src.finished


def test_route_and_channel_errors():
    buses, stems = ["main", "monitor"], list(STEMS)
    assert parse_route("monitor:3-4", buses, stems, 2).first == 2
    for bad, words in [("monitor", "NAME:FIRST-LAST"), ("monitor:x", "whole numbers"), ("monitor:4-3", "FIRST <= LAST"),
                       ("monitor:3-5", "3 channels"), ("piano:3-4", "no bus or stem 'piano'"), ("main:0-1", "from 1")]:
        with pytest.raises(SettingsError, match=words):
            parse_route(bad, buses, stems, 2)
    with pytest.raises(SettingsError, match="output 2 is already used by the first bus"):
        check_routes([parse_route("monitor:2-3", buses, stems, 2)], 2)
    with pytest.raises(SettingsError, match="output 4 is already used by --route monitor:3-4"):
        check_routes([parse_route("monitor:3-4", buses, stems, 2), parse_route("vocals:4", buses, stems, 2)], 2)
    assert parse_channels("1,2") == [0, 1] and parse_channels("3") == [2]
    for bad in ["0", "a,b", ""]:
        with pytest.raises(SettingsError, match="counted from 1"):
            parse_channels(bad)
