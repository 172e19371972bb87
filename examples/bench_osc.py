"""OSC benchmark (issue 15's performance goal): `stemstream live --osc` through a JACK dummy server.

    python examples/bench_osc.py [--seconds 20] [--rate 2000] [--pairs 2] [--json OUT]

It prints numbers (Markdown, for BENCHMARKS.md); it is not a test and asserts nothing. It needs what
examples/bench_live.py needs (`make install`: jackd2, PortAudio) and reuses its JACK server and helpers.

Each run is `stemstream live --rig configs/rigs/bench_live.yaml` (the demo model, window 1 s, hop 0.25 s,
look-ahead 0.25 s, 256-frame blocks, buses main and monitor on outputs 1-2 and 3-4, a Reverb on
`other`) playing the demo song in a loop for `--seconds`, recording, with OSC on a free UDP port.
Runs come in pairs, interleaved (quiet, flooded, quiet, flooded, ...):

* quiet: no control traffic except what is measured: five mute/unmute events of the drums 1 s apart
  (control-to-audio latency: the position the audio had reached when the message was sent, from an
  `/engine/status` query just before, to the first changed sample of the recorded first bus) and a
  25 Hz meter subscription for 10 s (delivery rate and interval jitter at the client);
* flooded: `--rate` messages a second (`/bus/monitor/stem/drums/gain` with changing values, sent in
  10 ms batches) for the middle of the run; counted: messages sent, applied by the server, dropped in
  its queue, lost before it (in the kernel).

For every run: deadline misses, xruns, the callback's median and p99 (from session.json), so the
flooded runs can be compared with the quiet ones.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_live import REPO, Jack, machine, read_session, write_mix  # noqa: E402

from pythonosc.osc_message_builder import OscMessageBuilder  # noqa: E402
from pythonosc.osc_packet import OscPacket  # noqa: E402

RATE = 44100
RIG = os.path.join(REPO, "configs", "rigs", "bench_live.yaml")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def osc(address: str, *args) -> bytes:
    b = OscMessageBuilder(address=address)
    for a in args:
        b.add_arg(a)
    return b.build().dgram


class Client:
    def __init__(self, port: int):
        self.port = port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.05)

    def send(self, data: bytes) -> None:
        self.sock.sendto(data, ("127.0.0.1", self.port))

    def status(self, timeout: float = 5.0) -> dict:
        self.send(osc("/engine/status"))
        got, deadline = {}, time.monotonic() + timeout
        while "seconds" not in got and time.monotonic() < deadline:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            for m in OscPacket(data).messages:
                if m.message.address.startswith("/engine/status/"):
                    got[m.message.address.rsplit("/", 1)[1]] = m.message.params[0]
        return got


def start(jack: Jack, folder: str, mix: str, seconds: float, port: int):
    import subprocess

    argv = [sys.executable, "-m", "bridge.cli", "live", "--rig", RIG, "--input-file", mix, "--loop", "--output",
            "system", "--route", "monitor:3-4", "--no-ui", "--seconds", str(seconds), "--record",
            os.path.join(folder, "take"), "--osc", str(port)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=jack.env, cwd=REPO, text=True)
    jack.wait_ports("PortAudio:out", proc=proc)
    return proc


def quiet_run(jack: Jack, folder: str, mix: str, seconds: float) -> dict:
    port = free_port()
    proc = start(jack, folder, mix, seconds, port)
    c = Client(port)
    time.sleep(1.5)
    events = []
    for k in range(5):                       # mute, unmute, ... the vocals, 1 s apart
        before = c.status()["seconds"]
        c.send(osc("/stem/drums/mute", 1 if k % 2 == 0 else 0))
        events.append((before, k % 2 == 0))
        time.sleep(1.0)
    arrivals = []                             # meters at 25 Hz for 10 s
    meter_sock = Client(port)
    meter_sock.send(osc("/subscribe", 0, 25.0))
    start_t = time.monotonic()
    renewed = start_t
    while time.monotonic() - start_t < 10.0:
        if time.monotonic() - renewed > 5.0:
            meter_sock.send(osc("/subscribe", 0, 25.0))
            renewed = time.monotonic()
        try:
            data = meter_sock.sock.recv(65536)
        except socket.timeout:
            continue
        t = time.monotonic()
        if any(m.message.address == "/meter/vocals" for m in OscPacket(data).messages):
            arrivals.append(t)
    meter_sock.send(osc("/unsubscribe"))
    out, _ = proc.communicate(timeout=seconds + 120)
    take = os.path.join(folder, "take")
    session = read_session(take)
    return {"kind": "quiet", "session": session, "latencies_ms": control_latencies(take, session, events),
            "meters": meter_stats(arrivals), "output": out[-2000:]}


def control_latencies(take: str, session: dict, events) -> list[float]:
    """For each mute/unmute of the drums on the first bus: ms from the audio position when the message
    was sent to the first sample of main.wav that differs from the state before. The rig's first bus
    is every stem after its effects except the (muted) vocals, so the state before is that sum, less
    the drums while they are muted."""
    import soundfile as sf

    stems = {n: sf.read(os.path.join(take, "stems", f"{n}.wav"), dtype="float32")[0] for n in session["stems"]}
    main = sf.read(os.path.join(take, "main.wav"), dtype="float32")[0]
    base = sum(v for n, v in stems.items() if n != "vocals")
    out = []
    muted = False
    for before, mute in events:
        expect = base - stems["drums"] if muted else base
        start = max(0, int(before * RATE) - 512)
        diff = np.abs(main[start:] - expect[start:]).max(axis=1)
        changed = np.flatnonzero(diff > 1e-4)
        if changed.size:
            out.append(1000.0 * (start + changed[0] - before * RATE) / RATE)
        muted = mute
    return out


def meter_stats(arrivals: list[float]) -> dict:
    if len(arrivals) < 3:
        return {"count": len(arrivals)}
    gaps = np.diff(arrivals) * 1000.0
    span = arrivals[-1] - arrivals[0]
    return {"count": len(arrivals), "rate_hz": (len(arrivals) - 1) / span, "interval_ms_median": float(np.median(gaps)),
            "interval_ms_p99": float(np.percentile(gaps, 99)), "interval_ms_max": float(gaps.max()),
            "jitter_ms_std": float(gaps.std())}


def flooded_run(jack: Jack, folder: str, mix: str, seconds: float, rate: int) -> dict:
    port = free_port()
    proc = start(jack, folder, mix, seconds, port)
    c = Client(port)
    time.sleep(1.5)
    flood_seconds = max(1.0, seconds - 5.0)
    sent = 0
    batch = max(1, rate // 100)
    t0 = time.monotonic()
    k = 0
    while time.monotonic() - t0 < flood_seconds:
        for _ in range(batch):
            c.send(osc("/bus/monitor/stem/drums/gain", float(-(k % 60) / 10.0)))
            k += 1
            sent += 1
        next_t = t0 + sent / rate
        delay = next_t - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    took = time.monotonic() - t0
    time.sleep(0.5)
    st = c.status()
    out, _ = proc.communicate(timeout=seconds + 120)
    session = read_session(os.path.join(folder, "take"))
    applied = int(st.get("osc_messages", 0)) - 1          # the status query itself
    return {"kind": "flooded", "session": session, "sent": sent, "rate_sent": sent / took, "applied": applied,
            "dropped_queue": int(st.get("osc_dropped", 0)), "lost_before_server": sent - applied - int(st.get("osc_dropped", 0)),
            "output": out[-2000:]}


def row(run: dict) -> list[str]:
    c = run["session"]["counters"]
    xruns = c["input_overflows"] + c["output_underflows"]
    return [run["kind"], str(c["deadline_misses"]), str(xruns), f"{c['callback_ms_median']:.3f}",
            f"{c['callback_ms_p99']:.3f}"]


def interleaved_runs(prefix: str, pairs: int, quiet, flooded) -> list[dict]:
    """``pairs`` rounds of a quiet run then a flooded one, each on a fresh JACK server (4 playback ports) in a
    folder of its own: ``quiet(jack, folder, mix)`` and ``flooded(jack, folder, mix)`` return the run."""
    runs = []
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        mix = write_mix(tmp)
        for p in range(pairs):
            for kind, run_one in (("quiet", quiet), ("flooded", flooded)):
                folder = os.path.join(tmp, f"{kind}{p}")
                os.makedirs(folder)
                jack = Jack(folder, playback=4, tag=f"{kind}{p}")
                try:
                    runs.append(run_one(jack, folder, mix))
                finally:
                    jack.stop()
                print(f"{kind} run {p + 1}: done", file=sys.stderr, flush=True)
    return runs


def report_runs(runs: list[dict], command: str, first_column: str, latency_what: str) -> dict:
    """The machine, the command, the audio side of every run as a table and the quiet runs' control-to-audio
    latency; returns the machine's facts."""
    info = machine()
    print(f"machine: {info['cpus']} CPUs, {info['cpu_model']}, {info['memory_gb']} GB; {info['jackd']}")
    print(f"command: {command}\n")
    print(f"| {first_column} | deadline misses | xruns | callback median ms | callback p99 ms |")
    print("|---|---|---|---|---|")
    for run in runs:
        print("| " + " | ".join(row(run)) + " |")
    print()
    lat = [v for r in runs if r["kind"] == "quiet" for v in r["latencies_ms"]]
    if lat:
        print(f"{latency_what} -> first changed sample of the first bus), {len(lat)} events: "
              f"min {min(lat):.1f} ms, median {statistics.median(lat):.1f} ms, max {max(lat):.1f} ms "
              f"(block {1000 * 256 / RATE:.1f} ms; the mixer then ramps over 10 ms)")
    return info


def save_runs(path: str | None, info: dict, runs: list[dict]) -> None:
    if path:
        with open(path, "w") as fh:
            json.dump({"machine": info, "runs": [{k: v for k, v in r.items() if k != "output"} for r in runs]},
                      fh, indent=2, default=float)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--rate", type=int, default=2000)
    ap.add_argument("--pairs", type=int, default=2)
    ap.add_argument("--json")
    args = ap.parse_args()
    runs = interleaved_runs("bench_osc_", args.pairs,
                            lambda jack, folder, mix: quiet_run(jack, folder, mix, args.seconds),
                            lambda jack, folder, mix: flooded_run(jack, folder, mix, args.seconds, args.rate))
    info = report_runs(runs, "stemstream live --rig configs/rigs/bench_live.yaml --input-file mix.wav --loop --output "
                             f"system --route monitor:3-4 --no-ui --seconds {args.seconds:g} --record take --osc PORT",
                       "run", "control-to-audio latency (message sent")
    for r in runs:
        if r["kind"] == "quiet" and "rate_hz" in r["meters"]:
            m = r["meters"]
            print(f"meters at 25 Hz: {m['count']} in 10 s = {m['rate_hz']:.2f} Hz; interval median "
                  f"{m['interval_ms_median']:.1f} ms, p99 {m['interval_ms_p99']:.1f} ms, max {m['interval_ms_max']:.1f} ms, "
                  f"std {m['jitter_ms_std']:.2f} ms")
    for r in runs:
        if r["kind"] == "flooded":
            print(f"flood: sent {r['sent']} at {r['rate_sent']:.0f}/s; applied {r['applied']}, dropped in the queue "
                  f"{r['dropped_queue']}, lost before the server {r['lost_before_server']}")
    save_runs(args.json, info, runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
