"""MIDI joins the control model's randomised test (tests/control/test_control_model.py): the same sequence
of changes (stems' and buses' gain, fader, mute and solo on three buses, scene recalls) played on a MIDI
controller through a real JACK server ends in the same mixer state as Python setters.

MIDI carries what a controller can: faders and gains are 14-bit pairs (a gain spans -60..+24 dB, so
``-inf`` arrives as -60 dB and the value as the nearest of 16,384 steps), flags are toggle buttons
pressed when the state differs from what is wanted (as a player looking at the LEDs does), scenes are
buttons. So the sequence is first brought to what MIDI can carry, and that sequence goes through both
ways; the states must then be equal, bit for bit.
"""
import os
import sys

import pytest
from midi_helpers import Controller, jack, needs_jackd, wait_for  # noqa: F401 - fixtures

from bridge import StemSeparator
from bridge.control.model import ControlModel
from bridge.midi.mapping import parse_mapping
from bridge.midi.surface import MidiSurface
from bridge.mix.mixer import flag_value
from bridge.mix.state import MixerState

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "control"))
from test_control_model import BUSES, SCENES, SEEDS, STEMS, by_python, make_rig, random_ops, random_scenes  # noqa: E402

pytestmark = needs_jackd
GAIN = (-60.0, 24.0)
SCENE_CHANNEL = 15


def mapping():
    controls = []
    for b in range(len(BUSES)):
        ch = b + 1
        controls += [{"cc": "0-3", "stem": "1-4", "bus": ch, "control": "fader", "channel": ch, "mode": "absolute14"},
                     {"cc": "4-7", "stem": "1-4", "bus": ch, "control": "gain", "channel": ch, "mode": "absolute14",
                      "range": list(GAIN)},
                     {"cc": 8, "bus": ch, "control": "fader", "channel": ch, "mode": "absolute14"},
                     {"cc": 9, "bus": ch, "control": "gain", "channel": ch, "mode": "absolute14", "range": list(GAIN)},
                     {"note": "0-3", "stem": "1-4", "bus": ch, "control": "mute", "channel": ch, "mode": "toggle"},
                     {"note": "4-7", "stem": "1-4", "bus": ch, "control": "solo", "channel": ch, "mode": "toggle"},
                     {"note": 8, "bus": ch, "control": "mute", "channel": ch, "mode": "toggle"}]
    controls.append({"note": f"0-{len(SCENES) - 1}", "scene": f"1-{len(SCENES)}", "channel": SCENE_CHANNEL + 1})
    return parse_mapping({"pickup": False, "controls": controls}, "control-model map")


def raw14(control: str, value) -> int:
    lo, hi = GAIN if control == "gain_db" else (0.0, 1.0)
    v = lo if value == -float("inf") else min(hi, max(lo, float(value)))
    return round((v - lo) / (hi - lo) * 16383)


def carried(control: str, raw: int) -> float:
    """What the interpreter sets for a 14-bit value (the same arithmetic)."""
    lo, hi = GAIN if control == "gain_db" else (0.0, 1.0)
    return lo + min(1.0, max(0.0, raw / 16383.0)) * (hi - lo)


def as_midi_carries(ops):
    out = []
    for op in ops:
        if op[0] == "scene" or op[-2] in ("mute", "solo"):
            out.append(op)
        else:
            out.append(op[:-1] + (carried(op[-2], raw14(op[-2], op[-1])),))
    return out


def by_midi(sep, ops, ctl, rig_scenes) -> None:
    model = ControlModel.of(sep)
    s = MidiSurface(model, mapping(), port="testctl").start()
    sent = 0

    def send(*data):
        nonlocal sent
        ctl.send(*data)
        sent += 1

    try:
        for op in ops:
            if op[0] == "scene":
                n = list(rig_scenes).index(op[1])
                send(0x90 | SCENE_CHANNEL, n, 100)
                send(0x80 | SCENE_CHANNEL, n, 0)
            else:
                b = BUSES.index(op[1])
                control, value = op[-2], op[-1]
                if control in ("mute", "solo"):
                    where = f"/bus/{op[1]}/mute" if op[0] == "bus" else f"/bus/{op[1]}/stem/{op[2]}/{control}"
                    if bool(model.get(where)) != flag_value(value):      # press only to change it
                        note = 8 if op[0] == "bus" else STEMS.index(op[2]) + (4 if control == "solo" else 0)
                        send(0x90 | b, note, 100)
                        send(0x80 | b, note, 0)
                else:
                    cc = (8 if control == "fader" else 9) if op[0] == "bus" else \
                        STEMS.index(op[2]) + (0 if control == "fader" else 4)
                    raw = raw14(control, value)
                    send(0xB0 | b, cc, raw >> 7)
                    send(0xB0 | b, cc + 32, raw & 0x7F)
            wait_for(lambda: s.counters()["messages"] >= sent, timeout=5)
        c = s.counters()
        assert c["ignored"] == 0 and c["errors"] == 0 and c["dropped"] == 0, c
    finally:
        s.close()


@pytest.mark.parametrize("seed", SEEDS)
def test_the_same_changes_over_midi_end_in_the_same_mixer_state_as_python(jack, tmp_path, seed):
    ops, scenes = as_midi_carries(random_ops(seed)), random_scenes(seed)
    rig = make_rig(tmp_path, scenes)
    ctl = Controller()
    try:
        by_midi(midi_sep := StemSeparator.from_rig(rig), ops, ctl, midi_sep.recaller.scenes)
    finally:
        ctl.close()
    python_sep = StemSeparator.from_rig(rig)
    by_python(python_sep, ops, tmp_path)
    got, want = MixerState.snapshot(midi_sep.mixer), MixerState.snapshot(python_sep.mixer)
    assert got == want, f"MIDI ends in another state than Python setters (seed {seed})"
    assert want != MixerState.unity(STEMS, BUSES)
