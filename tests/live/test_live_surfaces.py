"""Control surfaces of a live session (``LiveSession.add_surface``) on a real JACK server: a surface is
started when added, its label is in the session's status (what the terminal mixer shows), its counters
are in ``/engine/status`` (asked over real OSC), the surfaces are closed when the session ends (the last
added first) and the summary and session.json list them. A surface that cannot start is an error at once
and is neither registered nor closed."""
import json
import subprocess
import sys
import textwrap

import pytest
from jack_helpers import JackServer, needs_jackd
from live_helpers import tiny4_and_song
from standins import IdentityModel

import streamer
from bridge import StemSeparator
from bridge.control.model import ControlModel
from bridge.live.surfaces import OSCSurface, Surfaces

from conftest import REPO, write_yaml

STEMS = ("vocals", "drums", "bass", "other")

SCRIPT = textwrap.dedent('''
    import json, socket, sys, threading, time

    from pythonosc.osc_message_builder import OscMessageBuilder
    from pythonosc.osc_packet import OscPacket

    from bridge.cli.live import build_separator
    from bridge.cli.main import build_parser
    from bridge.live.session import LiveOptions, LiveSession, format_summary
    from streamer.errors import SettingsError

    def main():
        config, song, take = sys.argv[1:4]
        events = []

        class Probe:
            """A control surface as the protocol asks: label, start, close, counters."""

            def __init__(self, kind, fail=False):
                self.kind, self.fail, self.label = kind, fail, f"{kind}: test port 1"

            def start(self):
                if self.fail:
                    raise SettingsError(f"{self.kind}: no port named 'nothing'; ports: test port 1")
                events.append(["start", self.kind])

            def close(self):
                events.append(["close", self.kind])

            def counters(self):
                return {"messages": 7, "ignored": 2}

        args = build_parser().parse_args(["live", "--config", config, "--checkpoint", "random", "--window", "0.5",
                                          "--hop", "0.1", "--lookahead", "0.1"])
        sep, info = build_separator(args)
        session = LiveSession(sep, LiveOptions(output="system", input_file=song, seconds=2.5, record=take, model=info))
        out = {}
        try:
            session.add_surface(Probe("broken", fail=True))
        except SettingsError as exc:
            out["refused"] = str(exc)
        probe = Probe("midi")
        assert session.add_surface(probe) is probe
        control = session.start_osc(0)
        out["osc"] = session.osc
        answers, seen = {}, []

        def ask():
            deadline = time.monotonic() + 60
            while session.started_at is None and time.monotonic() < deadline:   # until the stream runs
                time.sleep(0.01)
            time.sleep(1.2)
            seen.extend(session.status().surfaces)
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.settimeout(5)
            sock.sendto(OscMessageBuilder("/engine/status").build().dgram, ("127.0.0.1", control.port))
            for m in OscPacket(sock.recv(65536)).messages:
                answers[m.message.address] = m.message.params[0]
            sock.close()

        t = threading.Thread(target=ask)
        t.start()
        summary = session.run(ui=False, out=open("/dev/null", "w"))
        t.join()
        try:
            session.add_surface(Probe("late"))
        except RuntimeError as exc:
            out["late"] = str(exc)
        out.update(events=events, status_surfaces=seen, answers=answers, summary=summary["surfaces"],
                   printed=format_summary(summary), stopped_by=summary["stopped_by"])
        print(json.dumps(out))


    if __name__ == "__main__":   # the worker process re-imports this script
        main()
''')


@needs_jackd
def test_surfaces_start_show_count_and_close_in_order(tmp_path):
    cfg, _, _ = tiny4_and_song(tmp_path, 4)
    (tmp_path / "run.py").write_text(SCRIPT)
    with JackServer(log_dir=str(tmp_path)) as server:
        env = dict(server.env, PYTHONPATH=str(REPO))
        r = subprocess.run([sys.executable, str(tmp_path / "run.py"), str(cfg), str(tmp_path / "song.wav"),
                            str(tmp_path / "take")], env=env, cwd=REPO, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["stopped_by"] == "seconds"
    assert "no port named 'nothing'" in out["refused"]
    assert out["events"] == [["start", "midi"], ["close", "midi"]], out["events"]   # the broken one: never
    osc = out["osc"]
    assert osc.startswith("udp://127.0.0.1:")
    labels = ["midi: test port 1", f"osc: {osc}"]
    assert out["status_surfaces"] == labels                        # what the terminal mixer shows
    a = out["answers"]
    assert a["/engine/status/midi_messages"] == 7 and a["/engine/status/midi_ignored"] == 2
    assert a["/engine/status/osc_messages"] == 1 and a["/engine/status/osc_errors"] == 0
    assert a["/engine/status/seconds"] > 0.1 and a["/engine/status/xruns"] >= 0     # the session's own numbers
    assert "/engine/status/broken_messages" not in a
    assert [s["label"] for s in out["summary"]] == labels
    assert out["summary"][0]["counters"] == {"messages": 7, "ignored": 2}
    assert out["summary"][1]["counters"]["messages"] == 1
    assert "control midi: test port 1 (messages 7, ignored 2)" in out["printed"]
    assert "the session has ended" in out["late"]
    session = json.loads((tmp_path / "take" / "session.json").read_text())
    assert [s["label"] for s in session["surfaces"]] == labels


class Probe:
    def __init__(self, label, log, fail_close=False):
        self.label, self.log, self.fail_close = label, log, fail_close

    def start(self):
        self.log.append(("start", self.label))

    def close(self):
        self.log.append(("close", self.label))
        if self.fail_close:
            raise OSError("the device is gone")

    def counters(self):
        return {"messages": len(self.label)}


def test_two_surfaces_of_a_kind_count_apart_and_a_failing_close_leaves_the_others_closing(tmp_path):
    config = streamer.load_config(write_yaml(tmp_path / "four.yaml", stems=STEMS, target=None,
                                             extra_model={"num_stems": 4}, chunk_size=4410))
    sep = StemSeparator(IdentityModel(4), config, latency="low")
    model, log = ControlModel.of(sep), []
    surfaces = Surfaces(model)
    surfaces.add(Probe("midi: nanoKONTROL2", log))
    surfaces.add(Probe("midi: MIDImix", log, fail_close=True))
    osc = surfaces.add(OSCSurface(sep, port=0))
    assert osc.label.startswith("osc: udp://127.0.0.1:") and osc.control is not None
    with pytest.raises(TypeError, match="not a control surface: it has no label, start, close, counters"):
        surfaces.add(object())
    values = model.status().values()
    assert values["midi_messages"] == len("midi: nanoKONTROL2") and values["midi2_messages"] == len("midi: MIDImix")
    assert values["osc_messages"] == 0
    assert surfaces.labels == ["midi: nanoKONTROL2", "midi: MIDImix", osc.label]
    failures = surfaces.close()
    assert failures[0] is None and failures[2] is None and "the device is gone" in failures[1]
    assert log[-2:] == [("close", "midi: MIDImix"), ("close", "midi: nanoKONTROL2")]   # the last added first
    assert not osc.control._threads                                                    # OSC closed first
    assert not any(k.startswith(("midi", "osc")) for k in model.status().values())
    assert surfaces.close() == [None, None, None] and len(log) == 4                    # once only
    with pytest.raises(RuntimeError, match="ended"):
        surfaces.add(Probe("web: x", log))
