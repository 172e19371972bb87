"""MIDI control of `stemstream live` on a real JACK server: the default map's M1 button (CC 48) mutes
vocals on the first bus; the recording shows it within one block plus the mixer's ramp of the moment the
message arrived (bracketed by two OSC status queries); the error paths are one line."""
import json
import socket
import subprocess
import sys
import time

import numpy as np
import soundfile as sf
from midi_helpers import Controller, jack, needs_jackd, wait_for  # noqa: F401 - fixtures

from conftest import REPO

sys.path.insert(0, str(REPO / "tests" / "live"))
from live_helpers import STEMSTREAM, delayed, free_port, osc_status, start_live, tiny4_and_song  # noqa: E402

RATE = 44100
pytestmark = needs_jackd


def test_a_mute_from_a_midi_controller_reaches_the_recording_within_a_block_and_the_ramp(jack, tmp_path):
    cfg, _, _ = tiny4_and_song(tmp_path, 8)
    port = free_port()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.1)
    ctl = Controller("nanoKONTROL2")
    proc = start_live(jack, ["--config", str(cfg), "--checkpoint", "random", "--window", "0.5", "--hop", "0.1",
                       "--lookahead", "0.1", "--input-file", str(tmp_path / "song.wav"), "--output", "system",
                       "--no-ui", "--seconds", "6", "--record", str(tmp_path / "take"), "--osc", str(port),
                       "--midi", "nanokontrol2"])
    try:
        wait_for(lambda: any(p.startswith("PortAudio:out") for p in jack.ports()) or proc.poll() is not None,
                 timeout=60, interval=0.1)
        assert proc.poll() is None, proc.communicate()
        time.sleep(1.0)
        before = osc_status(sock, port)
        ctl.cc(48, 127)                          # M1: mute stem 1 (vocals) on the selected (first) bus
        ctl.cc(48, 0)
        wait_for(lambda: [0xB0, 48, 127] in ctl.messages(), timeout=3)   # the LED feedback: it was applied
        after = osc_status(sock, port)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        sock.close()
        ctl.close()
    assert proc.returncode == 0, err[-3000:]
    assert "midi: nanoKONTROL2:ctl (in+out)" in out
    assert after["/engine/status/midi_applied"] >= 1 and after["/engine/status/midi_connected"] == 1
    s = json.loads((tmp_path / "take" / "session.json").read_text())
    x = sf.read(tmp_path / "take" / "input.wav", dtype="float32")[0]
    main = sf.read(tmp_path / "take" / "main.wav", dtype="float32")[0]
    vocals = sf.read(tmp_path / "take" / "stems" / "vocals.wav", dtype="float32")[0]
    L = s["latency_samples"]
    changed = np.flatnonzero(np.abs(main - delayed(x, L)).max(axis=1) > 1e-6)
    onset = int(changed[0])
    block, ramp = 256, int(0.010 * RATE)
    b, a = before["/engine/status/seconds"], after["/engine/status/seconds"]
    assert b * RATE - block <= onset <= a * RATE + block, (b * RATE, onset, a * RATE)
    done = onset + ramp + 1
    np.testing.assert_allclose(main[done:], (delayed(x, L) - vocals)[done:], atol=2e-6)
    np.testing.assert_array_equal(main[:onset], delayed(x, L)[:onset])


def test_midi_errors_are_one_line(jack, tmp_path):
    env = dict(jack.env, PYTHONPATH=str(REPO))
    run = lambda *a: subprocess.run(STEMSTREAM + list(a), env=env, cwd=REPO, capture_output=True, text=True,  # noqa
                                    timeout=120)
    sf.write(tmp_path / "song.wav", np.zeros((RATE, 2), np.float32), RATE)
    song = str(tmp_path / "song.wav")
    ctl = Controller("somectl", feedback=False)
    try:
        r = run("midi-ports")
        assert r.returncode == 0 and "somectl:ctl" in r.stdout and "MIDI API: jack" in r.stdout, r.stderr
        r = run("live", "--input-file", song, "--midi-map", "x.yaml")
        assert r.returncode == 1 and r.stderr.strip().splitlines() == [
            "error: --midi-map and --midi-api go with --midi NAME or --midi-virtual"]
        bad = tmp_path / "bad.yaml"
        bad.write_text("controls:\n  - {cc: 300, stem: 1, control: fader}\n")
        r = run("live", "--input-file", song, "--midi", "somectl", "--midi-map", str(bad))
        assert r.returncode == 1 and r.stderr.strip().splitlines() == [
            f"error: {bad}: controls[0].cc: expected a whole number from 0 to 127, got 300"], r.stderr
    finally:
        ctl.close()
