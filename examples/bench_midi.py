"""MIDI benchmark (issue 29's numbers): `stemstream live --midi` (and `--osc`) through a JACK dummy server.

    python examples/bench_midi.py [--seconds 20] [--rate 1000] [--flood 15] [--pairs 2] [--json OUT]

It prints numbers (Markdown, for BENCHMARKS.md); it is not a test and asserts nothing. It needs what
examples/bench_live.py needs (`make install`: jackd2, PortAudio) plus python-rtmidi, and reuses the JACK
server and helpers of bench_live.py and bench_osc.py.

Each run is `stemstream live --rig configs/rigs/bench_live.yaml` (the demo model, window 1 s, hop 0.25 s,
look-ahead 0.25 s, 256-frame blocks, buses main and monitor) playing the demo song in a loop for
`--seconds`, recording, with OSC on a free UDP port AND a MIDI controller (`--midi benchctl`, the default
nanoKONTROL2 map): a test port on the same JACK server plays the controller. Runs come in pairs,
interleaved (quiet, flooded, ...):

* quiet: five mute/unmute presses of the M2 button (CC 49: drums on the first bus) 1 s apart; for each,
  the control-to-audio latency: from the audio position when the message was sent (an OSC
  `/engine/status` query just before) to the first changed sample of the recorded first bus;
* flooded: `--rate` CC messages a second on knob 2 (CC 17: drums on the monitor bus), sent in 10 ms
  batches for `--flood` seconds, plus OSC status queries once a second (both surfaces active);
  counted: MIDI messages sent, seen by the surface, applied, dropped in its queue.

For every run: deadline misses, xruns, the callback's median and p99 (from session.json), so that the
flooded runs can be compared with the quiet ones.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_live import REPO, Jack, read_session  # noqa: E402
from bench_osc import Client, control_latencies, free_port, interleaved_runs, report_runs, save_runs  # noqa: E402

RIG = os.path.join(REPO, "configs", "rigs", "bench_live.yaml")


class Controller:
    """A test MIDI port on the run's JACK server that plays the controller (`benchctl:ctl`)."""

    def __init__(self, jack: Jack):
        import rtmidi

        os.environ.update({k: v for k, v in jack.env.items() if k.startswith("JACK_")})
        self.out = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, name="benchctl")
        self.out.open_virtual_port("ctl")

    def cc(self, number: int, value: int) -> None:
        self.out.send_message([0xB0, number, value])

    def close(self) -> None:
        self.out.close_port()
        self.out.delete()


def start(jack: Jack, folder: str, mix: str, seconds: float, port: int):
    argv = [sys.executable, "-m", "bridge.cli", "live", "--rig", RIG, "--input-file", mix, "--loop", "--output",
            "system", "--route", "monitor:3-4", "--no-ui", "--seconds", str(seconds), "--record",
            os.path.join(folder, "take"), "--osc", str(port), "--midi", "benchctl"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=jack.env, cwd=REPO, text=True)
    jack.wait_ports("PortAudio:out", proc=proc)
    return proc


def quiet_run(jack: Jack, folder: str, mix: str, seconds: float) -> dict:
    ctl = Controller(jack)
    try:
        port = free_port()
        proc = start(jack, folder, mix, seconds, port)
        c = Client(port)
        time.sleep(1.5)
        events = []
        for k in range(5):                       # M2: mute, unmute, ... the drums on the first bus, 1 s apart
            before = c.status()["seconds"]
            ctl.cc(49, 127)
            ctl.cc(49, 0)
            events.append((before, k % 2 == 0))
            time.sleep(1.0)
        st = c.status()
        out, _ = proc.communicate(timeout=seconds + 120)
    finally:
        ctl.close()
    take = os.path.join(folder, "take")
    session = read_session(take)
    return {"kind": "quiet", "session": session, "latencies_ms": control_latencies(take, session, events),
            "midi": {k[5:]: v for k, v in st.items() if k.startswith("midi_")}, "output": out[-2000:]}


def flooded_run(jack: Jack, folder: str, mix: str, seconds: float, rate: int, flood: float) -> dict:
    ctl = Controller(jack)
    try:
        port = free_port()
        proc = start(jack, folder, mix, seconds, port)
        c = Client(port)
        time.sleep(1.5)
        sent, k = 0, 0
        batch = max(1, rate // 100)
        t0 = time.monotonic()
        next_status = t0 + 1.0
        while time.monotonic() - t0 < flood:
            for _ in range(batch):
                ctl.cc(17, k % 128)              # knob 2 sweeping: the monitor bus's drums
                k += 1
                sent += 1
            if time.monotonic() >= next_status:  # the OSC surface is busy too
                c.status()
                next_status += 1.0
            delay = t0 + sent / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        took = time.monotonic() - t0
        time.sleep(0.5)
        st = c.status()
        out, _ = proc.communicate(timeout=seconds + 120)
    finally:
        ctl.close()
    session = read_session(os.path.join(folder, "take"))
    midi = {k[5:]: v for k, v in st.items() if k.startswith("midi_")}
    return {"kind": "flooded", "session": session, "sent": sent, "rate_sent": sent / took, "midi": midi,
            "output": out[-2000:]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--flood", type=float, default=15.0, help="seconds of flood")
    ap.add_argument("--pairs", type=int, default=2)
    ap.add_argument("--json")
    args = ap.parse_args()
    runs = interleaved_runs("bench_midi_", args.pairs,
                            lambda jack, folder, mix: quiet_run(jack, folder, mix, args.seconds),
                            lambda jack, folder, mix: flooded_run(jack, folder, mix, args.seconds, args.rate,
                                                                  args.flood))
    info = report_runs(runs, "stemstream live --rig configs/rigs/bench_live.yaml --input-file mix.wav --loop --output "
                             f"system --route monitor:3-4 --no-ui --seconds {args.seconds:g} --record take --osc PORT "
                             "--midi benchctl", "run (MIDI and OSC active)", "MIDI control-to-audio latency (CC sent")
    for r in runs:
        if r["kind"] == "flooded":
            m = r["midi"]
            print(f"flood: sent {r['sent']} CC at {r['rate_sent']:.0f}/s for {args.flood:g} s; the surface saw "
                  f"{m.get('messages')} (applied {m.get('applied')}, pickup waiting {m.get('pickup_waiting')}), "
                  f"dropped in its queue {m.get('dropped')}, lost before it {r['sent'] - int(m.get('messages', 0)) - int(m.get('dropped', 0))}")
    save_runs(args.json, info, runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
