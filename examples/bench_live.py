"""Live benchmark (issue 14's performance goal): `stemstream live` through a JACK dummy server.

    python examples/bench_live.py [--seconds 60] [--runs 1] [--feed file|jack] [--ui] [--realtime] [--json OUT]

It prints numbers (Markdown tables, for BENCHMARKS.md); it is not a test and asserts nothing.

Needs: the project installed (`make install`), which also installs `jackd` and the jack_* tools
(the Debian package jackd2) and PortAudio. No sound card: the JACK dummy backend paces the audio in
real time. The script starts its own server, `jackd --no-realtime -d dummy -r 44100 -p 256 -C 2 -P 4`,
under a private name (JACK_DEFAULT_SERVER, so it never touches another server), and stops it by its
PID at the end, after every client it started.

Two measurements, each run `--runs` times:

1. Performance (`--seconds`, default 60): `stemstream live --rig configs/rigs/bench_live.yaml` (the demo
   model, window 1 s, hop 0.25 s, look-ahead 0.25 s, 44.1 kHz, 256-frame blocks, 4 stems, buses main
   and monitor routed to outputs 1-2 and 3-4, a Reverb on `other`), recording everything. The audio
   comes from the bundled demo song (its stems summed), looped:
     --feed file (default): the live process plays the file itself (`--input-file mix.wav --loop`), as a
        karaoke night from a song file does; its stream is output-only;
     --feed jack: the live process reads the device input (a duplex stream, as with a microphone) and a
        small JACK client started by this script (`--play-into-jack`) plays the song into it; that
        client's CPU is part of the load.
   Reported from session.json: deadline misses, input overflows and output underflows (xruns as
   PortAudio saw them; its JACK host API flags each JACK xrun as both), the callback's duration
   (median, p99), the worker's real-time factor, dropped recording blocks; from jackd's log, which
   client was late at each xrun; and the CPU each process used over the run (from /proc), with what
   the rest of the machine used meanwhile.
2. Latency (8 s): the plain demo model (`--config/--checkpoint`, same window, hop and look-ahead,
   nothing engaged: the first bus is the input, delayed) on the device input. jack_metro clicks into
   PortAudio:in_0 and PortAudio:out_0 is wired to PortAudio:in_1 (system:capture_* unplugged), so
   channel 1 of the recorded input.wav is channel 0 one round trip later, without recirculating. The
   lag found by cross-correlation around the first click is compared with session.json's
   latency_frames + device_buffer_latency_frames (PortAudio's own input + output latency).

`--ui` runs the performance run with the terminal mixer (its own process, at nice 10) under a
pseudo-terminal instead of `--no-ui`, for comparison. `--realtime` starts jackd in realtime mode
(SCHED_FIFO audio threads; needs the rights to: root, or a user in an audio group with rtprio limits)
instead of `--no-realtime`, to tell scheduling delays from work that does not fit.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import pty
import re
import shlex
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, REPO)
from bridge.live.jackserver import JackServer  # noqa: E402
RIG = "configs/rigs/bench_live.yaml"
DEMO_CONFIG = "streamer/assets/demo/demo_bs_roformer_64x2.yaml"
DEMO_CHECKPOINT = "streamer/assets/demo/demo_bs_roformer_64x2.ckpt"
ENGINE = ["--window", "1", "--hop", "0.25", "--lookahead", "0.25"]
RATE = 44100
PERIOD = 256
LATENCY_SECONDS = 8.0
LIVE = [sys.executable, "-m", "bridge.cli", "live"]


# ---------------------------------------------------------------------------------------------- JACK
class Jack(JackServer):
    """The benchmark's JACK dummy server (bridge.live.jackserver), its log in the run's folder; children
    started with ``env`` find this repository's code."""

    def __init__(self, folder: str, playback: int, tag: str, realtime: bool = False):
        super().__init__(rate=RATE, period=PERIOD, capture=2, playback=playback, log_dir=folder, realtime=realtime,
                         prefix="stemstream_bench", log_name=f"jackd_{tag}.log")
        self.env["PYTHONPATH"] = REPO

    def wait_ports(self, prefix: str, proc: subprocess.Popen | None = None, timeout: float = 120) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"the process ended ({proc.returncode}) before {prefix}* ports appeared")
            found = [p for p in self.ports() if p.startswith(prefix)]
            if found:
                return found
            time.sleep(0.1)
        raise RuntimeError(f"no {prefix}* ports within {timeout} s")


def stop_process(proc: subprocess.Popen | None) -> None:
    """Stop a process this script started (SIGTERM, then SIGKILL), by its own PID."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


# ---------------------------------------------------------------------------------------------- CPU
def _stat(pid: int) -> tuple[str, float, int] | None:
    """(name, user + system CPU seconds, nice) of a process, or None once it is gone."""
    try:
        text = open(f"/proc/{pid}/stat").read()
    except OSError:
        return None
    name, fields = text[text.find("(") + 1:text.rfind(")")], text.rsplit(")", 1)[1].split()
    return name, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), int(fields[16])


def _children(pid: int) -> list[int]:
    kids = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                kids += [int(k) for k in fh.read().split()]
    except OSError:
        pass
    return kids


def _machine_times() -> tuple[int, int, int]:
    """(busy, steal, total) jiffies of all CPUs, from /proc/stat."""
    v = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    idle = v[3] + v[4]
    steal = v[7] if len(v) > 7 else 0
    total = sum(v[:8])
    return total - idle - steal, steal, total


class CpuMeter:
    """CPU used between ``start`` and the last ``sample`` by every process: the named ones and the live
    process's children by name, the others grouped by program name. A process born after ``start``
    counts with all its CPU; one that was born and ended between two samples is missed (it shows in
    "unaccounted", with the kernel's own work)."""

    def __init__(self, named: dict[str, int], live_pid: int):
        self.named, self.live_pid = dict(named), live_pid
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.labels: dict[int, str] = {}
        self.ours: set[int] = set()
        self.t0 = self.t1 = time.monotonic()
        self.m0 = self.m1 = _machine_times()

    @staticmethod
    def _command(pid: int) -> str:
        try:
            return open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            return ""

    def _label(self, pid: int, nice: int) -> str:
        if "resource_tracker" in self._command(pid):
            return "live: resource tracker"
        return "live: mixer UI process (nice 10)" if nice > 0 else "live: inference worker process"

    def sample(self, first: bool = False) -> None:
        ours = {p: label for label, p in self.named.items()}
        stack = list(_children(self.live_pid))
        while stack:
            kid = stack.pop()
            ours.setdefault(kid, None)
            stack += _children(kid)
        self.ours |= set(ours)
        for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
            st = _stat(pid)
            if st is None:
                continue
            if pid not in self.labels:
                if pid in ours:
                    self.labels[pid] = ours[pid] or self._label(pid, st[2])
                else:   # another program: its command line, shortened (a kernel thread: its name)
                    cmd = " ".join(self._command(pid).replace(REPO + os.sep, "").replace("|", "/").split())
                    self.labels[pid] = (cmd[:70] + "..." if len(cmd) > 70 else cmd) or f"[{st[0]}]"
                self.first[pid] = st[1] if first else 0.0
            self.last[pid] = st[1]
        self.t1, self.m1 = time.monotonic(), _machine_times()

    def start(self) -> None:
        self.first.clear()
        self.last.clear()
        self.labels.clear()
        self.t0, self.m0 = time.monotonic(), _machine_times()
        self.sample(first=True)

    def result(self) -> dict:
        wall = max(1e-9, self.t1 - self.t0)
        out: dict = {"seconds": round(wall, 1), "processes": {}, "others": {}}
        for pid, label in self.labels.items():
            used = 100.0 * (self.last[pid] - self.first[pid]) / wall
            if pid in self.ours:
                key = label if label not in out["processes"] else f"{label} [{pid}]"
                out["processes"][key] = round(used, 1)
            elif used > 0:
                out["others"][label] = out["others"].get(label, 0.0) + used
        out["others"] = {k: round(v, 1) for k, v in sorted(out["others"].items(), key=lambda kv: -kv[1])}
        busy, steal, total = (b - a for a, b in zip(self.m0, self.m1))
        if total > 0:   # /proc/stat counts every CPU: in % of one core, like the processes
            cores = os.cpu_count() or 1
            out["machine_busy"] = round(100.0 * cores * busy / total, 1)
            out["other_processes"] = round(sum(out["others"].values()), 1)
            out["unaccounted"] = round(out["machine_busy"] - sum(out["processes"].values())
                                       - out["other_processes"], 1)
            out["steal"] = round(100.0 * cores * steal / total, 1)
        return out


# ---------------------------------------------------------------------------------------------- runs
def shown(argv: list[str]) -> str:
    """A command line as a user would type it (paths relative to the repository, temporary ones shortened)."""
    words = ["stemstream", "live"] + argv[len(LIVE):] if argv[:len(LIVE)] == LIVE else argv
    tmp = tempfile.gettempdir()
    return " ".join(shlex.quote(w.replace(REPO + os.sep, "")) if not w.startswith(tmp)
                    else "$TMP/" + os.path.basename(w) for w in words)


def run_live(jack: Jack, argv: list[str], seconds: float, ui: bool = False, wire=None) -> dict:
    """Run ``argv`` (a `stemstream live` command) to its end. Once its stream runs (its PortAudio ports
    exist), ``wire(jack, proc)`` may connect ports and returns the processes it started (stopped here);
    the CPU of the live process tree, jackd and those is measured from then on."""
    text = bytearray()
    if ui:
        import fcntl
        import termios

        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
        env = dict(jack.env, TERM="xterm-256color")
        proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=REPO,
                                start_new_session=True)
        os.close(slave)
        source = master
    else:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                env=jack.env, cwd=REPO)
        source = proc.stdout.fileno()

    def drain():
        while True:
            try:
                chunk = os.read(source, 65536)
            except OSError:
                return
            if not chunk:
                return
            text.extend(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    helpers: dict[str, subprocess.Popen] = {}
    meter = None
    try:
        jack.wait_ports("PortAudio:out", proc=proc)
        if wire is not None:
            helpers = wire(jack, proc) or {}
        named = {"jackd (dummy driver)": jack.proc.pid, "live: audio process (callback, recorder)": proc.pid,
                 "this script (harness)": os.getpid()}
        named.update({f"{name} (harness)": p.pid for name, p in helpers.items()})
        meter = CpuMeter(named, proc.pid)
        time.sleep(1.0)            # past the start-up of the stream and of the helpers
        meter.start()
        deadline = time.monotonic() + seconds + 120
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
            if proc.poll() is None:
                meter.sample()
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.wait(30)
    finally:
        for p in helpers.values():
            stop_process(p)
        stop_process(proc)
        reader.join(5)
        if ui:
            os.close(source)
    return {"returncode": proc.returncode, "output": text.decode(errors="replace"),
            "cpu": meter.result() if meter else None}


def read_session(folder: str) -> dict:
    with open(os.path.join(folder, "session.json")) as fh:
        return json.load(fh)


def write_mix(folder: str) -> str:
    """The bundled demo song (its stems summed) as a float WAV at 44.1 kHz."""
    import soundfile as sf

    from streamer.assets import DEMO_SONG, DEMO_STEMS
    from streamer.audio import load_stems

    mix = load_stems(DEMO_SONG, list(DEMO_STEMS), RATE, 2).sum(axis=0)
    path = os.path.join(folder, "mix.wav")
    sf.write(path, mix.T, RATE, subtype="FLOAT")
    return path


def performance_run(jack: Jack, folder: str, mix: str, args, k: int) -> dict:
    take = os.path.join(folder, f"perf{k}")
    argv = LIVE + ["--rig", RIG]
    argv += ["--input-file", mix, "--loop"] if args.feed == "file" else ["--input", "system"]
    argv += ["--output", "system", "--route", "monitor:3-4", "--seconds", f"{args.seconds:g}", "--record", take]
    argv += [] if args.ui else ["--no-ui"]

    def feed(jack: Jack, proc):
        if args.feed != "jack":
            return {}
        before = set(jack.ports())
        feeder = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--play-into-jack", mix],
                                  env=jack.env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        outs: list[str] = []
        while len(outs) < 2 and time.monotonic() < deadline:
            outs = sorted(p for p in set(jack.ports()) - before if ":out_" in p)
            time.sleep(0.1)
        if len(outs) < 2:
            stop_process(feeder)
            raise RuntimeError("the feeder's JACK ports did not appear")
        for i, port in enumerate(outs[:2]):
            jack.disconnect(port, f"system:playback_{i + 1}")
            jack.disconnect(f"system:capture_{i + 1}", f"PortAudio:in_{i}")
            jack.connect(port, f"PortAudio:in_{i}")
        return {"feeder (plays the song into PortAudio:in_0/1)": feeder}

    run = run_live(jack, argv, args.seconds, ui=args.ui, wire=feed)
    run["argv"] = argv
    if run["returncode"] != 0 or not os.path.exists(os.path.join(take, "session.json")):
        raise SystemExit(f"the performance run failed ({run['returncode']}):\n{run['output'][-3000:]}")
    run["session"] = read_session(take)
    shutil.rmtree(take, ignore_errors=True)    # a minute of 7 stereo float files: about 150 MB
    return run


def echo_lag(x: np.ndarray, max_lag: int, width: int = 2000) -> dict:
    """Where channel 1 of ``x`` repeats channel 0: the cross-correlation peak around channel 0's first
    click, and how exactly the delayed channel 0 matches channel 1 over the whole take."""
    ch0, ch1 = x[:, 0].astype(np.float64), x[:, 1].astype(np.float64)
    loud = np.flatnonzero(np.abs(ch0) > 1e-3)
    if not loud.size:
        raise RuntimeError("no click in channel 0 of input.wav")
    t0 = int(loud[0])
    start = max(0, t0 - 200)
    ref = ch0[start:start + width]
    seg = ch1[start:start + max_lag + width]
    lag = int(np.argmax(np.correlate(seg, ref, mode="valid")))
    n = len(ch0) - lag
    return {"first_click_frame": t0, "lag_frames": lag, "echo_in_take": t0 + lag + width < len(ch0),
            "max_abs_difference": float(np.abs(ch1[lag:] - ch0[:n]).max()),
            "click_peak": float(np.abs(ref).max())}


def latency_run(jack: Jack, folder: str, k: int) -> dict:
    import soundfile as sf

    take = os.path.join(folder, f"latency{k}")
    argv = LIVE + ["--config", DEMO_CONFIG, "--checkpoint", DEMO_CHECKPOINT, *ENGINE, "--input", "system",
                   "--output", "system", "--seconds", f"{LATENCY_SECONDS:g}", "--record", take, "--no-ui"]

    def loop_back(jack: Jack, proc):
        jack.wait_ports("PortAudio:in", proc=proc)
        time.sleep(0.5)
        jack.disconnect("system:capture_1", "PortAudio:in_0")
        jack.disconnect("system:capture_2", "PortAudio:in_1")
        jack.connect("PortAudio:out_0", "PortAudio:in_1")
        name = f"click{k}"
        metro = subprocess.Popen(["jack_metro", "-b", "60", "-D", "2", "-n", name], env=jack.env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port = jack.wait_ports(f"{name}:", timeout=15)[0]
        jack.connect(port, "PortAudio:in_0")
        return {"jack_metro": metro}

    run = run_live(jack, argv, LATENCY_SECONDS, wire=loop_back)
    run["argv"] = argv
    if run["returncode"] != 0 or not os.path.exists(os.path.join(take, "session.json")):
        raise SystemExit(f"the latency run failed ({run['returncode']}):\n{run['output'][-3000:]}")
    s = run["session"] = read_session(take)
    x = sf.read(os.path.join(take, "input.wav"), dtype="float32")[0]
    echo = echo_lag(x, max_lag=int(0.95 * RATE))
    expected = s["latency_frames"] + (s["device_buffer_latency_frames"] or 0)
    echo.update(expected_frames=expected, difference_frames=echo["lag_frames"] - expected)
    run["echo"] = echo
    shutil.rmtree(take, ignore_errors=True)
    return run


# ---------------------------------------------------------------------------------------------- feeder
def play_into_jack(path: str) -> None:
    """The `--feed jack` helper: play ``path`` looped on the JACK device until SIGTERM."""
    import sounddevice as sd
    import soundfile as sf

    audio = np.ascontiguousarray(sf.read(path, dtype="float32", always_2d=True)[0])
    pos = [0]

    def callback(outdata, frames, time_info, status):
        at = pos[0]
        k = min(frames, len(audio) - at)
        outdata[:k] = audio[at:at + k]
        outdata[k:] = audio[:frames - k]
        pos[0] = (at + frames) % len(audio)

    jack_api = next(h for h in sd.query_hostapis() if h["name"].startswith("JACK"))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    with sd.OutputStream(device=jack_api["default_output_device"], samplerate=RATE, blocksize=PERIOD,
                         channels=audio.shape[1], dtype="float32", callback=callback):
        stop.wait()


# ---------------------------------------------------------------------------------------------- report
def machine() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                 platform.processor() or "?")
    mem = next((int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal")), 0)
    try:
        import torch
        torch_version = torch.__version__
    except ImportError:
        torch_version = "?"
    jackd = subprocess.run(["jackd", "--version"], capture_output=True, text=True).stdout.split("\n")[0].strip()
    return {"cpus": os.cpu_count(), "cpu_model": model, "memory_gb": round(mem / 2**20, 1),
            "kernel": platform.release(), "python": platform.python_version(), "torch": torch_version,
            "jackd": jackd}


def _summary(values: list[float], fmt: str) -> list[str]:
    cells = [fmt.format(v) for v in values]
    if len(values) > 1:
        cells += [fmt.format(min(values)), fmt.format(statistics.median(values))]
    return cells


STATUS = re.compile(r"^\s*([\d.]+) s \| .*\| underflows (\d+) \|")


def xrun_timeline(output: str) -> list[tuple[float, int]]:
    """(second, new xruns) for each status line (``--no-ui``) whose xrun count went up."""
    out, before = [], 0
    for line in output.splitlines():
        m = STATUS.match(line)
        if m:
            now = int(m.group(2))
            if now > before:
                out.append((float(m.group(1)), now - before))
            before = now
    return out


def xruns_after(output: str, seconds: float) -> int | None:
    """Xruns after the first ``seconds`` (the stream's start and the harness's wiring), from the status
    lines; None without them (the terminal mixer prints none)."""
    counts = [(float(m.group(1)), int(m.group(2))) for m in map(STATUS.match, output.splitlines()) if m]
    if not counts:
        return None
    start = max((n for t, n in counts if t <= seconds + 0.05), default=0)
    return counts[-1][1] - start


def _late(run: dict) -> str:
    late = run.get("jackd_late_clients") or {}
    return ", ".join(f"{k} x{v}" for k, v in sorted(late.items())) or "none"


def _table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def report(info: dict, perf: list[dict], lat: list[dict], args) -> str:
    m = info["machine"]
    runs = len(perf)
    head = ["", *(f"run {i + 1}" for i in range(runs))] + (["min", "median"] if runs > 1 else [])
    counters = [r["session"]["counters"] for r in perf]
    after = [xruns_after(r["output"], 2.0) for r in perf]
    feed = ("the live process plays the demo mix itself (--input-file --loop): an output-only stream, the "
            "device input unused" if args.feed == "file" else
            "a duplex stream on the device input; a second JACK client started by this script plays the demo "
            "mix into PortAudio:in_0/1")
    out = [
        f"Machine: {m['cpus']} CPUs ({m['cpu_model']}), {m['memory_gb']} GB, Linux {m['kernel']}, "
        f"Python {m['python']}, torch {m['torch']}, {m['jackd'] or 'jackd'}.",
        f"JACK: `{' '.join(w if not w.startswith('stemstream_bench') else 'NAME' for w in info['jackd'])}` "
        f"(period {1000 * PERIOD / RATE:.2f} ms).",
        "",
        f"Performance ({args.seconds:g} s per run, {'terminal mixer under a pseudo-terminal' if args.ui else '--no-ui'}"
        f"): `{shown(perf[0]['argv'])}`",
        f"Feed: {feed}.",
        "",
    ]
    s0 = perf[0]["session"]
    rows = [
        ["seconds", *_summary([r["session"]["duration_seconds"] for r in perf], "{:.1f}")],
        ["callbacks", *_summary([c["callbacks"] for c in counters], "{:.0f}")],
        ["deadline misses", *_summary([c["deadline_misses"] for c in counters], "{:.0f}")],
        ["input overflows (xruns)", *_summary([c["input_overflows"] for c in counters], "{:.0f}")],
        ["output underflows (xruns)", *_summary([c["output_underflows"] for c in counters], "{:.0f}")],
        ["xruns after the first 2 s", *(_summary(after, "{:.0f}") if None not in after else
                                        ["n/a (the mixer prints no status lines)"] * (len(head) - 1))],
        ["jackd: late clients", *[_late(r) for r in perf]] + (["", ""] if runs > 1 else []),
        ["callback median ms", *_summary([c["callback_ms_median"] for c in counters], "{:.3f}")],
        ["callback p99 ms (target < 1)", *_summary([c["callback_ms_p99"] for c in counters], "{:.3f}")],
        ["worker realtime factor", *_summary([c["realtime_factor"] for c in counters], "{:.2f}")],
        ["late results / skipped windows", *[f"{c['late_results']} / {c['skipped_windows']}" for c in counters]]
        + (["", ""] if runs > 1 else []),
        ["record dropped blocks", *_summary([c["record_dropped_blocks"] for c in counters], "{:.0f}")],
        ["reported latency", f"{s0['latency_ms']['total']:.1f} ms = {s0['latency_frames']} frames "
                             f"(+ device {s0['device_buffer_latency_frames']})"] + [""] * (len(head) - 2),
    ]
    out.append(_table(head, rows))
    out += ["", "PortAudio's JACK host API flags every JACK xrun as both an input overflow and an output "
                "underflow (even on an output-only stream), so the two rows count the same events: cycles after "
                "which jackd found a client unfinished ('late clients', from jackd's log: Triggered = the "
                "client's thread had not started the cycle, Running = it was still in it; the log covers the server's "
                "whole life, the clients' start and close included)."]
    names = sorted({k for r in perf if r["cpu"] for k in r["cpu"]["processes"]})
    if names:
        out += ["", f"CPU over the run, from /proc (% of one core; {m['cpus']} cores = {100 * m['cpus']}%):", ""]
        rows = [[n, *_summary([r["cpu"]["processes"].get(n, 0.0) for r in perf], "{:.1f}")] for n in names]
        for key, label in (("other_processes", "other processes on the machine"),
                           ("unaccounted", "unaccounted (kernel, processes shorter than 0.5 s)"),
                           ("machine_busy", "machine busy, all of it"), ("steal", "steal (hypervisor)")):
            rows.append([label, *_summary([r["cpu"].get(key, 0.0) for r in perf], "{:.1f}")])
        rows.append(["busiest other processes", *["; ".join(f"{k} {v:.1f}" for k, v in
                                                            list(r["cpu"].get("others", {}).items())[:3]) or "-"
                                                  for r in perf]] + (["", ""] if runs > 1 else []))
        out.append(_table(head, rows))
    timelines = [(i, xrun_timeline(r["output"])) for i, r in enumerate(perf)]
    timelines = [(i, t) for i, t in timelines if t]
    if timelines:
        out += ["", "When the xruns came (from the status line printed each second: second: new xruns):", ""]
        out += [f"- run {i + 1}: " + ", ".join(f"{t:.0f} s: +{n}" for t, n in tl[:30])
                + (" ..." if len(tl) > 30 else "") for i, tl in timelines]

    e = [r["echo"] for r in lat]
    s = lat[0]["session"]
    head = ["", *(f"run {i + 1}" for i in range(len(lat)))] + (["min", "median"] if len(lat) > 1 else [])
    out += ["", f"Latency ({LATENCY_SECONDS:g} s per run, nothing engaged, device input with the loop-back "
                "out_0 -> in_1 and jack_metro clicks on in_0): "
                f"`{shown(lat[0]['argv'])}`", ""]
    rows = [
        ["reported latency_frames (ms)", *[f"{r['session']['latency_frames']} ({r['session']['latency_ms']['total']:.1f})"
                                            for r in lat]] + (["", ""] if len(lat) > 1 else []),
        ["device_buffer_latency_frames", *_summary([r["session"]["device_buffer_latency_frames"] or 0 for r in lat],
                                                   "{:.0f}")],
        ["expected round trip, frames", *_summary([x["expected_frames"] for x in e], "{:.0f}")],
        ["measured round trip, frames (ms)", *[f"{x['lag_frames']} ({1000 * x['lag_frames'] / RATE:.1f})" for x in e]]
        + (["", ""] if len(lat) > 1 else []),
        ["difference, frames", *_summary([x["difference_frames"] for x in e], "{:+.0f}")],
        ["echo = input delayed (max abs diff)", *[f"{x['max_abs_difference']:.1e}" for x in e]]
        + (["", ""] if len(lat) > 1 else []),
        ["deadline misses / xruns", *[f"{r['session']['counters']['deadline_misses']} / "
                                      f"{r['session']['counters']['output_underflows']}" for r in lat]]
        + (["", ""] if len(lat) > 1 else []),
        ["jackd: late clients", *[_late(r) for r in lat]] + (["", ""] if len(lat) > 1 else []),
    ]
    out.append(_table(head, rows))
    exact = all(x["difference_frames"] == 0 for x in e)
    if not all(x["echo_in_take"] for x in e):
        out += ["", "WARNING: an echo fell outside its recording; its lag is not a measurement."]
    out += ["", "Round trip " + ("exactly" if exact else "NOT exactly") + " the reported latency plus the device's "
            "own buffering" + ("" if exact else f" (differences: {[x['difference_frames'] for x in e]} frames)") + "."]
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------- main
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the performance run (60)")
    parser.add_argument("--runs", type=int, default=1, help="repeat both runs; prints min and median (1)")
    parser.add_argument("--feed", choices=["file", "jack"], default="file",
                        help="the performance run's audio: the live process plays the file (file) or reads "
                             "the device input, fed by a JACK client (jack)")
    parser.add_argument("--ui", action="store_true",
                        help="performance run with the terminal mixer under a pseudo-terminal, not --no-ui")
    parser.add_argument("--realtime", action="store_true",
                        help="run jackd in realtime mode (SCHED_FIFO for its threads and its clients' audio "
                             "threads; needs the rights to, e.g. root or an audio group with rtprio) instead of "
                             "--no-realtime")
    parser.add_argument("--json", metavar="OUT", help="also write every number (and the commands) to OUT")
    parser.add_argument("--play-into-jack", metavar="WAV", help=argparse.SUPPRESS)   # the --feed jack helper
    args = parser.parse_args()
    if args.play_into_jack:
        play_into_jack(args.play_into_jack)
        return 0
    if args.seconds <= 0 or args.runs < 1:
        parser.error("--seconds must be > 0 and --runs >= 1")
    for tool in ("jackd", "jack_wait", "jack_lsp", "jack_connect", "jack_disconnect", "jack_metro"):
        if shutil.which(tool) is None:
            parser.error(f"{tool} not found: install JACK (`make install`, or the Debian package jackd2)")

    info = {"machine": machine(), "feed": args.feed, "ui": args.ui, "realtime": args.realtime}
    perf, lat = [], []
    with tempfile.TemporaryDirectory(prefix="bench_live_") as folder:
        mix = write_mix(folder)
        for k in range(args.runs):
            for playback, job in ((4, "perf"), (2, "latency")):
                jack = Jack(folder, playback, f"{job}{k}", realtime=args.realtime)
                try:
                    if job == "perf":
                        info["jackd"] = jack.argv
                        print(f"run {k + 1}/{args.runs}: performance, {args.seconds:g} s ...", flush=True)
                        perf.append(performance_run(jack, folder, mix, args, k))
                    else:
                        print(f"run {k + 1}/{args.runs}: latency, {LATENCY_SECONDS:g} s ...", flush=True)
                        lat.append(latency_run(jack, folder, k))
                finally:
                    jack.stop()
                (perf if job == "perf" else lat)[-1]["jackd_late_clients"] = jack.late_clients()
    text = report(info, perf, lat, args)
    print()
    print(text)
    if args.json:
        for r in perf + lat:
            r["command"] = shown(r.pop("argv"))
            r["output"] = r["output"][-4000:] if not args.ui else "(terminal mixer screen omitted)"
        with open(args.json, "w") as fh:
            json.dump({**info, "performance": perf, "latency": lat, "report": text}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
