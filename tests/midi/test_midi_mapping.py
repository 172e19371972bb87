"""Mapping files and a rig's midi: section: what they say, what they refuse (one line naming the file and the
entry), atomic writing. No MIDI backend needed."""
import pathlib

import pytest

from bridge.midi import DEFAULT_MAP
from bridge.midi.mapping import MappingError, load_mapping, parse_mapping, save_mapping, with_entry
from bridge.plugin.rig import RigError, load_rig, rig_midi

from conftest import write_yaml


def test_the_shipped_map_is_the_nanokontrol2_factory_scene():
    m = load_mapping(DEFAULT_MAP)
    by = {(e.kind, e.number): e for e in m.entries}
    assert m.channel == 0 and m.pickup and m.feedback and len(m.entries) == 42
    for n in range(8):
        assert (by[("cc", n)].stem, by[("cc", n)].bus, by[("cc", n)].mode) == (n + 1, "selected", "absolute")
        assert by[("cc", n)].address == "/bus/{bus}/stem/{stem}/fader"
        assert (by[("cc", 16 + n)].stem, by[("cc", 16 + n)].bus) == (n + 1, 2)
        assert by[("cc", 32 + n)].address.endswith("/solo") and by[("cc", 32 + n)].mode == "auto"
        assert by[("cc", 48 + n)].address.endswith("/mute") and by[("cc", 48 + n)].mode == "auto"
        assert by[("cc", 64 + n)].scene == n + 1
    assert by[("cc", 58)].bus_select == "previous" and by[("cc", 59)].bus_select == "next"


@pytest.mark.parametrize("controls,message", [
    ([{"cc": 300, "stem": 1, "control": "fader"}], "controls[0].cc: expected a whole number from 0 to 127, got 300"),
    ([{"cc": 1, "stem": 1, "control": "volume"}], "controls[0].control: expected one of fader, gain, mute, solo"),
    ([{"cc": 1, "note": 2, "stem": 1, "control": "fader"}], "give one source"),
    ([{"cc": 1}], "give one target"),
    ([{"cc": "0-7", "stem": "1-4", "control": "fader"}], "ranges of different lengths"),
    ([{"cc": 1, "stem": 1, "control": "mute", "mode": "absolute"}], "absolute is for faders and knobs"),
    ([{"note": 1, "stem": 1, "control": "fader", "mode": "relative-twos"}], "a note is a button"),
    ([{"cc": 1, "address": "/stem/vocals/fx/0/mix"}], "an effect parameter needs range"),
    ([{"cc": 1, "stem": 1, "control": "fader"}, {"cc": 1, "stem": 2, "control": "fader"}], "ch1 cc 1 is mapped twice"),
    ([{"cc": 1, "lsb": 33, "stem": 1, "control": "fader"}], "lsb: goes with cc and mode: absolute14"),
    ([{"cc": 100, "stem": 1, "control": "fader", "mode": "absolute14"}], "cc 100 has no LSB at cc 132"),
    ([{"cc": 1, "stem": 1, "control": "fader", "channel": 17}], "channel: expected a whole number from 1 to 16"),
    ([{"cc": 1, "stem": 0, "control": "fader"}], "numbers count from 1"),
    ([{"cc": 1, "scene": 1, "fade": -1}], "fade: expected seconds from 0 to 600"),
    ("cc 1", "controls: expected a list of entries"),
])
def test_bad_mappings_are_one_line_naming_the_entry(controls, message):
    with pytest.raises(MappingError, match=message.replace("(", r"\(").replace("[", r"\[")):
        parse_mapping({"controls": controls}, "my.yaml")


def test_a_14_bit_pair_listens_on_both_numbers_and_a_14_bit_lsb_cannot_be_mapped_again():
    m = parse_mapping({"controls": [{"cc": 1, "stem": 1, "control": "fader", "mode": "absolute14"}]})
    assert m.entries[0].lsb == 33
    with pytest.raises(MappingError, match="ch1 cc 33 is mapped twice"):
        parse_mapping({"controls": [{"cc": 1, "stem": 1, "control": "fader", "mode": "absolute14"},
                                    {"cc": 33, "stem": 2, "control": "fader"}]})


def test_a_learned_entry_replaces_the_one_on_its_source_and_is_written_atomically(tmp_path):
    path = tmp_path / "sub" / "map.yaml"
    m = load_mapping(DEFAULT_MAP)
    m2 = with_entry(m, {"cc": 48, "channel": 1, "scene": "karaoke"})
    assert len(m2.entries) == len(m.entries)
    save_mapping(m2, path)
    back = load_mapping(path)
    assert [e for e in back.entries if e.number == 48][0].scene == "karaoke"
    assert back.entries == m2.entries and not list(path.parent.glob("*.partial"))
    with pytest.raises(MappingError):
        with_entry(m, {"cc": 48, "channel": 1, "scene": 0})


def test_a_rig_names_its_mapping_inline_or_as_a_file(tmp_path):
    cfg = write_yaml(tmp_path / "model.yaml", stems=("vocals", "drums", "bass", "other"), target=None,
                     extra_model={"num_stems": 4})
    (tmp_path / "maps").mkdir()
    (tmp_path / "maps" / "pads.yaml").write_text("channel: 10\ncontrols:\n  - {note: 36, stem: vocals, control: mute}\n")
    inline = tmp_path / "inline.yaml"
    inline.write_text(f"model: {{config: {cfg}}}\nmidi:\n  channel: 2\n  controls:\n"
                      "    - {cc: 7, stem: 1, control: fader}\n")
    by_path = tmp_path / "by_path.yaml"
    by_path.write_text(f"model: {{config: {cfg}}}\nmidi: maps/pads.yaml\n")
    spec = load_rig(inline)
    assert spec.midi.channel == 1 and spec.midi.entries[0].number == 7
    found = rig_midi(by_path)
    assert found.path == str(tmp_path / "maps" / "pads.yaml") and found.entries[0].channel == 9
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"model: {{config: {cfg}}}\nmidi: {{controls: [{{cc: 7}}]}}\n")
    with pytest.raises(RigError, match=r"bad.yaml: midi: controls\[0\]: give one target"):
        load_rig(bad)
    assert pathlib.Path(DEFAULT_MAP).is_file()


def test_without_python_rtmidi_midi_is_one_error_line_saying_what_to_install():
    import subprocess
    import sys

    from conftest import REPO

    code = ("import sys; sys.modules['rtmidi'] = None\n"
            "from bridge.cli.main import main\nsys.exit(main(['midi-ports']))")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.strip().splitlines() == [r.stderr.strip()]
    assert r.stderr.startswith("error: MIDI needs python-rtmidi: pip install 'python-rtmidi>=1.5.8,<1.6'"), r.stderr
