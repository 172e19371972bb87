"""MidiSurface with real MIDI: a JACK dummy server, python-rtmidi's JACK API, a test port playing the
controller and a real separator's control model (two buses, two scenes)."""
import time

import pytest
from midi_helpers import Controller, jack, needs_jackd, sep, settle, wait_for  # noqa: F401 - fixtures

from bridge.control.model import ControlModel
from bridge.midi import DEFAULT_MAP
from bridge.midi.mapping import load_mapping, parse_mapping
from bridge.midi.surface import MidiSurface
from streamer.errors import SettingsError

pytestmark = needs_jackd


def surface_for(sep, controls, ctl=None, **kwargs):
    mapping = parse_mapping({"channel": 1, "controls": controls}, "test map")
    return MidiSurface(ControlModel.of(sep), mapping, port=(ctl.name if ctl else "testctl"), **kwargs).start()


@pytest.fixture
def ctl(jack):
    c = Controller()
    yield c
    c.close()


def fader(sep, stem, bus="main"):
    return ControlModel.of(sep).get(f"/bus/{bus}/stem/{stem}/fader")


def test_default_map_faders_with_pickup_mutes_solos_scenes_and_the_second_bus(jack, ctl, sep):
    model = ControlModel.of(sep)
    s = MidiSurface(model, load_mapping(DEFAULT_MAP), port="testctl").start()
    try:
        assert s.label == "midi: testctl:ctl (in+out)"
        # fader 1 (CC 0) starts far below unity (0.75): pickup waits until it reaches the value
        ctl.cc(0, 10)
        ctl.cc(0, 60)
        settle(s)
        assert fader(sep, "vocals") == 0.75 and s.counters()["pickup_waiting"] == 2
        ctl.cc(0, 100)                                 # crossed 0.75: taken over
        wait_for(lambda: fader(sep, "vocals") == pytest.approx(100 / 127))
        ctl.cc(0, 0)                                   # 0 = off
        wait_for(lambda: fader(sep, "vocals") == 0.0)
        ctl.cc(0, 127)                                 # 127 = the fader's top
        wait_for(lambda: fader(sep, "vocals") == 1.0)
        # another surface moves it: the MIDI fader waits until it crosses the new value again
        model.set("/bus/main/stem/vocals/fader", 0.25)
        ctl.cc(0, 120)
        settle(s)
        assert fader(sep, "vocals") == 0.25
        ctl.cc(0, 20)                                  # crossed 0.25 * 127 = 31.75 on the way down
        wait_for(lambda: fader(sep, "vocals") == pytest.approx(20 / 127))
        # knob 2 (CC 17): drums on the second bus
        ctl.cc(17, 95)
        wait_for(lambda: fader(sep, "drums", "monitor") == pytest.approx(95 / 127))
        assert fader(sep, "drums") == 0.75
        # M3 (CC 50) and S4 (CC 35): press and release quickly = toggle
        ctl.cc(50, 127)
        ctl.cc(50, 0)
        ctl.cc(35, 127)
        ctl.cc(35, 0)
        wait_for(lambda: sep.mixer.stems["bass"].mute and sep.mixer.stems["other"].solo)
        # R1 (CC 64): the first scene of the rig (karaoke); R2 the second (full)
        ctl.cc(64, 127)
        ctl.cc(64, 0)
        wait_for(lambda: sep.mixer.stems["vocals"].mute and not sep.mixer.stems["bass"].mute)
        ctl.cc(65, 127)
        wait_for(lambda: not sep.mixer.stems["vocals"].mute)
        # R buttons beyond the rig's scenes and faders beyond its stems are unmapped, counted
        before = s.counters()["unmapped"]
        ctl.cc(66, 127)
        ctl.cc(6, 50)
        settle(s)
        assert s.counters()["unmapped"] == before + 2
    finally:
        s.close()


def test_track_buttons_select_the_bus_the_faders_control(jack, ctl, sep):
    s = MidiSurface(ControlModel.of(sep), load_mapping(DEFAULT_MAP), port="testctl").start()
    try:
        ctl.cc(59, 127)                                # TRACK >: the faders now control the monitor bus
        ctl.cc(59, 0)
        ctl.cc(1, 95)                                  # within a step of unity: taken over at once
        ctl.cc(1, 30)
        wait_for(lambda: fader(sep, "drums", "monitor") == pytest.approx(30 / 127))
        assert fader(sep, "drums", "main") == 0.75
        ctl.cc(58, 127)                                # TRACK <: back to main; pickup again there
        ctl.cc(1, 20)
        settle(s)
        assert fader(sep, "drums", "main") == 0.75
    finally:
        s.close()


def test_notes_toggle_momentary_and_auto_buttons(jack, ctl, sep):
    s = surface_for(sep, [{"note": 36, "stem": "vocals", "control": "mute", "mode": "toggle"},
                          {"note": 37, "stem": "drums", "control": "mute", "mode": "momentary"},
                          {"note": 38, "stem": "bass", "control": "solo"},          # auto
                          {"cc": 40, "address": "/engine/bypass", "mode": "toggle"}])
    st = sep.mixer.stems
    try:
        ctl.send(0x90, 36, 100)
        ctl.send(0x80, 36, 0)
        wait_for(lambda: st["vocals"].mute)
        ctl.send(0x90, 36, 100)
        ctl.send(0x90, 36, 0)                          # note-on velocity 0 is a release
        wait_for(lambda: not st["vocals"].mute)
        ctl.send(0x90, 37, 100)                        # momentary: on while held
        wait_for(lambda: st["drums"].mute)
        ctl.send(0x80, 37, 0)
        wait_for(lambda: not st["drums"].mute)
        ctl.send(0x90, 38, 100)                        # auto, tapped: toggles and stays
        ctl.send(0x80, 38, 0)
        wait_for(lambda: st["bass"].solo)
        settle(s)
        assert st["bass"].solo
        ctl.send(0x90, 38, 100)                        # auto, held longer than 0.3 s: momentary
        wait_for(lambda: not st["bass"].solo)
        time.sleep(0.4)
        ctl.send(0x80, 38, 0)
        wait_for(lambda: st["bass"].solo)
        ctl.cc(40, 127)
        ctl.cc(40, 0)
        wait_for(lambda: sep.mixer.bypass)
    finally:
        s.close()


def test_relative_encoders_14_bit_pairs_and_pitch_bend(jack, ctl, sep):
    model = ControlModel.of(sep)
    s = surface_for(sep, [{"cc": 10, "stem": "vocals", "control": "fader", "mode": "relative-twos", "step": 0.01},
                          {"cc": 11, "stem": "drums", "control": "gain", "mode": "relative-offset", "step": 0.5},
                          {"cc": 1, "stem": "bass", "control": "fader", "mode": "absolute14", "pickup": False},
                          {"pitchbend": True, "channel": 2, "stem": "other", "bus": "monitor", "control": "fader",
                           "pickup": False}])
    try:
        for _ in range(5):
            ctl.cc(10, 1)                              # +1 tick each
        ctl.cc(10, 126)                                # -2 ticks (two's complement)
        wait_for(lambda: fader(sep, "vocals") == pytest.approx(0.78))
        ctl.cc(11, 64 + 4)                             # binary offset: +4 ticks of 0.5 dB
        ctl.cc(11, 64 - 1)
        wait_for(lambda: model.get("/bus/main/stem/drums/gain") == pytest.approx(1.5))
        ctl.cc(1, 100)                                 # MSB (LSB assumed 0)
        wait_for(lambda: fader(sep, "bass") == pytest.approx(100 * 128 / 16383))
        ctl.cc(33, 77)                                 # its LSB (cc 1 + 32)
        wait_for(lambda: fader(sep, "bass") == pytest.approx((100 * 128 + 77) / 16383))
        ctl.send(0xE1, 0x7F, 0x3F)                     # pitch bend on channel 2: 0x3F << 7 | 0x7F = 8191
        wait_for(lambda: fader(sep, "other", "monitor") == pytest.approx(8191 / 16383))
    finally:
        s.close()


def test_feedback_reaches_the_controller_for_changes_from_anywhere_throttled(jack, ctl, sep):
    model = ControlModel.of(sep)
    s = surface_for(sep, [{"cc": 7, "stem": "vocals", "control": "fader"},
                          {"cc": 48, "stem": "vocals", "control": "mute"},
                          {"note": 60, "stem": "drums", "control": "solo"}], feedback_hz=20)
    try:
        # on start the controller is shown the whole state
        wait_for(lambda: [0xB0, 7, 95] in ctl.messages() and [0xB0, 48, 0] in ctl.messages()
                 and [0x90, 60, 0] in ctl.messages())
        ctl.clear()
        model.set("/stem/vocals/mute", 1)              # as OSC or the terminal mixer would
        model.set("/stem/drums/solo", True)
        wait_for(lambda: [0xB0, 48, 127] in ctl.messages() and [0x90, 60, 127] in ctl.messages())
        ctl.clear()
        t0 = time.monotonic()
        for i in range(200):                           # a fader sweep from elsewhere: 200 changes in ~0.4 s
            model.set("/stem/vocals/fader", i / 199)
            time.sleep(0.002)
        took = time.monotonic() - t0
        wait_for(lambda: ctl.messages() and ctl.messages()[-1] == [0xB0, 7, 127])
        time.sleep(0.2)
        sent = [m for m in ctl.messages() if m[:2] == [0xB0, 7]]
        assert len(sent) <= 20 * (took + 0.2) + 2, (len(sent), took)   # at most 20/s for this control
        assert sent[-1] == [0xB0, 7, 127]
        # a move of the control itself is not echoed back to it
        ctl.clear()
        ctl.cc(7, 126)
        ctl.cc(7, 90)
        wait_for(lambda: fader(sep, "vocals") == pytest.approx(90 / 127))
        time.sleep(0.2)
        assert [m for m in ctl.messages() if m[:2] == [0xB0, 7]] == []
    finally:
        s.close()


def test_bad_input_is_ignored_and_counted(jack, ctl, sep):
    s = surface_for(sep, [{"cc": 7, "stem": "vocals", "control": "fader", "pickup": False}])
    try:
        ctl.send(0xF0, 0x7E, 0x7F, 0x06, 0x01, 0xF7)   # SysEx (identity request)
        ctl.send(0xF8)                                 # clock
        ctl.send(0xFA)                                 # start
        ctl.send(7, 100)                               # running status: data bytes without a status
        ctl.cc(7, 100, channel=5)                      # another channel
        ctl.cc(8, 100)                                 # not mapped
        ctl.send(0xC0, 5)                              # program change: not mapped
        ctl.send(0xB0, 7)                              # too short
        ctl.cc(7, 127)                                 # and the next good message still works
        wait_for(lambda: fader(sep, "vocals") == 1.0)
        settle(s)
        c = s.counters()
        assert c["system"] == 3 and c["malformed"] == 2 and c["other_channel"] == 1 and c["unmapped"] == 2
        assert c["ignored"] == 8 and c["applied"] == 1 and c["messages"] == 9 and c["dropped"] == 0
        assert fader(sep, "vocals") == 1.0 and fader(sep, "vocals", "monitor") == 0.75
    finally:
        s.close()


def test_a_flood_is_dropped_and_counted_and_memory_stays_bounded(jack, ctl, sep):
    s = surface_for(sep, [{"cc": 7, "stem": "vocals", "control": "fader", "pickup": False}], queue_size=32)
    seen = []
    try:
        sent = 0
        t0 = time.monotonic()
        while time.monotonic() - t0 < 1.0:             # bursts of 100 messages every 20 ms: ~5,000/s
            for i in range(100):
                ctl.cc(7, (sent + i) % 128)
            sent += 100
            seen.append(s.counters()["queued"])
            time.sleep(0.02)
        time.sleep(0.3)
        ctl.cc(7, 64)                                  # after the flood: the surface answers at once
        wait_for(lambda: fader(sep, "vocals") == pytest.approx(64 / 127))
        settle(s)
        c = s.counters()
        assert max(seen) <= 32 and sent >= 3000
        assert c["dropped"] > 0 and c["messages"] + c["dropped"] <= sent + 1
        assert c["messages"] + c["dropped"] >= 0.9 * sent     # what JACK delivered was handled or counted
    finally:
        s.close()


def test_an_unplugged_controller_leaves_the_show_running_and_is_reopened(jack, sep):
    ctl = Controller()
    s = surface_for(sep, [{"cc": 7, "stem": "vocals", "control": "fader", "pickup": False},
                          {"cc": 48, "stem": "vocals", "control": "mute"}], ctl=ctl, poll_seconds=0.2)
    try:
        ctl.cc(7, 10)
        wait_for(lambda: fader(sep, "vocals") == pytest.approx(10 / 127))
        ctl.close()                                    # unplugged
        wait_for(lambda: s.counters()["connected"] == 0)
        assert "UNPLUGGED" in s.label and s.counters()["unplugged"] == 1
        ControlModel.of(sep).set("/stem/vocals/mute", 1)   # the show goes on meanwhile
        ctl = Controller()                             # plugged back in
        wait_for(lambda: s.counters()["connected"] == 1 and s.counters()["reconnects"] == 1, timeout=5)
        assert s.label == "midi: testctl:ctl (in+out)"
        wait_for(lambda: [0xB0, 48, 127] in ctl.messages())   # shown again what changed while it was away
        ctl.cc(7, 100)
        wait_for(lambda: fader(sep, "vocals") == pytest.approx(100 / 127))
    finally:
        s.close()
        ctl.close()


def test_learn_writes_a_mapping_file_that_the_next_run_uses(jack, ctl, sep, tmp_path):
    path = tmp_path / "learned.yaml"
    first = MidiSurface(ControlModel.of(sep), load_mapping(DEFAULT_MAP), port="testctl", learn_path=str(path)).start()
    try:
        ctl.send(0x90, 40, 100)                        # a pad the default map does not have
        got = first.learn_next(timeout=3)
        ctl.send(0x80, 40, 0)
        assert got == ("note", 0, 40, 100)
        assert first.learn_assign(got, {"stem": "drums", "control": "mute"}) == str(path)
        settle(first)
        assert not sep.mixer.stems["drums"].mute        # what was sent while learning is not applied
        ctl.cc(20, 127)                                # learn a knob (default: vocals on the second bus)
        got = first.learn_next(timeout=3)
        first.learn_assign(got, {"scene": "karaoke"})
    finally:
        first.close()
    assert path.exists() and not list(tmp_path.glob("*.partial"))
    learned = load_mapping(path)
    assert sum(1 for e in learned.entries if e.kind == "cc" and e.number == 20) == 1   # replaced, not added
    second = MidiSurface(ControlModel.of(sep), learned, port="testctl").start()
    try:
        ctl.send(0x90, 40, 100)
        ctl.send(0x80, 40, 0)
        wait_for(lambda: sep.mixer.stems["drums"].mute)
        ctl.cc(20, 127)
        wait_for(lambda: sep.mixer.stems["vocals"].mute)   # the karaoke scene
        ctl.cc(0, 95)                                      # the rest of the default map is still there
        ctl.cc(0, 30)
        wait_for(lambda: fader(sep, "vocals") == pytest.approx(30 / 127))
    finally:
        second.close()


def test_a_port_that_does_not_exist_is_one_error_listing_the_ports(jack, ctl, sep):
    with pytest.raises(SettingsError, match=r"--midi nosuch: no MIDI input port has that name; MIDI inputs \(jack\): "
                                            r"'testctl:ctl'"):
        MidiSurface(ControlModel.of(sep), load_mapping(DEFAULT_MAP), port="nosuch")


def test_a_virtual_port_takes_messages_from_other_programs(jack, sep):
    import rtmidi

    s = MidiSurface(ControlModel.of(sep), parse_mapping({"controls": [{"cc": 48, "stem": "bass", "control": "mute"}]}),
                    virtual="stemvirt").start()
    out = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, name="sender")
    try:
        ports = out.get_ports()
        assert "stemvirt:in" in ports
        out.open_port(ports.index("stemvirt:in"))
        out.send_message([0xB0, 48, 127])
        out.send_message([0xB0, 48, 0])
        wait_for(lambda: sep.mixer.stems["bass"].mute)
        assert s.label == "midi: virtual port stemvirt (in+out)"
    finally:
        out.close_port()
        out.delete()
        s.close()


def test_learning_a_target_the_rig_does_not_have_is_refused_and_writes_nothing(jack, ctl, sep, tmp_path):
    from bridge.midi.mapping import MappingError

    path = tmp_path / "learned.yaml"
    s = MidiSurface(ControlModel.of(sep), load_mapping(DEFAULT_MAP), port="testctl", learn_path=str(path)).start()
    try:
        ctl.send(0x90, 41, 100)
        got = s.learn_next(timeout=3)
        with pytest.raises(MappingError, match="the rig has no scene 9"):
            s.learn_assign(got, {"scene": 9})
        with pytest.raises(MappingError, match="no stem named 'banjo'"):
            s.learn_assign(got, {"stem": "banjo", "control": "mute"})
        assert not path.exists()
        s.learn_cancel()
        ctl.cc(48, 127)                               # the controller acts again, with the old mapping
        wait_for(lambda: sep.mixer.stems["vocals"].mute)
    finally:
        s.close()
