"""Closing a MIDI input while a controller floods it, again and again, never hangs or crashes the process.

With python-rtmidi's input callback this hung within ten rounds (JACK cancelled its process thread while
it waited for the GIL, leaving the GIL's lock held) or crashed (the callback's data freed while in
flight); the surface now polls its input (bridge.midi.ports). The rounds run in a child process so that a
crash or a hang is this test's failure, not the test run's."""
import os
import subprocess
import sys
import textwrap

from midi_helpers import jack, needs_jackd  # noqa: F401 - fixtures

from conftest import REPO

pytestmark = needs_jackd

CHILD = textwrap.dedent("""
    import sys, threading, time
    sys.path.insert(0, "tests/midi"); sys.path.insert(0, "tests")
    from midi_helpers import Controller
    from bridge.control.model import ControlModel
    from bridge.midi.mapping import parse_mapping
    from bridge.midi.surface import MidiSurface
    from standins import IdentityModel
    import streamer
    from bridge import StemSeparator
    from conftest import write_yaml
    import pathlib, tempfile

    rounds = int(sys.argv[1])
    tmp = pathlib.Path(tempfile.mkdtemp())
    config = streamer.load_config(write_yaml(tmp / "c.yaml", stems=("vocals", "drums", "bass", "other"),
                                             target=None, extra_model={"num_stems": 4}, chunk_size=4410))
    model = ControlModel.of(StemSeparator(IdentityModel(4), config, latency="low"))
    mapping = parse_mapping({"controls": [{"cc": 7, "stem": "vocals", "control": "fader", "pickup": False},
                                          {"cc": 48, "stem": "vocals", "control": "mute"}]}, "race map")
    ctl = Controller("racectl")
    stop = threading.Event()
    sent = [0]

    def flood():
        while not stop.is_set():
            for i in range(40):
                ctl.cc(7, i)
                ctl.cc(48, 127 if i % 2 else 0)
            sent[0] += 80
            time.sleep(0.0005)

    flooder = threading.Thread(target=flood, daemon=True)
    flooder.start()
    handled = 0
    for r in range(rounds):
        s = MidiSurface(model, mapping, port="racectl", feedback_hz=1000).start()
        time.sleep(0.01 + 0.01 * (r % 3))
        s.close()
        handled += s.counters()["messages"]
    stop.set()
    flooder.join()
    ctl.close()
    print("rounds", rounds, "sent", sent[0], "handled", handled)
""")


def test_closing_an_input_while_it_is_flooded_never_hangs_or_crashes(jack, tmp_path):
    env = dict(os.environ, **{k: jack.env[k] for k in ("JACK_DEFAULT_SERVER", "JACK_NO_START_SERVER",
                                                        "JACK_NO_AUDIO_RESERVATION")})
    try:
        done = subprocess.run([sys.executable, "-X", "faulthandler", "-c", CHILD, "30"], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"the child hung: {(exc.stderr or b'')[-2000:]!r}") from None
    assert done.returncode == 0, done.stderr[-3000:]
    words = done.stdout.split()
    assert words[:2] == ["rounds", "30"], done.stdout
    sent, handled = int(words[3]), int(words[5])
    assert sent > 10_000 and handled > 1000, done.stdout     # the rounds really were flooded and read
