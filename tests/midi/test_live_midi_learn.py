"""MIDI learn in the terminal mixer of a real `stemstream live` (a pty for the terminal, a JACK dummy server
for the audio and MIDI): ``l``, a button pressed on the controller, ``m`` (mute of the selected stem);
the mapping file is written and the button mutes the stem from then on."""
import subprocess
import sys
import time

from midi_helpers import Controller, jack, needs_jackd, wait_for  # noqa: F401 - fixtures

from bridge.midi.mapping import load_mapping
from conftest import REPO

sys.path.insert(0, str(REPO / "tests" / "live"))
from live_helpers import Terminal, tiny4_and_song  # noqa: E402

pytestmark = needs_jackd


def test_learn_in_the_terminal_mixer_maps_a_button_and_writes_the_mapping(jack, tmp_path):
    cfg, song, _ = tiny4_and_song(tmp_path, 8)
    mapping = tmp_path / "my-map.yaml"
    mapping.write_text("channel: 1\ncontrols:\n  - {cc: 7, stem: 1, control: fader}\n")
    term = Terminal()
    screen = term.screen
    ctl = Controller("learnctl")
    env = dict(jack.env, PYTHONPATH=str(REPO), TERM="xterm-256color")
    proc = subprocess.Popen([sys.executable, "-m", "bridge.cli", "live", "--config", str(cfg), "--checkpoint", "random",
                             "--window", "0.5", "--hop", "0.1", "--lookahead", "0.1",
                             "--input-file", str(song), "--output", "system", "--seconds", "60",
                             "--midi", "learnctl", "--midi-map", str(mapping)],
                            stdin=term.slave, stdout=term.slave, stderr=term.slave, env=env, cwd=REPO,
                            start_new_session=True)
    term.start()
    ok = False
    try:
        wait_for(lambda: b"learnctl:ctl" in screen or proc.poll() is not None, timeout=60, interval=0.1)
        assert proc.poll() is None, term.text()[-3000:]
        time.sleep(0.5)
        term.send(b"l")                              # MIDI learn
        wait_for(lambda: b"move a control" in screen, timeout=10)
        ctl.cc(50, 127)                              # a button the map does not have
        ctl.cc(50, 0)
        wait_for(lambda: b"ch1 cc 50" in screen, timeout=10)
        term.send(b"m")                              # -> mute of the selected stem (vocals) on the selected bus
        wait_for(lambda: len(load_mapping(mapping).entries) == 2, timeout=10)
        ctl.clear()
        time.sleep(0.3)
        ctl.cc(50, 127)                              # now it mutes the vocals: the LED says so
        ctl.cc(50, 0)
        wait_for(lambda: [0xB0, 50, 127] in ctl.messages(), timeout=5)
        term.send(b"q")
        proc.wait(60)
        ok = True
    finally:
        if not ok:
            (tmp_path / "screen.txt").write_bytes(bytes(screen))
        if proc.poll() is None:
            proc.kill()
        term.close()
        ctl.close()
    text = term.text()
    assert proc.returncode == 0, text[-3000:]
    learned = load_mapping(mapping)
    e = [e for e in learned.entries if e.number == 50][0]
    assert (e.kind, e.channel, e.stem, e.bus, e.address) == ("cc", 0, "vocals", "main", "/bus/{bus}/stem/{stem}/mute")
    assert not list(tmp_path.glob(".stemstream-midi-*"))
