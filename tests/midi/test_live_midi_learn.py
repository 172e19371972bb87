"""MIDI learn in the terminal mixer of a real `stemstream live` (a pty for the terminal, a JACK dummy server
for the audio and MIDI): ``l``, a button pressed on the controller, ``m`` (mute of the selected stem);
the mapping file is written and the button mutes the stem from then on."""
import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
import threading
import time

import numpy as np
import soundfile as sf
from midi_helpers import Controller, jack, needs_jackd, wait_for  # noqa: F401 - fixtures

from bridge.midi.mapping import load_mapping
from conftest import REPO, write_yaml

RATE = 44100
STEMS = ("vocals", "drums", "bass", "other")
pytestmark = needs_jackd


def test_learn_in_the_terminal_mixer_maps_a_button_and_writes_the_mapping(jack, tmp_path):
    cfg = write_yaml(tmp_path / "tiny4.yaml", stems=STEMS, target=None, extra_model={"num_stems": 4})
    sf.write(tmp_path / "song.wav", (0.2 * np.random.default_rng(0).standard_normal((8 * RATE, 2))).astype(np.float32),
             RATE, subtype="FLOAT")
    mapping = tmp_path / "my-map.yaml"
    mapping.write_text("channel: 1\ncontrols:\n  - {cc: 7, stem: 1, control: fader}\n")
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    screen = bytearray()

    def drain():
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                return
            if not chunk:
                return
            screen.extend(chunk)

    ctl = Controller("learnctl")
    env = dict(jack.env, PYTHONPATH=str(REPO), TERM="xterm-256color")
    proc = subprocess.Popen([sys.executable, "-m", "bridge.cli", "live", "--config", str(cfg), "--checkpoint", "random",
                             "--window", "0.5", "--hop", "0.1", "--lookahead", "0.1",
                             "--input-file", str(tmp_path / "song.wav"), "--output", "system", "--seconds", "60",
                             "--midi", "learnctl", "--midi-map", str(mapping)],
                            stdin=slave, stdout=slave, stderr=slave, env=env, cwd=REPO, start_new_session=True)
    os.close(slave)
    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    ok = False
    try:
        wait_for(lambda: b"learnctl:ctl" in screen or proc.poll() is not None, timeout=60, interval=0.1)
        assert proc.poll() is None, screen.decode(errors="replace")[-3000:]
        time.sleep(0.5)
        os.write(master, b"l")                       # MIDI learn
        wait_for(lambda: b"move a control" in screen, timeout=10)
        ctl.cc(50, 127)                              # a button the map does not have
        ctl.cc(50, 0)
        wait_for(lambda: b"ch1 cc 50" in screen, timeout=10)
        os.write(master, b"m")                       # -> mute of the selected stem (vocals) on the selected bus
        wait_for(lambda: len(load_mapping(mapping).entries) == 2, timeout=10)
        ctl.clear()
        time.sleep(0.3)
        ctl.cc(50, 127)                              # now it mutes the vocals: the LED says so
        ctl.cc(50, 0)
        wait_for(lambda: [0xB0, 50, 127] in ctl.messages(), timeout=5)
        os.write(master, b"q")
        proc.wait(60)
        ok = True
    finally:
        if not ok:
            (tmp_path / "screen.txt").write_bytes(bytes(screen))
        if proc.poll() is None:
            proc.kill()
        reader.join(5)
        os.close(master)
        ctl.close()
    text = screen.decode(errors="replace")
    assert proc.returncode == 0, text[-3000:]
    learned = load_mapping(mapping)
    e = [e for e in learned.entries if e.number == 50][0]
    assert (e.kind, e.channel, e.stem, e.bus, e.address) == ("cc", 0, "vocals", "main", "/bus/{bus}/stem/{stem}/mute")
    assert not list(tmp_path.glob(".stemstream-midi-*"))
