"""Engine settings: validation into SettingsError, the presets table, and the one latency formula."""
import dataclasses

import pytest

import streamer
from streamer.errors import SettingsError, StemstreamError
from streamer.stream.settings import (DEFAULT_PRESET, PRESET_TABLE, PRESETS, StreamSettings, WorkerSettings,
                                      default_crossfade, seconds_to_samples)
from streamer.inference.residual import output_stems
from standins import ContextModel

from conftest import write_yaml

RATE = 44100


def test_settings_errors_are_stemstream_and_value_errors():
    with pytest.raises(SettingsError, match="cannot be longer than the window") as err:
        StreamSettings(1000, 2000, 0, 0)
    assert isinstance(err.value, StemstreamError) and isinstance(err.value, ValueError)
    with pytest.raises(SettingsError, match="cannot exceed the window"):
        StreamSettings(1000, 500, 600, 0)
    with pytest.raises(SettingsError, match="look-ahead"):
        StreamSettings(1000, 500, 100, 200)
    with pytest.raises(SettingsError, match="msst"):
        StreamSettings(1000, 250, 250, "msst")
    with pytest.raises(SettingsError, match="whole number"):
        StreamSettings(1000.5, 250, 250, 0)
    with pytest.raises(SettingsError, match="whole number of samples or 'msst'"):
        StreamSettings(1000, 250, 250, "fast")
    with pytest.raises(SettingsError, match=">= 1"):
        StreamSettings(0, 0, 0, 0)


def test_settings_are_frozen_and_normalised():
    s = StreamSettings(4410.0, 441, 441, 100.0)
    assert (s.window, s.crossfade) == (4410, 100) and isinstance(s.window, int) and isinstance(s.crossfade, int)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.hop = 1
    assert StreamSettings.make(4410, 1000, 500, None, RATE).crossfade == default_crossfade(1000, 500, RATE) == 441
    assert StreamSettings.make(4410, 100, 50, None, RATE).crossfade == 50


def test_the_latency_formula():
    s = StreamSettings(8820, 1000, 2000, 100)
    assert s.algorithmic_latency == 3000
    assert s.latency() == 3000 and s.latency(500) == 3500
    assert s.default_allowance == 1000 and s.live_latency == 4000
    assert s.latency_parts(700) == {"lookahead": 2000, "hop": 1000, "compute": 700, "algorithmic": 3000,
                                    "processing": 700, "total": 3700}
    # the engine reports exactly the formula, inline and in real time
    inline = streamer.StreamEngine(ContextModel(), ["a", "b", "c"], RATE, window=8820, hop=1000, lookahead=2000)
    assert inline.latency_samples == s.latency(0) and inline.latency_parts == s.latency_parts(0)
    live = streamer.StreamEngine(ContextModel(), ["a", "b", "c"], RATE, window=8820, hop=1000, lookahead=2000,
                                 realtime=True, worker="thread")
    assert live.latency_samples == s.live_latency and live.latency_parts["processing"] == s.default_allowance


def test_presets_come_from_one_table(tmp_path):
    assert PRESETS == tuple(PRESET_TABLE) and DEFAULT_PRESET in PRESETS
    assert set(PRESETS) == {"offline-exact", "balanced", "low"}
    config = streamer.load_config(write_yaml(tmp_path / "m.yaml", chunk_size=88200))
    exact = streamer.preset_settings("offline-exact", config)
    assert exact.crossfade == "msst" and exact.latency() == config.chunk_size
    for name in PRESETS:
        s = streamer.preset_settings(name, config)
        assert s.hop % config.stft_hop == 0 or name == "offline-exact"
    with pytest.raises(SettingsError, match="unknown latency preset 'fast'"):
        streamer.preset_settings("fast", config)


def test_worker_settings_are_typed_and_frozen():
    w = WorkerSettings(stream=StreamSettings(1000, 250, 250, 10), device="cpu", precision="fp32", channels=2,
                       model_stems=3, stems_out=3, residual=-1, threads=1, allowance=0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        w.threads = 4
    engine = streamer.StreamEngine(ContextModel(), ["a", "b", "c"], RATE, window=1000, hop=250, lookahead=250,
                                   residual="extra")
    ws = engine.worker_settings
    assert isinstance(ws, WorkerSettings) and ws.stream == engine.settings
    assert (ws.model_stems, ws.stems_out, ws.residual) == (3, 4, 3)


def test_output_stems_rule():
    assert output_stems(["vocals", "other"], None) == (["vocals", "other"], -1)
    assert output_stems(["vocals", "other"], "other") == (["vocals", "other"], 1)
    assert output_stems(["vocals"], "instrumental") == (["vocals", "instrumental"], 1)
    assert output_stems(["vocals", "other"], "spread") == (["vocals", "other"], -2)
    with pytest.raises(SettingsError, match="stem named 'spread'"):
        output_stems(["vocals", "spread"], "spread")


@pytest.mark.parametrize("value,message", [(-1, ">= 0"), (float("nan"), "number of seconds"),
                                           (float("inf"), "number of seconds"), ("1", "number of seconds"),
                                           (True, "number of seconds")])
def test_seconds_to_samples_refuses_bad_values(value, message):
    with pytest.raises(SettingsError, match=message):
        seconds_to_samples("--hop", value, RATE)
    assert seconds_to_samples("--hop", 0.25, RATE) == 11025
