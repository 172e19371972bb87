"""Device listing and selection (bridge.live.devices): fake PortAudio lists, then a real JACK server."""
from __future__ import annotations

import ctypes.util
import importlib.abc
import json
import os
import subprocess
import sys

import pytest

from bridge.live import devices as dv
from bridge.live.devices import Device, DeviceError, check_channels, find_device, format_table, query, to_json
from jack_helpers import JackServer, needs_jackd

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class FakeDeviceList(tuple):
    """Stands in for ``sounddevice.DeviceList``: a tuple of dicts."""


class FakePair:
    """Stands in for ``sd.default.device`` (``sounddevice._InputOutputPair``): [input, output]."""

    def __init__(self, input_value, output_value):
        self._pair = [input_value, output_value]

    def __getitem__(self, index):
        return self._pair[{"input": 0, "output": 1}.get(index, index)]


class FakeSD:
    """The parts of ``sounddevice`` that ``query`` uses, shaped like its return values."""

    def __init__(self, devices, hostapis, default=(-1, -1)):
        self._devices, self._hostapis = devices, hostapis
        self.default = type("default", (), {"device": FakePair(*default)})()

    def query_devices(self):
        return FakeDeviceList(dict(d) for d in self._devices)

    def query_hostapis(self):
        return tuple(dict(h) for h in self._hostapis)


def info(index, name, hostapi, ins, outs, rate=44100.0):
    """One entry of ``query_devices()``, with every key sounddevice 0.5.6 gives."""
    return {"name": name, "index": index, "hostapi": hostapi, "max_input_channels": ins,
            "max_output_channels": outs, "default_low_input_latency": 0.0058,
            "default_low_output_latency": 0.0116, "default_high_input_latency": 0.0058,
            "default_high_output_latency": 0.0116, "default_samplerate": rate}


DEVICES = [
    info(0, "jack", 0, 2, 2),
    info(1, "HDMI 0", 0, 0, 8, 48000.0),
    info(2, "USB Mic", 0, 1, 0, 48000.0),
    info(3, "system", 2, 2, 2),
    info(4, "system monitor", 2, 2, 0),
]
HOSTAPIS = [
    {"name": "ALSA", "devices": [0, 1, 2], "default_input_device": 0, "default_output_device": 0},
    {"name": "OSS", "devices": [], "default_input_device": -1, "default_output_device": -1},
    {"name": "JACK Audio Connection Kit", "devices": [3, 4], "default_input_device": 3,
     "default_output_device": 3},
]


def fake(default=(3, 3), devices=DEVICES, hostapis=HOSTAPIS):
    return FakeSD(devices, hostapis, default)


@pytest.fixture
def devs():
    return query(fake())


# --- query -------------------------------------------------------------------------------------

def test_query_builds_devices(devs):
    assert [d.index for d in devs] == [0, 1, 2, 3, 4]
    system = devs[3]
    assert system == Device(3, "system", "JACK Audio Connection Kit", 2, 2, 44100.0, True, True)
    assert devs[1].hostapi == "ALSA" and devs[1].default_samplerate == 48000.0
    assert [(d.default_input, d.default_output) for d in devs] == [(False, False)] * 3 + [(True, True), (False, False)]
    assert system.label() == "3: system (JACK Audio Connection Kit, 2 in, 2 out)"
    assert system.channels("input") == 2 and devs[1].channels("input") == 0 and devs[1].channels("output") == 8
    with pytest.raises(ValueError):
        system.channels("duplex")


def test_query_defaults_by_index_pair():
    devs = query(fake(default=(2, 1)))
    assert [d.index for d in devs if d.default_input] == [2]
    assert [d.index for d in devs if d.default_output] == [1]


def test_query_defaults_by_name():
    devs = query(fake(default=("system monitor", "hdmi")))
    assert find_device(None, "input", devs).name == "system monitor"
    assert find_device(None, "output", devs).name == "HDMI 0"


def test_query_default_minus_one_falls_back_to_first_host_api_default():
    devs = query(fake(default=(-1, -1)))
    assert find_device(None, "input", devs).name == "jack"
    assert find_device(None, "output", devs).name == "jack"


def test_query_unusable_default_falls_back():
    # 1 (HDMI) has no inputs; "nothing" matches no device; 99 does not exist
    for default in [(1, 99), ("nothing", "nothing"), (None, None)]:
        devs = query(fake(default=default))
        assert find_device(None, "input", devs).index == 0
        assert find_device(None, "output", devs).index == 0


def test_query_no_default_anywhere():
    hostapis = [dict(h, default_input_device=-1, default_output_device=-1) for h in HOSTAPIS]
    devs = query(fake(default=(-1, -1), hostapis=hostapis))
    assert not any(d.default_input or d.default_output for d in devs)
    with pytest.raises(DeviceError, match=r"^no default output device; choose one with --output "
                                          r"\(see `stemstream devices`\)$"):
        find_device(None, "output", devs)


def test_query_without_devices():
    devs = query(FakeSD([], HOSTAPIS[:2], (-1, -1)))
    assert devs == []


# --- find_device -------------------------------------------------------------------------------

@pytest.mark.parametrize("spec", [3, "3", " 3 "])
def test_find_by_index(devs, spec):
    assert find_device(spec, "output", devs).name == "system"


def test_find_by_exact_name_beats_substring(devs):
    # "system" is also a substring of "system monitor"; the exact match wins, ignoring case
    assert find_device("SYSTEM", "input", devs).index == 3


def test_find_by_unique_substring(devs):
    assert find_device("monitor", "input", devs).index == 4
    assert find_device("hdmi", "output", devs).index == 1
    assert find_device("mic", "input", devs).index == 2


def test_find_default(devs):
    assert find_device(None, "input", devs).index == 3


def test_find_no_match_lists_candidates_of_that_kind(devs):
    with pytest.raises(DeviceError) as err:
        find_device("Scarlett", "input", devs)
    message = str(err.value)
    assert message == ("no input device matches 'Scarlett'; input devices: 0: jack (ALSA, 2 in, 2 out), "
                       "2: USB Mic (ALSA, 1 in, 0 out), 3: system (JACK Audio Connection Kit, 2 in, 2 out), "
                       "4: system monitor (JACK Audio Connection Kit, 2 in, 0 out)")
    assert "HDMI" not in message and "\n" not in message


def test_find_several_matches(devs):
    with pytest.raises(DeviceError) as err:
        find_device("sys", "input", devs)
    assert str(err.value) == ("'sys' matches 2 input devices: 3: system (JACK Audio Connection Kit, 2 in, 2 out), "
                              "4: system monitor (JACK Audio Connection Kit, 2 in, 0 out); "
                              "use the index or a longer name")


def test_find_same_name_twice_asks_for_the_index():
    devs = query(fake(devices=DEVICES + [info(5, "system", 0, 2, 2)]))
    with pytest.raises(DeviceError,
                       match=r"^'system' matches 2 output devices: 3: system .*5: system .*; use the index$"):
        find_device("system", "output", devs)
    assert find_device(5, "output", devs).hostapi == "ALSA"


def test_find_wrong_kind(devs):
    # HDMI 0 is output only; system monitor is input only
    with pytest.raises(DeviceError, match=r"^device 1: HDMI 0 \(ALSA, 0 in, 8 out\) has no input channels; "
                                          r"input devices: 0: jack"):
        find_device(1, "input", devs)
    with pytest.raises(DeviceError, match=r"^no input device matches 'HDMI'; input devices: "):
        find_device("HDMI", "input", devs)
    with pytest.raises(DeviceError, match=r"^no output device matches 'monitor'; output devices: "):
        find_device("monitor", "output", devs)
    # by exact name, the output-only twin is not a candidate: the input-capable device wins
    assert find_device("system monitor", "input", devs).index == 4


def test_find_missing_index(devs):
    with pytest.raises(DeviceError, match=r"^no device with index 7; output devices: 0: jack"):
        find_device("7", "output", devs)


def test_find_empty_name(devs):
    with pytest.raises(DeviceError, match=r"^empty output device name; output devices: "):
        find_device("  ", "output", devs)


@pytest.mark.parametrize("spec", [None, 0, "jack"])
def test_find_no_devices_of_that_kind(spec):
    devs = query(fake(devices=[info(0, "HDMI 0", 0, 0, 8)]))
    with pytest.raises(DeviceError) as err:
        find_device(spec, "input", devs)
    assert str(err.value) == ("no input devices found; on Linux without a sound card, "
                              "a JACK server (jackd -d dummy) provides one")
    with pytest.raises(DeviceError, match=r"^no output devices found; .*jackd -d dummy"):
        find_device(spec, "output", [])


def test_find_programming_errors(devs):
    with pytest.raises(ValueError, match="kind"):
        find_device(None, "duplex", devs)
    with pytest.raises(TypeError):
        find_device(3.0, "output", devs)


def test_device_error_is_a_stemstream_value_error():
    from streamer.errors import StemstreamError

    assert issubclass(DeviceError, StemstreamError) and issubclass(DeviceError, ValueError)


# --- check_channels ----------------------------------------------------------------------------

def test_check_channels(devs):
    system = devs[3]
    check_channels(system, "output", 2, "--route monitor:1-2")
    with pytest.raises(DeviceError) as err:
        check_channels(system, "output", 4, "--route monitor:3-4")
    assert str(err.value) == "output device 'system' has 2 output channels; --route monitor:3-4 needs 4"
    with pytest.raises(DeviceError, match=r"^input device 'USB Mic' has 1 input channel; stereo input needs 2$"):
        check_channels(devs[2], "input", 2, "stereo input")


# --- format_table / to_json --------------------------------------------------------------------

def test_format_table(devs):
    lines = format_table(devs).splitlines()
    assert lines[0].split() == ["#", "name", "host", "API", "in", "out", "rate"]
    assert len(lines) == 1 + len(devs) + 1
    rows = lines[1:-1]
    assert rows[3].split() == ["*", "3", "system", "JACK", "Audio", "Connection", "Kit", "2", "2", "44100"]
    assert rows[1].split()[:3] == ["1", "HDMI", "0"] and rows[1].split()[-1] == "48000"
    # aligned: left-aligned columns start at the same offset, right-aligned ones end together
    for col in ("name", "host API"):
        start = lines[0].index(col)
        assert all(row[start - 1] == " " for row in rows), col
    assert rows[3].index("system") == lines[0].index("name")
    assert rows[1].index("ALSA") == lines[0].index("host API")
    assert len({len(row) for row in rows}) == 1      # right-aligned rate column ends together
    assert ">" in lines[-1] and "<" in lines[-1]


def test_format_table_marks_separate_defaults():
    devs = query(fake(default=(2, 1)))
    rows = format_table(devs).splitlines()[1:-1]
    assert rows[2].lstrip().startswith(">") and rows[1].lstrip().startswith("<")
    assert not any(row.lstrip().startswith(("*", ">", "<")) for i, row in enumerate(rows) if i not in (1, 2))


def test_format_table_without_defaults_has_no_legend():
    hostapis = [dict(h, default_input_device=-1, default_output_device=-1) for h in HOSTAPIS]
    lines = format_table(query(fake(default=(-1, -1), hostapis=hostapis))).splitlines()
    assert len(lines) == 1 + len(DEVICES) and lines[1].split()[:2] == ["0", "jack"]


def test_format_table_empty():
    assert format_table([]).startswith("no audio devices found")


def test_to_json(devs):
    data = json.loads(to_json(devs))
    assert data[3] == {"index": 3, "name": "system", "hostapi": "JACK Audio Connection Kit",
                       "max_input_channels": 2, "max_output_channels": 2, "default_samplerate": 44100.0,
                       "default_input": True, "default_output": True}
    assert [Device(**d) for d in data] == devs
    assert to_json(devs).startswith('[\n  {\n    "index": 0')
    assert json.loads(to_json([])) == []


# --- portaudio ---------------------------------------------------------------------------------

class _NoPortAudio(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "sounddevice":
            raise OSError("PortAudio library not found")
        return None


def test_portaudio_missing_library(monkeypatch):
    monkeypatch.delitem(sys.modules, "sounddevice", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_NoPortAudio(), *sys.meta_path])
    with pytest.raises(DeviceError) as err:
        dv.portaudio()
    message = str(err.value)
    assert message.startswith("PortAudio is not installed: install the Debian package libportaudio2 "
                              "(`make install` does)")
    assert "PortAudio library not found" in message and "\n" not in message


# --- a real JACK server ------------------------------------------------------------------------

PROBE = """
import json
import sounddevice as sd
from bridge.live.devices import find_device, query, to_json
devices = query()
print(json.dumps({"devices": json.loads(to_json(devices)), "default": list(sd.default.device),
                  "output": find_device("system", "output", devices).index,
                  "input": find_device(None, "input", devices).index}))
"""


@needs_jackd
def test_query_real_jack_server(tmp_path):
    if ctypes.util.find_library("portaudio") is None:       # not imported here: that would start PortAudio
        pytest.skip("PortAudio is not installed (make install installs libportaudio2)")
    with JackServer(rate=44100, log_dir=str(tmp_path)) as server:
        # PortAudio only sees a server already running when it starts, and must stop before the
        # server does: ask in a subprocess that has exited by the time the server stops
        env = dict(server.env, PYTHONPATH=os.pathsep.join(filter(None, [REPO, server.env.get("PYTHONPATH")])))
        done = subprocess.run([sys.executable, "-c", PROBE], env=env, cwd=REPO, capture_output=True, text=True,
                              timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    jack = [d for d in result["devices"] if d["name"] == "system" and d["hostapi"].startswith("JACK")]
    assert len(jack) == 1, result["devices"]
    system = jack[0]
    assert (system["max_input_channels"], system["max_output_channels"]) == (2, 2)
    assert system["default_samplerate"] == 44100.0
    assert result["output"] == system["index"]
    assert result["input"] == system["index"] and system["default_input"] and system["default_output"]
