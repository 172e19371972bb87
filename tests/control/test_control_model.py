"""The control model: one randomised sequence of changes (stems' and buses' gain, fader, mute and solo, bus
masters, scene recalls without a fade) driven through every source, ending in the same mixer state:

(a) Python setters, (b) real OSC messages over UDP to an OSCControl (python-osc's client), (c)
``ControlModel.set``, (d) a rig file's initial state plus one of its scenes. Each way runs on its own
separator made from the same rig file (``StemSeparator.from_rig``), so they share the scenes.

MIDI (issue 29 part 2) joins by adding a function to :data:`WAYS` (``way(sep, ops, tmp_path)``: apply ``ops``
in order, return when they are applied); the test then covers it too.

And: a scene fade started over OSC is taken over by a change from another surface (``ControlModel.set``):
the change stays, the fade stops where it is.
"""
from __future__ import annotations

import copy
import math
import random
import time

import pytest
import yaml
from pythonosc.udp_client import SimpleUDPClient

from bridge import OSCControl, StemSeparator
from bridge.control.model import ControlModel
from bridge.mix.state import MixerState

from conftest import wait_for, write_yaml

STEMS = ("vocals", "drums", "bass", "other")
BUSES = ("main", "monitor", "phones")
SCENES = ("karaoke", "guide", "full")
SEEDS = (1, 2, 3)
OPS = 40


# ---------------------------------------------------------------------------------- the sequence
def _gain(rng: random.Random) -> float:
    """A gain in dB that a float32 (OSC) carries exactly; sometimes silence, sometimes above +24 (clamped)."""
    r = rng.random()
    if r < 0.08:
        return -math.inf
    if r < 0.14:
        return rng.choice((30.0, 24.5, 100.0))
    return rng.randrange(-240, 97) / 4.0        # -60 .. +24 in 0.25 dB steps


def _fader(rng: random.Random) -> float:
    """A fader position a float32 carries exactly; sometimes beyond 0..1 (a fader stops at its ends)."""
    r = rng.random()
    if r < 0.1:
        return rng.choice((1.25, 2.0, -0.5, 0.0, 1.0))
    return rng.randrange(0, 65) / 64.0


def _flag(rng: random.Random):
    """On or off, in the forms sources send: bool, int 1/0, float 1.0/0.0."""
    on = rng.random() < 0.5
    return rng.choice((on, int(on), float(on)))


def random_ops(seed: int, n: int = OPS) -> list[tuple]:
    """``("stem", bus, stem, control, value)``, ``("bus", bus, control, value)``, ``("scene", name)``; at least
    one scene recall, not the last change."""
    rng = random.Random(seed)
    ops: list[tuple] = []
    for _ in range(n):
        r = rng.random()
        if r < 0.1:
            ops.append(("scene", rng.choice(SCENES)))
        elif r < 0.3:
            control = rng.choice(("gain_db", "fader", "mute"))
            value = {"gain_db": _gain, "fader": _fader, "mute": _flag}[control](rng)
            ops.append(("bus", rng.choice(BUSES), control, value))
        else:
            control = rng.choice(("gain_db", "fader", "mute", "solo"))
            value = {"gain_db": _gain, "fader": _fader, "mute": _flag, "solo": _flag}[control](rng)
            ops.append(("stem", rng.choice(BUSES), rng.choice(STEMS), control, value))
    if not any(op[0] == "scene" for op in ops[:-1]):
        ops.insert(rng.randrange(0, n - 1), ("scene", rng.choice(SCENES)))
    return ops


def random_scenes(seed: int) -> dict:
    """Scenes as a rig file writes them: first-bus stems at the top, other buses under ``buses:``."""
    rng = random.Random(1000 + seed)
    scenes = {"karaoke": {"vocals": {"mute": True}}, "full": {}}
    guide: dict = {}
    for stem in STEMS:
        if rng.random() < 0.6:
            guide[stem] = {"gain_db": _gain(rng)} if rng.random() < 0.5 else {"fader": _fader(rng), "solo": _flag(rng)}
    guide["buses"] = {"monitor": {"gain_db": _gain(rng), "drums": {"mute": True}},
                      "phones": {"fader": _fader(rng), "mute": bool(rng.random() < 0.3),
                                 "bass": {"solo": True, "gain_db": _gain(rng)}}}
    scenes["guide"] = guide
    return scenes


def make_rig(tmp_path, scenes: dict, name: str = "rig.yaml", buses: dict | None = None, extra_scenes=None):
    config = tmp_path / "model.yaml"
    if not config.exists():
        write_yaml(config, stems=STEMS, target=None, extra_model={"num_stems": 4}, chunk_size=4410)
    data = {"model": {"config": "model.yaml"}, "engine": {"window": 0.1, "hop": 0.05, "lookahead": 0.05},
            "buses": buses or {b: {} for b in BUSES}, "scenes": dict(scenes, **(extra_scenes or {}))}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


# ---------------------------------------------------------------------------------- the ways
def address(op: tuple, rng: random.Random | None = None) -> str:
    """The model's name (the OSC address) of an op's control; the first bus also by its short form."""
    osc = {"gain_db": "gain", "fader": "fader", "mute": "mute", "solo": "solo"}
    if op[0] == "scene":
        return f"/scene/{op[1]}"
    if op[0] == "bus":
        return f"/bus/{op[1]}/{osc[op[2]]}"
    _, bus, stem, control, _ = op
    if bus == BUSES[0] and rng is not None and rng.random() < 0.5:
        return f"/stem/{stem}/{osc[control]}"
    return f"/bus/{bus}/stem/{stem}/{osc[control]}"


def by_python(sep, ops, tmp_path) -> None:
    for op in ops:
        if op[0] == "scene":
            sep.recaller.recall(op[1], 0.0)
        elif op[0] == "bus":
            setattr(sep.mixer[op[1]], op[2], op[3])
        else:
            setattr(sep.mixer[op[1]][op[2]], op[3], op[4])


def by_osc(sep, ops, tmp_path) -> None:
    rng = random.Random(len(ops))
    with OSCControl(sep, port=0) as control:
        client = SimpleUDPClient("127.0.0.1", control.port)
        for i, op in enumerate(ops):
            if op[0] == "scene":
                client.send_message(address(op), [] if i % 2 else [0.0])
            else:
                client.send_message(address(op, rng), op[-1])
            if i % 8 == 7:           # a burst of eight at a time, so nothing is lost in the socket's buffer
                assert wait_for(lambda: control.counters["applied"] + control.counters["errors"] >= i + 1, 5.0)
        assert wait_for(lambda: control.counters["applied"] + control.counters["errors"] >= len(ops), 10.0)
        assert control.counters["errors"] == 0 and control.counters["applied"] == len(ops), control.counters


def by_model(sep, ops, tmp_path) -> None:
    model = ControlModel.of(sep)
    rng = random.Random(len(ops) + 1)
    for op in ops:
        if op[0] == "scene":
            assert model.set(address(op)) == 1
        else:
            assert model.set(address(op, rng), op[-1]) == 1


class Compiled:
    """What a rig file writes for a sequence: every control's latest value, per bus (the sequence folded)."""

    def __init__(self, scenes: dict):
        self.scenes = scenes
        self.buses = {b: {} for b in BUSES}

    def recall(self, name: str) -> None:
        scene = copy.deepcopy(self.scenes[name])
        self.buses = {b: {} for b in BUSES}
        for bus, controls in scene.pop("buses", {}).items():
            self.buses[bus] = controls
        for stem, controls in scene.items():
            self.buses[BUSES[0]][stem] = controls

    def set(self, where: dict, control: str, value) -> None:
        if control in ("gain_db", "fader"):       # one control, two views: the latest one counts
            where.pop("gain_db", None)
            where.pop("fader", None)
        where[control] = value

    def apply(self, op: tuple) -> None:
        if op[0] == "scene":
            self.recall(op[1])
        elif op[0] == "bus":
            self.set(self.buses[op[1]], op[2], op[3])
        else:
            self.set(self.buses[op[1]].setdefault(op[2], {}), op[3], op[4])


def by_rig(ops, scenes, tmp_path):
    """A rig whose initial state is the sequence up to its last scene recall, and a scene ``final`` that is
    the last recalled scene with the rest of the sequence on it: (the initial state, the separator after
    recalling ``final``)."""
    last = max(i for i, op in enumerate(ops) if op[0] == "scene")
    before = Compiled(scenes)
    for op in ops[:last]:
        before.apply(op)
    after = Compiled(scenes)
    for op in ops[last:]:
        after.apply(op)
    final = {"buses": after.buses}
    path = make_rig(tmp_path, scenes, "rig_d.yaml", buses=before.buses, extra_scenes={"final": final})
    sep = StemSeparator.from_rig(path)
    initial = MixerState.snapshot(sep.mixer)
    sep.recaller.recall("final", 0.0)
    return initial, sep


WAYS = {"python": by_python, "osc": by_osc, "model": by_model}   # MIDI: add "midi": by_midi here


@pytest.mark.parametrize("seed", SEEDS)
def test_the_same_changes_through_every_source_end_in_the_same_mixer_state(tmp_path, seed):
    ops, scenes = random_ops(seed), random_scenes(seed)
    rig = make_rig(tmp_path, scenes)
    states = {}
    for name, way in WAYS.items():
        sep = StemSeparator.from_rig(rig)
        way(sep, ops, tmp_path)
        states[name] = MixerState.snapshot(sep.mixer)
    last = max(i for i, op in enumerate(ops) if op[0] == "scene")
    sep = StemSeparator.from_rig(rig)
    by_python(sep, ops[:last], tmp_path)
    before_scene = MixerState.snapshot(sep.mixer)
    initial, sep = by_rig(ops, scenes, tmp_path)
    states["rig"] = MixerState.snapshot(sep.mixer)
    assert initial == before_scene, "the rig's initial state differs from the sequence up to its last scene"
    reference = states["python"]
    for name, state in states.items():
        assert state == reference, f"{name} ends in another state than Python setters (seed {seed})"
    # the sequence did something: not every control back at unity
    assert reference != MixerState.unity(STEMS, BUSES)
    assert any(s.gain_db == -math.inf for b in reference.buses for s in b.stems) or \
        any(s.mute or s.solo for b in reference.buses for s in b.stems) or seed != 1


def test_a_scene_fade_started_over_osc_is_taken_over_by_a_change_from_another_surface(tmp_path):
    sep = StemSeparator.from_rig(make_rig(tmp_path, {"karaoke": {"vocals": {"mute": True}, "drums": {"gain_db": -30}},
                                                     "full": {}}))
    model = ControlModel.of(sep)
    with OSCControl(sep, port=0) as control:
        client = SimpleUDPClient("127.0.0.1", control.port)
        steps = []
        sep.mixer.add_listener(lambda: steps.append(sep.mixer["main"]["drums"].gain_db))
        client.send_message("/scene/karaoke", 3.0)
        assert wait_for(lambda: sep.recaller.fading, 5.0), "the fade did not start"
        assert wait_for(lambda: len(steps) >= 3, 5.0), "the fade made no steps"
        model.set("/bus/main/stem/bass/gain", -6.0)          # another surface (MIDI, the terminal mixer)
        assert not sep.recaller.fading and sep.recaller.taken_over == 1
        state = MixerState.snapshot(sep.mixer)
        time.sleep(0.3)                                       # 15 fade steps, had it gone on
        assert MixerState.snapshot(sep.mixer) == state, "the fade went on after the change"
        assert sep.mixer["main"]["bass"].gain_db == -6.0      # the change stays
        drums = sep.mixer["main"]["drums"].gain_db
        assert -30.0 < drums < 0.0, drums                     # stopped where it was, between the two
        assert not sep.mixer["main"]["vocals"].mute           # the scene's end was never set
        # the OSC client can start the next fade, and a change over OSC takes over too
        client.send_message("/scene/karaoke", 3.0)
        assert wait_for(lambda: sep.recaller.fading, 5.0)
        client.send_message("/stem/other/mute", 1)
        assert wait_for(lambda: not sep.recaller.fading and sep.mixer["main"]["other"].mute, 5.0)
        assert sep.recaller.taken_over == 2
