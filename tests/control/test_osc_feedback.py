"""OSC feedback by change notification: the echo thread compares the state only after the control model
announced a change (never while nothing changes), at most once per ECHO_INTERVAL (a fast fader sweep is a
few echoes ending on its last value), for changes from anywhere: Python, another OSC client, the model
(another surface), a scene's fade, an effect parameter. Meters keep each subscriber's rate meanwhile."""
import socket
import time

import pedalboard
import pytest
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.osc_packet import OscPacket

from bridge import OSCControl
from bridge.control import server
from bridge.control.model import ControlModel
from bridge.mix.scenes import Scene

from conftest import FOUR_STEMS, four_stem_separator, wait_for

STEMS = FOUR_STEMS


@pytest.fixture
def sep(tmp_path):
    s = four_stem_separator(tmp_path)
    s.stems["other"].effects = pedalboard.Pedalboard([pedalboard.Reverb(room_size=0.3)])
    s.scenes = {"karaoke": Scene("karaoke", {"main": {"stems": {"vocals": {"gain_db": -40.0}}}})}
    return s


class Listener:
    """A UDP socket that subscribes and collects what comes back, packet by packet."""

    def __init__(self, port, rate=10.0):
        self.port = port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.02)
        self.send("/subscribe", 0, rate)

    def send(self, address, *args):
        b = OscMessageBuilder(address=address)
        for a in args:
            b.add_arg(a)
        self.sock.sendto(b.build().dgram, ("127.0.0.1", self.port))

    def packets(self, seconds):
        """[[(address, args), ...] per packet] received for ``seconds``, meters left out."""
        out, deadline = [], time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            msgs = [(m.message.address, tuple(m.message.params)) for m in OscPacket(data).messages]
            if not all(a.startswith("/meter/") for a, _ in msgs):
                out.append(msgs)
        return out

    def close(self):
        self.sock.close()


def test_nothing_is_compared_while_nothing_changes_and_one_change_is_one_echo(sep):
    with OSCControl(sep, port=0) as control:
        sub = Listener(control.port)
        assert wait_for(lambda: len(control.subscribers) == 1)
        sub.packets(0.2)
        checks, meters = control.counters["echo_checks"], control.counters["meter_packets"]
        assert sub.packets(0.6) == []
        assert control.counters["echo_checks"] == checks          # idle: no comparison at all
        assert control.counters["meter_packets"] - meters >= 4     # while the meters go on at 10 Hz
        sep.mixer["monitor"]["bass"].gain_db = -9.0               # Python
        got = sub.packets(0.3)
        assert len(got) == 1 and {a for a, _ in got[0]} == {"/bus/monitor/stem/bass/gain",
                                                           "/bus/monitor/stem/bass/fader"}, got   # one packet
        assert dict(got[0])["/bus/monitor/stem/bass/gain"] == (-9.0,)
        assert control.counters["echo_checks"] == checks + 1
        sub.close()


def test_a_fast_sweep_is_a_few_echoes_ending_on_its_last_value(sep):
    with OSCControl(sep, port=0) as control:
        sub = Listener(control.port)
        assert wait_for(lambda: len(control.subscribers) == 1)
        sub.packets(0.1)
        checks = control.counters["echo_checks"]
        start = time.monotonic()
        for k in range(200):                                      # a fader thrown over 0.2 s
            sep.mixer["main"]["drums"].fader = k / 256.0
            time.sleep(0.001)
        took = time.monotonic() - start
        got = [m for p in sub.packets(0.4) for m in p if m[0] == "/stem/drums/fader"]
        assert got and got[-1][1][0] == pytest.approx(199 / 256.0)
        most = took / server.ECHO_INTERVAL + 3
        assert control.counters["echo_checks"] - checks <= most, (control.counters["echo_checks"] - checks, most)
        assert len(got) <= most
        sub.close()


def test_changes_from_every_source_are_echoed(sep):
    model = ControlModel.of(sep)
    with OSCControl(sep, port=0) as control:
        sub = Listener(control.port)
        other = Listener(control.port)        # another OSC client (also subscribed: it hears its own change)
        assert wait_for(lambda: len(control.subscribers) == 2)
        sub.packets(0.1)
        other.send("/stem/other/fx/0/room_size", 0.75)            # an effect parameter over OSC
        got = [m for p in sub.packets(0.3) for m in p]
        assert ("/stem/other/fx/0/room_size", (0.75,)) in got, got
        model.set("/bus/monitor/mute", 1)                         # another surface, through the model
        got = [m for p in sub.packets(0.3) for m in p]
        assert got == [("/bus/monitor/mute", (1,))], got
        model.set("/stem/other/fx/0/room_size", 0.5)               # an effect parameter through the model
        got = [m for p in sub.packets(0.3) for m in p]
        assert got == [("/stem/other/fx/0/room_size", (0.5,))], got
        model.set("/scene/karaoke", 0.3)                          # a fade: its steps are echoed, then it rests
        got = [m[1][0] for p in sub.packets(0.8) for m in p if m[0] == "/stem/vocals/gain"]
        assert len(got) >= 3 and got[-1] == pytest.approx(-40.0), got
        assert all(a >= b for a, b in zip(got, got[1:])), got     # going down, step by step
        model.set("/engine/bypass", 1)
        got = [m for p in sub.packets(0.3) for m in p]
        assert got == [("/engine/bypass", (1,))], got
        sub.close()
        other.close()


def test_close_removes_the_listener(sep):
    model = ControlModel.of(sep)
    before = len(model._announce)
    control = OSCControl(sep, port=0)
    assert len(model._announce) == before + 1
    control.close()
    assert len(model._announce) == before
