"""MixerState (one typed value for the whole mixer), the value rules, change listeners and the one
scene recaller that any change takes over from."""
import math
import threading
import time

import numpy as np
import pytest

from bridge.mix.mixer import RULES, StemMixer
from bridge.mix.scenes import Scene, SceneRecaller
from bridge.mix.state import MixerState, StemState

STEMS = ["vocals", "drums", "bass", "other"]
RATE = 44100


def test_snapshot_apply_round_trip_and_only_differences_are_touched():
    a = StemMixer(STEMS, RATE, buses=["main", "monitor"])
    a["main"]["vocals"].mute = True
    a["monitor"]["drums"].gain_db = -math.inf
    a["monitor"]["bass"].solo = True
    a["monitor"].gain_db = -3.0
    state = MixerState.snapshot(a)
    b = StemMixer(STEMS, RATE, buses=["main", "monitor"])
    calls = []
    b.add_listener(lambda: calls.append(1))
    state.apply(b)
    assert MixerState.snapshot(b) == state
    assert len(calls) == 1                       # one change (a batch), announced once
    state.apply(b)                               # nothing differs: nothing published
    assert len(calls) == 1
    np.testing.assert_allclose(state.audible()[1], [0, 0, 10 ** (-3 / 20), 0])


def test_with_stem_goes_through_the_mixer_rules():
    s = MixerState.unity(STEMS, ["main"])
    s2 = s.with_stem("vocals", fader=1.2, mute=1).with_bus("main", gain_db=99)
    assert s2.stem("vocals") == StemState(10.0, True, False) and s2.bus("main").gain_db == 24.0
    assert s.stem("vocals") == StemState()       # immutable: a changed copy
    for bad in ({"mute": 0.5}, {"gain_db": math.nan}, {"fader": "1"}, {"volume": 1}):
        with pytest.raises(ValueError):
            s.with_stem("vocals", **bad)
    with pytest.raises(KeyError, match="no stem 'piano'"):
        s.with_stem("piano", mute=True)
    assert set(RULES) == {"gain_db", "fader", "mute", "solo", "bypass"}


def test_a_state_for_another_mixer_is_refused():
    with pytest.raises(ValueError, match="does not fit"):
        MixerState.unity(STEMS, ["main"]).apply(StemMixer(STEMS, RATE, buses=["main", "monitor"]))


def test_a_change_from_elsewhere_takes_over_from_a_fade():
    m = StemMixer(STEMS, RATE)
    r = SceneRecaller(m, {"quiet": Scene("quiet", {"main": {"gain_db": -40}})})
    r.recall("quiet", 2.0)
    time.sleep(0.2)
    assert r.fading
    done = threading.Event()

    def surface():                               # another surface's thread
        m.stems["drums"].mute = True
        done.set()

    threading.Thread(target=surface).start()
    assert done.wait(2)
    deadline = time.monotonic() + 2
    while r.fading and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not r.fading and r.taken_over == 1
    stopped_at = MixerState.snapshot(m)
    time.sleep(0.2)
    assert m.stems["drums"].mute and MixerState.snapshot(m) == stopped_at   # the change stays, the fade is over
    heard = stopped_at.audible()[0]
    assert heard[1] == 0 and 0.01 < heard[0] < 1.0     # stopped part-way between 0 dB and -40 dB
