"""`stemstream live --web` on a real JACK server (dummy backend), controlled from a real browser: a mute
pressed on the page changes the recorded first bus within a block plus the mixer's ramp, and the flags
are checked before anything loads."""
import pathlib
import socket
import sys
import time

import numpy as np
import pytest
import soundfile as sf
from web_helpers import chrome, wait_until

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "live"))
from jack_helpers import JackServer, needs_jackd  # noqa: E402
from live_helpers import (delayed, free_port, osc_status, read_take, start_live, tiny4_and_song,  # noqa: E402
                          wait_for_ports)

RATE = 44100
TOKEN = "live-test-token-42"


@pytest.mark.parametrize("args, message", [
    (["--web-allow", "10.0.0.0/8"], "--web-host, --web-allow and --web-token go with --web PORT"),
    (["--web-token", "abcdefgh1"], "--web-host, --web-allow and --web-token go with --web PORT"),
    (["--web", "8080", "--web-host", "0.0.0.0"], "--web-allow is required when the browser mixer listens on 0.0.0.0"),
    (["--web", "8080", "--web-allow", "10.0.0.0/33"], "--web-allow: bad entry '10.0.0.0/33'"),
    (["--web", "8080", "--web-token", "short"], "--web-token: expected 8 to 256 printable ASCII characters"),
])
def test_bad_web_flags_are_one_error_line_before_anything_loads(args, message, tmp_path, capsys):
    from bridge.cli import main

    song = tmp_path / "song.wav"
    sf.write(song, np.zeros((4410, 2), np.float32), RATE)
    # the model's config does not exist: the flags are refused before it would be read
    assert main(["live", "--input-file", str(song), "--checkpoint", "random", "--config", "nope.yaml", *args]) == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], err[-2000:]
    assert "Traceback" not in err


def test_a_port_out_of_range_is_refused_by_the_parser(capsys):
    from bridge.cli import main

    with pytest.raises(SystemExit):
        main(["live", "--web", "70000"])
    assert "--web" in capsys.readouterr().err


@needs_jackd
def test_changes_made_in_the_browser_reach_the_recording(tmp_path):
    """Mute, solo and a fader pressed and moved on the page: the recorded first bus follows each, from the
    block after the message arrived (between two status answers) plus the mixer's ramp."""
    from bridge.mix.mixer import fader_to_db

    cfg, _, _ = tiny4_and_song(tmp_path, 8)
    osc_port, web_port = free_port(), free_port(socket.SOCK_STREAM)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.1)
    steps = []          # (audio position before, after, the fader value the page sent or None)
    with chrome() as page, JackServer(log_dir=str(tmp_path)) as server:
        from selenium.webdriver.common.action_chains import ActionChains

        proc = start_live(server, ["--config", str(cfg), "--checkpoint", "random",
                                   "--window", "0.5", "--hop", "0.1", "--lookahead", "0.1",
                                   "--input-file", str(tmp_path / "song.wav"), "--output", "system", "--no-ui",
                                   "--seconds", "6", "--record", str(tmp_path / "take"), "--osc", str(osc_port),
                                   "--web", str(web_port), "--web-token", TOKEN])
        try:
            wait_for_ports(server, "PortAudio:out", proc=proc)
            page.get(f"http://127.0.0.1:{web_port}/?t={TOKEN}")
            wait_until(lambda: page.execute_script("return window.stemstream.connected"), "the page connects", 10)
            find = lambda address: page.find_element("css selector", f'[data-control="{address}"]')  # noqa: E731
            time.sleep(0.5)
            for address in ("/stem/vocals/mute", "/stem/drums/solo", "/stem/drums/fader"):
                before = osc_status(sock, osc_port)["/engine/status/seconds"]
                control = find(address)
                if address.endswith("/fader"):
                    ActionChains(page).move_to_element_with_offset(control, 0, control.size["height"] // 3) \
                        .click().perform()
                    value = float(control.get_property("value"))
                    wait_until(lambda: abs(page.execute_script("return window.stemstream.state[arguments[0]]",
                                                               address) - value) < 1e-6, "the fader's echo", 5)
                else:
                    control.click()
                    value = None
                    wait_until(lambda: control.get_attribute("aria-pressed") == "true", "the page shows it", 5)
                after = osc_status(sock, osc_port)
                steps.append((before, after["/engine/status/seconds"], value))
                time.sleep(0.6)
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
            sock.close()
    assert proc.returncode == 0, err[-3000:]
    assert after["/engine/status/web_applied"] >= 3 and after["/engine/status/web_clients"] == 1
    assert f"browser mixer: http://127.0.0.1:{web_port}/?t={TOKEN}" in out
    assert "\u2580" in out or "\u2584" in out or "\u2588" in out          # the QR code, in text
    take = read_take(tmp_path / "take")
    assert f"web: http://127.0.0.1:{web_port}/" in str(take["session"]), "the surface is in session.json"
    assert TOKEN not in str(take["session"])
    x, L = take["input"], take["session"]["latency_samples"]
    main, vocals, drums = take["buses"]["main"], take["stems"]["vocals"], take["stems"]["drums"]
    dry = delayed(x, L)
    block, ramp = 256, int(0.010 * RATE)
    fader = steps[2][2]
    assert 0.0 < fader < 0.7
    expected = [dry - vocals, drums, drums * np.float32(10.0 ** (fader_to_db(fader) / 20.0))]
    # the first change starts at the block after the click's message arrived: between the two status answers
    onset = int(np.flatnonzero(np.abs(main - dry).max(axis=1) > 1e-6)[0])
    assert steps[0][0] * RATE - block <= onset <= steps[0][1] * RATE + block, (steps[0], onset / RATE)
    np.testing.assert_array_equal(main[:onset], dry[:onset])
    for k, ((before, after, _), want) in enumerate(zip(steps, expected)):
        start = int(after * RATE) + block + ramp + 1
        end = int(steps[k + 1][0] * RATE) - block if k + 1 < len(steps) else len(main)
        assert end - start > RATE // 4, (k, start, end)
        np.testing.assert_allclose(main[start:end], want[start:end], atol=1e-5, err_msg=f"after step {k}")
