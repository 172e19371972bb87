"""The terminal mixer in its own process: the control protocol, and a real run in a pseudo-terminal where a
key press mutes the vocals of a live session."""
import math
import multiprocessing as mp
import subprocess
import sys
import time

import numpy as np
import pytest
from jack_helpers import JackServer, needs_jackd
from live_helpers import Terminal, delayed, read_take, tiny4_and_song, wait_for_ports

from bridge.live.status import LiveStatus
from bridge.live.ui_process import _Mirror, _RemoteView, apply_controls, mixer_controls
from bridge.mix.state import StemState
from bridge.mix.mixer import StemMixer
from conftest import REPO

STEMS = ["vocals", "drums", "bass", "other"]
RATE = 44100


def test_controls_round_trip_and_only_differences_are_set():
    a = StemMixer(STEMS, RATE, buses=("main", "monitor"))
    b = StemMixer(STEMS, RATE, buses=("main", "monitor"))
    a["main"]["vocals"].mute = True
    a["monitor"]["drums"].gain_db = -math.inf
    a["monitor"]["bass"].solo = True
    a["monitor"].gain_db = -3.0
    versions = b._version
    apply_controls(b, mixer_controls(a))
    assert mixer_controls(b) == mixer_controls(a)
    assert b._version - versions == 1          # four changes, published as one
    apply_controls(b, mixer_controls(a))
    assert b._version - versions == 1          # nothing differs: nothing published


def test_mirror_sends_changes_and_takes_the_parents_state_only_once_acknowledged():
    parent, child = mp.Pipe()
    mirror = _Mirror(STEMS, RATE, ["main"], child)
    view = _RemoteView(mirror, child)
    mirror["main"]["drums"].mute = True                       # a key press in the mixer
    kind, seq, controls = parent.recv()
    assert kind == "controls" and seq == 1 and controls.stem("drums", "main") == StemState(0.0, True, False)
    real = StemMixer(STEMS, RATE)
    meters = np.full(len(real.meters), -6.0, np.float32)
    # a state from before the parent applied the change: the mirror keeps its own controls
    parent.send(("state", 0, meters, LiveStatus(seconds=1.0), mixer_controls(real)))
    deadline = time.monotonic() + 5
    while view.status().seconds != 1.0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert mirror["main"]["drums"].mute and float(mirror.meters[0]) == -6.0
    apply_controls(real, controls)
    real["main"]["vocals"].gain_db = -10.0                    # changed elsewhere (OSC, later)
    parent.send(("state", 1, meters, LiveStatus(seconds=2.0), mixer_controls(real)))
    while view.status().seconds != 2.0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert mirror["main"]["vocals"].gain_db == -10.0 and mirror["main"]["drums"].mute
    assert not parent.poll(0.1), "taking the parent's state must not echo it back"
    parent.close()
    while not view.finished and time.monotonic() < deadline:
        time.sleep(0.01)
    assert view.finished                                      # the parent is gone: the mixer ends


@needs_jackd
def test_a_key_press_in_the_terminal_mixer_mutes_the_vocals_of_a_live_session(tmp_path):
    cfg, song, _ = tiny4_and_song(tmp_path, 5)
    term = Terminal()
    with JackServer(log_dir=str(tmp_path)) as server:
        env = dict(server.env, PYTHONPATH=str(REPO), TERM="xterm-256color")
        proc = subprocess.Popen([sys.executable, "-m", "bridge.cli", "live", "--config", str(cfg),
                                 "--checkpoint", "random", "--window", "0.5",
                                 "--hop", "0.1", "--lookahead", "0.1", "--input-file", str(song),
                                 "--output", "system", "--seconds", "4", "--record", str(tmp_path / "take")],
                                stdin=term.slave, stdout=term.slave, stderr=term.slave, env=env, cwd=REPO,
                                start_new_session=True)
        term.start()
        try:
            wait_for_ports(server, "PortAudio:out", proc=proc)
            time.sleep(1.5)
            assert b"vocals" in term.screen, "the mixer is on the screen"
            term.send(b"1")                                   # stem 1 (vocals): mute on the first bus
            proc.wait(60)
        finally:
            if proc.poll() is None:
                proc.kill()
            term.close()
    text = term.text()
    assert proc.returncode == 0, text[-3000:]
    assert "stopped: seconds after" in text
    take = read_take(tmp_path / "take")
    x, L = take["input"], take["session"]["latency_samples"]
    main, vocals = take["buses"]["main"], take["stems"]["vocals"]
    assert np.abs(vocals[L:]).max() > 1e-3
    first = slice(L, L + RATE // 2)                           # before the key: nothing engaged, bit for bit
    np.testing.assert_array_equal(main[first], delayed(x, L)[first])
    last = slice(len(x) - RATE // 4, len(x))                  # after it: the vocals are gone from the mix
    np.testing.assert_allclose(main[last], (delayed(x, L) - vocals)[last], atol=2e-6)
