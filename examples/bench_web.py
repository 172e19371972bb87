"""Browser mixer benchmark (issue 30's numbers): `stemstream live --web` through a JACK dummy server.

    python examples/bench_web.py [--seconds 45] [--json OUT]

It prints numbers (Markdown, for BENCHMARKS.md); it is not a test and asserts nothing. It needs what
examples/bench_live.py needs (`make install`: jackd2, PortAudio) and reuses its JACK server and helpers.

One run of `stemstream live --rig configs/rigs/bench_live.yaml` (the demo model at the balanced preset:
window 1 s, hop 0.25 s, look-ahead 0.25 s; 256-frame blocks; buses main and monitor; a Reverb on `other`)
playing the demo song in a loop, recording, with `--web PORT` and `--osc PORT` (OSC only to read the audio
position and the counters). "Pages" are WebSocket clients speaking the page's protocol (what a phone's
page sends and receives; the browsers' own rendering is on the phones, not on this machine). Phases:

1. no page open (10 s): the live process's CPU (all its threads; the inference worker process apart);
2. one page: five mute/unmute events of the drums 1 s apart, each a WebSocket message sent right after an
   `/engine/status` query read the audio position (control-to-audio latency: from that position to the
   first changed sample of the recorded first bus), then the meter frames it receives in 5 s;
3. five pages (10 s): the meter frames each receives and the live process's CPU.

Deadline misses and xruns are read at the start and end of every phase, so any caused by the pages show.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_live import REPO, Jack, _stat, machine, read_session, write_mix  # noqa: E402
from bench_osc import Client, control_latencies, free_port  # noqa: E402

RATE = 44100
RIG = os.path.join(REPO, "configs", "rigs", "bench_live.yaml")
TOKEN = "bench-web-token"


def free_tcp_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    st = _stat(pid)
    return st[1] if st else float("nan")


def thread_cpu_seconds(pid: int, name: str = "stemstream-web") -> float:
    """CPU seconds of the process's thread named ``name`` (the browser mixer's server names its thread)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            if open(f"/proc/{pid}/task/{tid}/comm").read().strip() == name:
                fields = open(f"/proc/{pid}/task/{tid}/stat").read().rsplit(")", 1)[1].split()
                return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except OSError:
            continue
    return float("nan")


def counters(c: Client) -> dict:
    st = c.status()
    return {"seconds": float(st.get("seconds", float("nan"))), "misses": int(st.get("deadline_misses", 0)),
            "xruns": int(st.get("xruns", 0))}


async def page(url: str, seconds: float, stamps: list[float]) -> None:
    """A page's WebSocket for ``seconds``: the arrival times of its meter frames."""
    import aiohttp

    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(url) as ws:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                try:
                    msg = await ws.receive(timeout=max(0.01, end - time.monotonic()))
                except asyncio.TimeoutError:
                    break
                if msg.type != 1:       # TEXT
                    break
                if msg.data.startswith('{"m"'):
                    stamps.append(time.monotonic())


def rate(stamps: list[float]) -> dict:
    if len(stamps) < 3:
        return {"count": len(stamps)}
    gaps = np.diff(stamps) * 1000.0
    return {"count": len(stamps), "rate_hz": (len(stamps) - 1) / (stamps[-1] - stamps[0]),
            "interval_ms_median": float(np.median(gaps)), "interval_ms_p99": float(np.percentile(gaps, 99)),
            "interval_ms_max": float(gaps.max())}


async def latency_events(url: str, c: Client) -> list[tuple[float, bool]]:
    import aiohttp

    events = []
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(url) as ws:
            for k in range(5):
                before = (await loop.run_in_executor(None, c.status))["seconds"]
                await ws.send_str(json.dumps({"a": "/stem/drums/mute", "v": k % 2 == 0}))
                events.append((before, k % 2 == 0))
                await asyncio.sleep(1.0)
    return events


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=45.0)
    ap.add_argument("--json")
    args = ap.parse_args()
    result: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench_web_") as tmp:
        mix = write_mix(tmp)
        jack = Jack(tmp, playback=4, tag="web")
        try:
            osc_port, web_port = free_port(), free_tcp_port()
            url = f"ws://127.0.0.1:{web_port}/ws?t={TOKEN}"
            argv = [sys.executable, "-m", "bridge.cli", "live", "--rig", RIG, "--input-file", mix, "--loop",
                    "--output", "system", "--route", "monitor:3-4", "--no-ui", "--seconds", str(args.seconds),
                    "--record", os.path.join(tmp, "take"), "--osc", str(osc_port), "--web", str(web_port),
                    "--web-token", TOKEN]
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=jack.env, cwd=REPO,
                                    text=True)
            jack.wait_ports("PortAudio:out", proc=proc)
            c = Client(osc_port)
            time.sleep(3.0)
            phases = {}

            def phase(name: str, run) -> None:
                a, cpu0, t0 = counters(c), cpu_seconds(proc.pid), time.monotonic()
                web0 = thread_cpu_seconds(proc.pid)
                out = run()
                b, cpu1, t1 = counters(c), cpu_seconds(proc.pid), time.monotonic()
                web1 = thread_cpu_seconds(proc.pid)
                phases[name] = {"cpu_percent": 100.0 * (cpu1 - cpu0) / (t1 - t0),
                                "server_thread_cpu_percent": 100.0 * (web1 - web0) / (t1 - t0),
                                "misses": b["misses"] - a["misses"],
                                "xruns": b["xruns"] - a["xruns"], "seconds": t1 - t0, **(out or {})}

            phase("no page", lambda: time.sleep(10.0))

            def one_page():
                events = asyncio.run(latency_events(url, c))
                stamps: list[float] = []
                asyncio.run(page(url, 5.0, stamps))
                return {"events": events, "meters": rate(stamps)}
            phase("one page", one_page)

            def five_pages():
                stamps = [[] for _ in range(5)]

                async def go():
                    await asyncio.gather(*(page(url, 10.0, s) for s in stamps))
                asyncio.run(go())
                return {"meters": [rate(s) for s in stamps]}
            phase("five pages", five_pages)
            out, _ = proc.communicate(timeout=args.seconds + 120)
            take = os.path.join(tmp, "take")
            session = read_session(take)
            result = {"phases": phases, "latencies_ms": control_latencies(take, session, phases["one page"]["events"]),
                      "session": {k: session["counters"][k] for k in ("deadline_misses", "input_overflows",
                                                                        "output_underflows", "callback_ms_median",
                                                                        "callback_ms_p99")},
                      "surfaces": session.get("surfaces"), "output": out[-1500:]}
        finally:
            jack.stop()
    info = machine()
    load = os.getloadavg()
    print(f"machine: {info['cpus']} CPUs, {info['cpu_model']}, {info['memory_gb']} GB; {info['jackd']}; "
          f"load average at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}")
    print(f"command: stemstream live --rig configs/rigs/bench_live.yaml --input-file mix.wav --loop --output system "
          f"--route monitor:3-4 --no-ui --seconds {args.seconds:g} --record take --osc PORT --web PORT --web-token T\n")
    lat = result["latencies_ms"]
    if lat:
        print(f"control-to-audio latency (WebSocket message sent -> first changed sample of the recorded first bus), "
              f"{len(lat)} events: min {min(lat):.1f} ms, median {statistics.median(lat):.1f} ms, "
              f"max {max(lat):.1f} ms "
              f"(block {1000 * 256 / RATE:.1f} ms; the mixer then ramps over 10 ms)\n")
    print("| phase | live process CPU (% of one core) | of it, the web server's thread | deadline misses | xruns "
          "| meter frames per page |")
    print("|---|---|---|---|---|---|")
    for name, p in result["phases"].items():
        m = p.get("meters")
        if isinstance(m, dict):
            meters = f"{m.get('rate_hz', 0):.1f} Hz (interval median {m.get('interval_ms_median', 0):.0f} ms, max " \
                     f"{m.get('interval_ms_max', 0):.0f} ms)"
        elif isinstance(m, list):
            rates = [x.get("rate_hz", 0) for x in m]
            worst = max(x.get("interval_ms_max", 0) for x in m)
            meters = f"{min(rates):.1f} to {max(rates):.1f} Hz (worst interval {worst:.0f} ms)"
        else:
            meters = "-"
        print(f"| {name} | {p['cpu_percent']:.1f} | {p['server_thread_cpu_percent']:.1f} | {p['misses']} | "
              f"{p['xruns']} | {meters} |")
    s = result["session"]
    xruns = s["input_overflows"] + s["output_underflows"]
    print(f"\nwhole run: deadline misses {s['deadline_misses']}, xruns {xruns}, "
          f"callback median {s['callback_ms_median']:.3f} ms, p99 {s['callback_ms_p99']:.3f} ms")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"machine": info, **{k: v for k, v in result.items() if k != "output"}}, fh, indent=2,
                      default=float)
    return 0


if __name__ == "__main__":
    sys.exit(main())
