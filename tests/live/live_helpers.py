"""Running ``stemstream live`` against a test JACK server (a four-stem tiny model and a noise song to play,
a pseudo-terminal for its terminal mixer), talking to it over OSC, and reading what it recorded."""
from __future__ import annotations

import fcntl
import json
import os
import pathlib
import pty
import socket
import struct
import subprocess
import sys
import termios
import threading
import time

import numpy as np
import soundfile as sf

from conftest import FOUR_STEMS, REPO, write_yaml

STEMSTREAM = [sys.executable, "-m", "bridge.cli"]


RATE = 44100


def tiny4_and_song(folder, seconds: float) -> tuple[pathlib.Path, pathlib.Path, np.ndarray]:
    """What the live tests play: the tiny four-stem config (``--checkpoint random``) and ``seconds`` of noise
    (stereo, 0.2 standard deviation, seed 0) written as float ``song.wav``; (config, song path, song)."""
    folder = pathlib.Path(folder)
    cfg = write_yaml(folder / "tiny4.yaml", stems=FOUR_STEMS, target=None, extra_model={"num_stems": 4})
    song = (0.2 * np.random.default_rng(0).standard_normal((int(seconds * RATE), 2))).astype(np.float32)
    sf.write(folder / "song.wav", song, RATE, subtype="FLOAT")
    return cfg, folder / "song.wav", song


class Terminal:
    """A pseudo-terminal of ``rows`` x ``cols`` for a live session's terminal mixer: give ``slave`` to the
    process as its stdin, stdout and stderr, then :meth:`start` (our copy of ``slave`` is closed and what the
    process draws is collected in ``screen``), :meth:`send` keys, and :meth:`close` at the end."""

    def __init__(self, rows: int = 40, cols: int = 160):
        self.master, self.slave = pty.openpty()
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.screen = bytearray()
        self._reader = threading.Thread(target=self._drain, daemon=True)

    def _drain(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:
                return
            if not chunk:
                return
            self.screen.extend(chunk)

    def start(self) -> None:
        os.close(self.slave)
        self._reader.start()

    def send(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def text(self) -> str:
        return self.screen.decode(errors="replace")

    def close(self) -> None:
        self._reader.join(5)
        os.close(self.master)


def free_port(kind=socket.SOCK_DGRAM) -> int:
    """A free port on 127.0.0.1 (UDP by default, as OSC uses; ``socket.SOCK_STREAM`` for TCP)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def osc_send(sock, port: int, address: str, *args) -> None:
    """One OSC message from ``sock`` to 127.0.0.1:``port``."""
    from pythonosc.osc_message_builder import OscMessageBuilder

    b = OscMessageBuilder(address=address)
    for a in args:
        b.add_arg(a)
    sock.sendto(b.build().dgram, ("127.0.0.1", port))


def osc_status(sock, port: int, timeout: float = 5.0) -> dict:
    """``/engine/status`` of the session at ``port``, as {address: value} (``sock``: bound, with a short
    receive timeout)."""
    from pythonosc.osc_packet import OscPacket

    osc_send(sock, port, "/engine/status")
    got, deadline = {}, time.monotonic() + timeout
    while "/engine/status/seconds" not in got and time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
        except socket.timeout:
            continue
        got.update({m.message.address: m.message.params[0] for m in OscPacket(data).messages})
    return got


def start_live(server, args: list[str], cwd=None) -> subprocess.Popen:
    """``stemstream live ARGS`` on ``server`` (its own process group, so a test can signal it)."""
    env = dict(server.env, PYTHONPATH=str(REPO))
    return subprocess.Popen(STEMSTREAM + ["live", *args], env=env, cwd=cwd or REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def run_live(server, args: list[str], timeout: float = 120.0) -> subprocess.CompletedProcess:
    proc = start_live(server, args)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"stemstream live did not end within {timeout} s:\n{out}\n{err}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def wait_for_ports(server, prefix: str, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> list[str]:
    """The server's ports starting with ``prefix`` once there are some (``proc``: fail at once if it ends)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"the process ended with {proc.returncode} before its ports appeared:\n{out}\n{err}")
        ports = [p for p in server.ports() if p.startswith(prefix)]
        if ports:
            return ports
        time.sleep(0.1)
    raise AssertionError(f"no {prefix}* ports appeared within {timeout} s: {server.ports()}")


def read_take(folder) -> dict:
    """A recording: session.json plus every file as (frames, channels) float32."""
    folder = pathlib.Path(folder)
    session = json.loads((folder / "session.json").read_text())
    take = {"session": session, "input": sf.read(folder / "input.wav", dtype="float32")[0]}
    take["buses"] = {b: sf.read(folder / f"{b}.wav", dtype="float32")[0] for b in session["buses"]}
    take["stems"] = {s: sf.read(folder / "stems" / f"{s}.wav", dtype="float32")[0] for s in session["stems"]}
    return take


def delayed(x: np.ndarray, latency: int) -> np.ndarray:
    """``x`` delayed by ``latency`` frames, same length."""
    out = np.zeros_like(x)
    out[latency:] = x[:len(x) - latency]
    return out


def processes_named(fragment: str) -> list[int]:
    """PIDs whose command line contains ``fragment`` (to check nothing was left behind)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if fragment in cmd:
            found.append(int(pid))
    return found


def read_wav_strictly(path, closed: bool = True) -> np.ndarray:
    """A WAV file as a strict reader takes it: (frames, channels) float32 from what the header says, and
    nothing the header does not say. Every size is checked: the RIFF size (equal to the file's for a
    closed file; for one whose writer was killed, at most the file's), each chunk inside it, a fmt chunk
    (PCM or IEEE float) before the data, a data size that is whole frames and inside the file, a fact
    chunk (if any) that counts the same frames. (Python's ``wave`` module is as strict about sizes but
    reads PCM only, not the 32-bit float these files hold.)"""
    import struct

    raw = pathlib.Path(path).read_bytes()
    assert raw[:4] == b"RIFF" and raw[8:12] == b"WAVE", f"{path}: not RIFF/WAVE"
    riff = struct.unpack("<I", raw[4:8])[0]
    if closed:
        assert riff + 8 == len(raw), f"{path}: RIFF size {riff} + 8 != file size {len(raw)}"
    else:
        assert riff + 8 <= len(raw), f"{path}: RIFF size {riff} + 8 > file size {len(raw)}"
    pos, fmt, fact, data = 12, None, None, None
    while pos + 8 <= riff + 8:
        cid, n = raw[pos:pos + 4], struct.unpack("<I", raw[pos + 4:pos + 8])[0]
        assert pos + 8 + n <= riff + 8, f"{path}: chunk {cid!r} runs past the RIFF size"
        body = raw[pos + 8:pos + 8 + n]
        if cid == b"fmt ":
            tag, channels, rate, byte_rate, align, bits = struct.unpack("<HHIIHH", body[:16])
            assert tag in (1, 3) and align == channels * bits // 8 and byte_rate == rate * align, (path, tag)
            fmt = (tag, channels, rate, align, bits)
        elif cid == b"fact":
            fact = struct.unpack("<I", body[:4])[0]
        elif cid == b"data":
            assert fmt is not None, f"{path}: data before fmt"
            assert n % fmt[3] == 0, f"{path}: data size {n} is not whole frames"
            data = body
        pos += 8 + n + (n & 1)
    assert data is not None, f"{path}: no data chunk"
    tag, channels, rate, align, bits = fmt
    frames = len(data) // align
    if fact is not None:
        assert fact == frames, f"{path}: fact says {fact} frames, data holds {frames}"
    assert tag == 3 and bits == 32, f"{path}: expected 32-bit float"
    return np.frombuffer(data, "<f4").reshape(frames, channels)
