"""OSCControl end to end over the network, with independent clients (liblo's oscsend, python-osc), on a
real separator (the identity stand-in model) whose audio the tests run."""
import math
import socket
import subprocess
import threading
import time

import numpy as np
import pedalboard
import pytest
from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.osc_packet import OscPacket
from pythonosc.tcp_client import SimpleTCPClient

import streamer
from bridge import OSCControl
from bridge.mix.scenes import Scene
from streamer.errors import SettingsError

from conftest import FOUR_STEMS, four_stem_separator, wait_for as _wait_for

STEMS = FOUR_STEMS


@pytest.fixture
def sep(tmp_path):
    s = four_stem_separator(tmp_path)
    s.stems["other"].effects = pedalboard.Pedalboard([pedalboard.Reverb(room_size=0.3)])
    s.scenes = {"karaoke": Scene("karaoke", {"main": {"stems": {"vocals": {"mute": True}}}}), "full": Scene("full")}
    return s


@pytest.fixture
def control(sep):
    with OSCControl(sep, port=0, tcp=True, subscription_seconds=1.0) as c:
        yield c


class Client:
    """A UDP OSC client with its own socket, so answers come back to it."""

    def __init__(self, port, bind="127.0.0.1"):
        self.port = port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((bind, 0))
        self.sock.settimeout(0.05)

    def send(self, address, *args):
        b = OscMessageBuilder(address=address)
        for a in args:
            b.add_arg(a)
        self.sock.sendto(b.build().dgram, ("127.0.0.1", self.port))

    def send_bundle(self, *messages):
        bundle = OscBundleBuilder(IMMEDIATELY)
        for address, *args in messages:
            b = OscMessageBuilder(address=address)
            for a in args:
                b.add_arg(a)
            bundle.add_content(b.build())
        self.sock.sendto(bundle.build().dgram, ("127.0.0.1", self.port))

    def receive(self, seconds=1.0, until=None):
        """Messages received for ``seconds`` (or until ``until(messages)`` holds): [(address, args)]."""
        out, deadline = [], time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            out += [(m.message.address, tuple(m.message.params)) for m in OscPacket(data).messages]
            if until is not None and until(out):
                break
        return out

    def close(self):
        self.sock.close()


def wait_for(predicate, timeout=2.0):
    return _wait_for(predicate, timeout)   # this file's tests wait 2 s unless they say otherwise


def test_liblo_oscsend_mutes_and_patterns_hit_the_right_stems(control, sep):
    subprocess.run(["oscsend", "127.0.0.1", str(control.port), "/stem/vocals/mute", "i", "1"], check=True, timeout=10)
    assert wait_for(lambda: sep.mixer.stems["vocals"].mute)
    subprocess.run(["oscsend", "127.0.0.1", str(control.port), "/bus/*/stem/{drums,bass}/gain", "f", "-6"],
                   check=True, timeout=10)
    assert wait_for(lambda: sep.mixer["monitor"]["bass"].gain_db == -6.0)
    assert [sep.mixer[b][s].gain_db for b in ("main", "monitor") for s in STEMS] == [0, -6, -6, 0, 0, -6, -6, 0]
    subprocess.run(["oscsend", "127.0.0.1", str(control.port), "/stem/vocals/mute", "F"], check=True, timeout=10)
    assert wait_for(lambda: not sep.mixer.stems["vocals"].mute)


def test_queries_answer_the_sender_with_value_and_type(control, sep):
    c = Client(control.port)
    sep.mixer.stems["drums"].gain_db = -3.5
    sep.mixer["monitor"].mute = True
    c.send("/stem/drums/gain")
    c.send("/bus/monitor/mute")
    c.send("/stem/*/solo")
    got = c.receive(2.0, until=lambda m: len(m) >= 6)
    assert ("/stem/drums/gain", (-3.5,)) in got
    assert ("/bus/monitor/mute", (1,)) in got and isinstance(dict(got)["/bus/monitor/mute"][0], int)
    assert sorted(a for a, v in got if a.endswith("/solo")) == [f"/stem/{s}/solo" for s in sorted(STEMS)]
    c.send("/scene")
    assert ("/scene", ("karaoke", "full")) in c.receive(2.0, until=lambda m: any(a == "/scene" for a, _ in m))
    c.send("/engine/status")
    status = dict(c.receive(2.0, until=lambda m: any(a.endswith("/osc_messages") for a, _ in m)))
    assert status["/engine/status/latency_ms"][0] == pytest.approx(sep.engine.latency_seconds * 1000)
    assert "/engine/status/deadline_misses" in status and "/engine/status/model" in status
    c.close()


def test_bad_messages_are_ignored_with_an_error_reply_and_the_server_keeps_going(control, sep):
    c = Client(control.port)
    c.send("/stem/vocals/gain", float("nan"))
    c.send("/stem/piano/mute", 1)
    c.send("/stem/vocals/mute", "yes")
    c.send("/stem/other/fx/0/room_size", 5.0)
    c.sock.sendto(b"/garbage\0\0\0\0", ("127.0.0.1", control.port))   # OSC-looking but no type tags
    errors = [m for m in c.receive(2.0, until=lambda m: len([x for x in m if x[0] == "/error"]) >= 4)
              if m[0] == "/error"]
    assert len(errors) >= 4
    reasons = " ".join(r for _, (_, r) in errors)
    assert "finite" in reasons and "no such address" in reasons and "room" in reasons.lower()
    assert sep.mixer.stems["vocals"].gain_db == 0.0 and not sep.mixer.stems["vocals"].mute
    c.send("/stem/vocals/mute", 1)
    assert wait_for(lambda: sep.mixer.stems["vocals"].mute)
    c.close()


def test_a_bundle_reaches_the_audio_side_as_one_change(control, sep):
    c = Client(control.port)
    v = sep.mixer._version
    c.send_bundle(("/stem/vocals/mute", 1), ("/stem/drums/mute", 1), ("/stem/bass/gain", -12.0))
    assert wait_for(lambda: sep.mixer.stems["bass"].gain_db == -12.0)
    assert sep.mixer._version == v + 1          # published once: the same block picks up all three
    c.close()


def test_messages_take_effect_in_the_order_sent(control, sep):
    c = Client(control.port)
    for i in range(400):
        c.send("/stem/bass/gain", float(-(i % 50)))
    c.send("/stem/bass/gain", -7.0)
    assert wait_for(lambda: sep.mixer.stems["bass"].gain_db == -7.0)
    time.sleep(0.1)
    assert sep.mixer.stems["bass"].gain_db == -7.0
    c.close()


def test_subscribers_get_meters_at_their_rate_echoes_of_any_change_and_expire(control, sep):
    a, b = Client(control.port), Client(control.port)
    a.send("/subscribe", 0, 20.0)
    assert wait_for(lambda: len(control.subscribers) == 1)
    # audio through the separator so the meters move
    x = (np.random.default_rng(0).standard_normal((2, 4410)) * 0.3).astype(np.float32)
    sep.process(x, 44100, reset=False)
    got = []
    for _ in range(4):                                     # renewed every 0.5 s: it stays alive
        a.send("/subscribe", 0, 20.0)
        got += a.receive(0.5)
    meters = [m for m in got if m[0] == "/meter/vocals"]
    assert 34 <= len(meters) <= 46, len(meters)          # 20 Hz over 2 s
    assert any(m[0] == "/meter/bus/monitor" for m in got)
    assert all(isinstance(v, float) for _, args in meters for v in args)
    b.send("/stem/drums/solo", 1)                          # another client
    sep.mixer["monitor"]["bass"].gain_db = -9.0            # Python (the terminal mixer, a script)
    echoes = a.receive(1.0, until=lambda m: ("/bus/monitor/stem/bass/gain", (-9.0,)) in m
                       and ("/stem/drums/solo", (1,)) in m)
    assert ("/stem/drums/solo", (1,)) in echoes and ("/bus/monitor/stem/drums/solo", (1,)) not in echoes
    assert ("/bus/monitor/stem/bass/gain", (-9.0,)) in echoes
    # no renewal: the subscription (1 s here, 10 s by default) expires
    assert wait_for(lambda: not control.subscribers, timeout=3.0)
    a.receive(0.2)
    assert not [m for m in a.receive(0.5) if m[0].startswith("/meter")]
    a.close()
    b.close()


def test_unsubscribe(control):
    a = Client(control.port)
    a.send("/subscribe")
    assert wait_for(lambda: len(control.subscribers) == 1)
    a.send("/unsubscribe")
    assert wait_for(lambda: not control.subscribers)
    a.close()


def test_tcp_clients_control_and_get_answers(control, sep):
    with SimpleTCPClient("127.0.0.1", control.port, mode="1.1") as c:
        c.send_message("/stem/bass/solo", 1)
        c.send_message("/stem/bass/solo", [])
        replies = list(c.get_messages(2.0))
    assert sep.mixer.stems["bass"].solo
    assert any(m.address == "/stem/bass/solo" and m.params == [1] for m in replies)


def test_a_source_outside_the_allow_list_is_dropped_and_counted(sep):
    with OSCControl(sep, port=0, host="0.0.0.0", allow=["127.0.0.1/32"]) as control:
        outsider = Client(control.port, bind="127.0.0.2")
        outsider.send("/stem/vocals/mute", 1)
        assert wait_for(lambda: control.transport.counters["refused"] >= 1)
        assert not sep.mixer.stems["vocals"].mute
        insider = Client(control.port)
        insider.send("/stem/vocals/mute", 1)
        assert wait_for(lambda: sep.mixer.stems["vocals"].mute)
        insider.send("/engine/status")
        status = dict(insider.receive(2.0, until=lambda m: any(a.endswith("osc_refused") for a, _ in m)))
        assert status["/engine/status/osc_refused"] == (1,)
        outsider.close()
        insider.close()
    with pytest.raises(SettingsError, match="--osc-allow"):
        OSCControl(sep, port=0, host="0.0.0.0")


def test_scenes_recall_with_their_fade_and_bypass_and_reset(control, sep):
    c = Client(control.port)
    c.send("/scene/karaoke", 0.3)
    assert wait_for(lambda: control.recaller.fading)
    assert wait_for(lambda: not control.recaller.fading, timeout=3.0)
    assert sep.mixer.stems["vocals"].mute
    c.send("/scene/full")
    assert wait_for(lambda: not sep.mixer.stems["vocals"].mute)
    c.send("/engine/bypass", 1)
    assert wait_for(lambda: sep.mixer.bypass)
    c.send("/engine/reset")
    assert wait_for(lambda: sep._reset_requested)
    c.close()


def test_close_is_prompt_and_leaves_no_thread(sep):
    before = {t.name for t in threading.enumerate()}
    control = OSCControl(sep, port=0, tcp=True)
    t = time.monotonic()
    control.close()
    control.close()
    assert time.monotonic() - t < 2.0
    assert not [t for t in threading.enumerate() if t.name not in before and t.is_alive()]
