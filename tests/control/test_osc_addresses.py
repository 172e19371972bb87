"""The OSC address space: every address, value checks, queries, effect parameters, OSC 1.0 patterns."""
import math

import pedalboard
import pytest

from bridge.control.addresses import AddressSpace, ControlError, as_flag, as_number, compile_pattern
from bridge.mix.scenes import Scene, SceneRecaller

from conftest import FOUR_STEMS, four_stem_separator

STEMS = FOUR_STEMS


@pytest.fixture
def space(tmp_path):
    sep = four_stem_separator(tmp_path)
    sep.stems["other"].effects = pedalboard.Pedalboard([pedalboard.Reverb(room_size=0.3)])
    recaller = SceneRecaller(sep.mixer, {"karaoke": Scene("karaoke", {"main": {"stems": {"vocals": {"mute": True}}}})})
    calls = []
    s = AddressSpace(sep, {"get_bypass": lambda: sep.mixer.bypass,
                           "set_bypass": lambda on: setattr(sep.mixer, "bypass", on),
                           "reset": lambda: calls.append("reset"), "recall": recaller.recall,
                           "scenes": lambda: list(recaller.scenes)})
    s.calls = calls
    return s


def one(space, address):
    (ep,) = space.match(address)
    return ep


def test_every_documented_address_exists(space):
    for a in ["/stem/vocals/mute", "/stem/vocals/solo", "/stem/vocals/gain", "/stem/vocals/fader",
              "/bus/monitor/stem/drums/gain", "/bus/main/stem/bass/mute", "/bus/monitor/gain", "/bus/monitor/fader",
              "/bus/monitor/mute", "/stem/other/fx/0/room_size", "/stem/other/fx/0/wet_level", "/scene/karaoke",
              "/engine/bypass", "/engine/reset", "/engine/status", "/scene"]:
        assert space.match(a), a
    assert not space.match("/stem/piano/mute") and not space.match("/stem/vocals/fx/0/room_size")
    assert not space.match("no/slash")


def test_values_are_checked_and_set(space):
    m = space.mixer
    one(space, "/stem/vocals/mute").set((1,))
    assert m.stems["vocals"].mute
    one(space, "/stem/vocals/mute").set((0.0,))            # a button's float: 1.0/0.0, the mixer's rule
    assert not m.stems["vocals"].mute
    with pytest.raises(ControlError, match="expected true or false"):   # no "on above 0.5": one rule everywhere
        one(space, "/stem/vocals/mute").set((0.2,))
    one(space, "/bus/monitor/stem/drums/solo").set((True,))
    assert m["monitor"]["drums"].solo and not m.stems["drums"].solo
    one(space, "/stem/bass/gain").set((99.0,))
    assert m.stems["bass"].gain_db == 24.0                 # the mixer's top
    one(space, "/stem/bass/fader").set((0.5,))
    assert m.stems["bass"].gain_db == pytest.approx(-10.0)
    for address, bad in [("/stem/bass/gain", (math.nan,)), ("/stem/bass/gain", (math.inf,)), ("/stem/bass/gain", ("x",)),
                         ("/stem/bass/mute", (2,)), ("/stem/bass/mute", ("on",)), ("/stem/bass/gain", (1.0, 2.0)),
                         ("/stem/other/fx/0/room_size", (3.0,))]:
        with pytest.raises(ControlError):
            one(space, address).set(bad)
    assert m.stems["bass"].gain_db == pytest.approx(-10.0)  # refused values change nothing
    one(space, "/stem/other/fx/0/room_size").set((0.8,))
    assert space.sep.stems["other"].effects[0].room_size == pytest.approx(0.8)


def test_queries_answer_values_with_their_types(space):
    space.mixer.stems["vocals"].gain_db = -math.inf
    assert one(space, "/stem/vocals/gain").get() == -math.inf
    ep = one(space, "/stem/vocals/mute")
    assert ep.get() == 0 and ep.tag == "i" and isinstance(ep.get(), int)
    assert isinstance(one(space, "/stem/other/fx/0/room_size").get(), float)
    assert one(space, "/engine/bypass").get() == 0
    one(space, "/engine/bypass").set((1,))
    assert space.mixer.bypass and one(space, "/engine/bypass").get() == 1


def test_actions(space):
    one(space, "/engine/reset").set(())
    assert space.calls == ["reset"]
    one(space, "/scene/karaoke").set(())
    assert space.mixer.stems["vocals"].mute


@pytest.mark.parametrize("pattern,expected", [
    ("/stem/*/mute", ["/stem/bass/mute", "/stem/drums/mute", "/stem/other/mute", "/stem/vocals/mute"]),
    ("/stem/{vocals,drums}/gain", ["/stem/drums/gain", "/stem/vocals/gain"]),
    ("/stem/?ass/solo", ["/stem/bass/solo"]),
    ("/stem/[a-c]*/fader", ["/stem/bass/fader"]),
    ("/stem/[!a-c]*/fader", ["/stem/drums/fader", "/stem/other/fader", "/stem/vocals/fader"]),
    ("/bus/*/mute", ["/bus/main/mute", "/bus/monitor/mute"]),
    ("/*/vocals/mute", ["/stem/vocals/mute"]),          # '*' never crosses a '/'
])
def test_patterns(space, pattern, expected):
    assert sorted(ep.address for ep in space.match(pattern)) == expected


def test_pattern_syntax_errors_and_values():
    with pytest.raises(ControlError):
        compile_pattern("/stem/[abc")
    with pytest.raises(ControlError):
        compile_pattern("/stem/{a,b")
    assert as_flag("/x", (True,)) is True and as_flag("/x", (1.0,)) is True
    with pytest.raises(ControlError):
        as_flag("/x", (0.5,))
    assert as_number("/x", (3,)) == 3.0
    with pytest.raises(ControlError):
        as_number("/x", (True,))
