"""A real JACK server (dummy backend: no sound card, paced in real time) for the live tests.

Each server gets a private name (``JACK_DEFAULT_SERVER`` selects it for PortAudio and the jack_*
tools) and is stopped by its own PID. Without ``jackd`` on the machine the tests that need it skip
with the reason (``make install`` installs it, so they run in CI).
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid

import pytest

JACKD = shutil.which("jackd")
needs_jackd = pytest.mark.skipif(JACKD is None, reason="jackd is not installed (make install installs jackd2)")


class JackServer:
    """``jackd --no-realtime -d dummy`` under a private name, at ``rate`` Hz with ``period``-frame periods."""

    def __init__(self, rate: int = 44100, period: int = 256, capture: int = 2, playback: int = 2,
                 log_dir: str | None = None):
        self.rate, self.period = rate, period
        self.name = f"stemstream_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        self.env = dict(os.environ, JACK_DEFAULT_SERVER=self.name, JACK_NO_AUDIO_RESERVATION="1",
                        JACK_NO_START_SERVER="1")
        log = os.path.join(log_dir or "/tmp", f"{self.name}.log")
        self.log_path = log
        self._log = open(log, "wb")
        self.proc = subprocess.Popen(
            [JACKD, "--no-realtime", "-n", self.name, "-d", "dummy", "-r", str(rate), "-p", str(period),
             "-C", str(capture), "-P", str(playback)],
            stdout=self._log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        self._wait_ready()

    def _wait_ready(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jackd exited with {self.proc.returncode}: {open(self.log_path).read()[-2000:]}")
            ok = subprocess.run(["jack_wait", "-c", "-s", self.name], env=self.env, capture_output=True, text=True)
            if "running" in ok.stdout and "not" not in ok.stdout:
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"jackd did not come up within {timeout} s")

    def ports(self) -> list[str]:
        out = subprocess.run(["jack_lsp"], env=self.env, capture_output=True, text=True, timeout=10)
        return [line.strip() for line in out.stdout.splitlines() if line.strip()]

    def connect(self, src: str, dst: str) -> None:
        subprocess.run(["jack_connect", src, dst], env=self.env, check=True, capture_output=True, timeout=10)

    def disconnect(self, src: str, dst: str) -> None:
        subprocess.run(["jack_disconnect", src, dst], env=self.env, capture_output=True, timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()

    def __enter__(self) -> "JackServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


@pytest.fixture
def jack_server(tmp_path):
    """A JACK dummy server at 44100 Hz, 256-frame periods, stopped after the test."""
    if JACKD is None:
        pytest.skip("jackd is not installed (make install installs jackd2)")
    with JackServer(log_dir=str(tmp_path)) as server:
        yield server
