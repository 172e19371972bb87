"""Running ``stemstream live`` against a test JACK server, and reading what it recorded."""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import time

import numpy as np
import soundfile as sf

from conftest import REPO

STEMSTREAM = [sys.executable, "-m", "bridge.cli"]


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
