"""Real MIDI for the tests: a private JACK server (dummy backend) and a test controller made of two
python-rtmidi virtual ports on it (what it sends is what the surface reads; what the surface sends back
arrives at its input), plus a real separator (the identity stand-in) with two buses and two scenes."""
from __future__ import annotations

import shutil
import threading
import time

import pytest

from bridge.live.jackserver import JackServer
from bridge.mix.scenes import Scene

from conftest import FOUR_STEMS, four_stem_separator, wait_for as conftest_wait_for

STEMS = FOUR_STEMS
JACKD = shutil.which("jackd")
needs_jackd = pytest.mark.skipif(JACKD is None, reason="jackd is not installed (make install installs jackd2)")
rtmidi = pytest.importorskip("rtmidi")


@pytest.fixture
def jack(tmp_path, monkeypatch):
    """A JACK dummy server; this process's MIDI clients (the surface's and the controller's) use it."""
    if JACKD is None:
        pytest.skip("jackd is not installed (make install installs jackd2)")
    with JackServer(log_dir=str(tmp_path), prefix="stemstream_midi") as server:
        for key in ("JACK_DEFAULT_SERVER", "JACK_NO_START_SERVER", "JACK_NO_AUDIO_RESERVATION"):
            monkeypatch.setenv(key, server.env[key])
        yield server


@pytest.fixture
def sep(tmp_path):
    s = four_stem_separator(tmp_path)
    s.scenes = {"karaoke": Scene("karaoke", {"main": {"stems": {"vocals": {"mute": True}}}}), "full": Scene("full")}
    return s


class Controller:
    """A MIDI controller played by the test: ``send(*bytes)`` out of its port ``<name>:ctl``; what comes back
    to its input ``<name>-in:fb`` is read by :meth:`messages` (polled, as the surface reads: no input
    callback, see bridge.midi.ports)."""

    def __init__(self, name: str = "testctl", feedback: bool = True):
        J = rtmidi.API_UNIX_JACK
        self.name = name
        self.out = rtmidi.MidiOut(J, name=name)
        self.out.open_virtual_port("ctl")
        self.received: list[list[int]] = []
        self._lock = threading.Lock()
        self.inp = None
        if feedback:
            self.inp = rtmidi.MidiIn(J, name=f"{name}-in", queue_size_limit=8192)
            self.inp.ignore_types(False, False, True)
            self.inp.open_virtual_port("fb")

    def messages(self) -> list[list[int]]:
        """Everything received so far (since the last :meth:`clear`)."""
        with self._lock:
            while self.inp is not None:
                got = self.inp.get_message()
                if got is None:
                    break
                self.received.append(list(got[0]))
            return list(self.received)

    def clear(self) -> None:
        self.messages()
        with self._lock:
            self.received.clear()

    def send(self, *data: int) -> None:
        self.out.send_message(list(data))

    def cc(self, number: int, value: int, channel: int = 0) -> None:
        self.send(0xB0 | channel, number, value)

    def close(self) -> None:
        with self._lock:
            for port in (self.out, self.inp):
                if port is not None:
                    port.close_port()
                    port.delete()
            self.out = self.inp = None


def wait_for(predicate, timeout: float = 3.0, interval: float = 0.005) -> None:
    """Until ``predicate()`` is true (conftest's ``wait_for``), or an AssertionError naming what did not happen."""
    if not conftest_wait_for(predicate, timeout, interval):
        raise AssertionError(f"not within {timeout} s: {getattr(predicate, '__doc__', None) or predicate}")


def settle(surface, timeout: float = 3.0) -> None:
    """Until the surface's queue is empty and its counters stop moving (everything sent was handled)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        time.sleep(0.03)
        now = surface.counters()
        if now["queued"] == 0 and now == last:
            return
        last = now
    raise AssertionError(f"the surface did not settle: {surface.counters()}")


__all__ = ["Controller", "STEMS", "jack", "needs_jackd", "sep", "settle", "wait_for"]
