"""OSC control of `stemstream live` on a real JACK server: a mute sent over the network changes the
recorded first bus within one block plus the mixer's ramp."""
import socket
import time

import numpy as np
from jack_helpers import JackServer, needs_jackd
from live_helpers import delayed, free_port, osc_send, osc_status, read_take, start_live, tiny4_and_song, wait_for_ports

RATE = 44100
pytestmark = needs_jackd


def test_a_mute_over_osc_reaches_the_recording_within_a_block_and_the_ramp(tmp_path):
    cfg, _, _ = tiny4_and_song(tmp_path, 5)
    port = free_port()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.1)
    with JackServer(log_dir=str(tmp_path)) as server:
        proc = start_live(server, ["--config", str(cfg), "--checkpoint", "random",
                                   "--window", "0.5", "--hop", "0.1", "--lookahead", "0.1",
                                   "--input-file", str(tmp_path / "song.wav"), "--output", "system", "--no-ui",
                                   "--seconds", "3", "--record", str(tmp_path / "take"), "--osc", str(port)])
        try:
            wait_for_ports(server, "PortAudio:out", proc=proc)
            time.sleep(1.0)
            before = osc_status(sock, port)["/engine/status/seconds"]
            osc_send(sock, port, "/stem/vocals/mute", 1)
            after = osc_status(sock, port)["/engine/status/seconds"]
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
            sock.close()
    assert proc.returncode == 0, err[-3000:]
    assert f"OSC on udp://127.0.0.1:{port}" in out
    take = read_take(tmp_path / "take")
    x, L = take["input"], take["session"]["latency_samples"]
    main, vocals = take["buses"]["main"], take["stems"]["vocals"]
    changed = np.flatnonzero(np.abs(main - delayed(x, L)).max(axis=1) > 1e-6)
    onset = int(changed[0])
    block, ramp = 256, int(0.010 * RATE)
    # the change starts at the block after the message arrived: between the two status answers
    assert before * RATE - block <= onset <= after * RATE + block, (before * RATE, onset, after * RATE)
    done = onset + ramp + 1
    np.testing.assert_allclose(main[done:], (delayed(x, L) - vocals)[done:], atol=2e-6)
    np.testing.assert_array_equal(main[:onset], delayed(x, L)[:onset])
