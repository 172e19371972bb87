"""A JACK server with the dummy backend: an audio device without a sound card, paced in real time.

For trying `stemstream live` on a machine without audio hardware, for the live tests and for the
benchmarks: ``with JackServer(rate=44100, period=256) as jack:`` starts ``jackd -d dummy`` under a
private name (``jack.env`` holds ``JACK_DEFAULT_SERVER``, which PortAudio and the jack_* tools follow),
waits until it answers, and stops it by its own PID. Needs ``jackd`` (the Debian package jackd2,
which ``make install`` installs).
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
import uuid


class JackServer:
    """``jackd -d dummy`` at ``rate`` Hz with ``period``-frame periods, ``capture``/``playback`` ports,
    under a private name (``prefix`` + a unique part); its log is ``log_dir/<log_name or name>.log``.
    ``realtime`` runs it with real-time scheduling (needs the rights to), else ``--no-realtime``."""

    def __init__(self, rate: int = 44100, period: int = 256, capture: int = 2, playback: int = 2,
                 log_dir: str | None = None, realtime: bool = False, prefix: str = "stemstream",
                 log_name: str | None = None, timeout: float = 15.0):
        jackd = shutil.which("jackd")
        if jackd is None:
            raise RuntimeError("jackd is not installed (the Debian package jackd2; make install installs it)")
        self.rate, self.period = rate, period
        self.name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        self.env = dict(os.environ, JACK_DEFAULT_SERVER=self.name, JACK_NO_AUDIO_RESERVATION="1",
                        JACK_NO_START_SERVER="1")
        self.argv = [jackd, "--realtime" if realtime else "--no-realtime", "-n", self.name, "-d", "dummy",
                     "-r", str(rate), "-p", str(period), "-C", str(capture), "-P", str(playback)]
        self.log_path = os.path.join(log_dir or "/tmp", log_name or f"{self.name}.log")
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.argv, stdout=self._log, stderr=subprocess.STDOUT, env=self.env,
                                     start_new_session=True)
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._log.close()
                with open(self.log_path, errors="replace") as fh:
                    raise RuntimeError(f"jackd exited with {self.proc.returncode}: {fh.read()[-2000:]}")
            ok = subprocess.run(["jack_wait", "-c", "-s", self.name], env=self.env, capture_output=True, text=True)
            if "running" in ok.stdout and "not" not in ok.stdout:
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"jackd did not come up within {timeout:g} s")

    def ports(self) -> list[str]:
        out = subprocess.run(["jack_lsp"], env=self.env, capture_output=True, text=True, timeout=10)
        return [line.strip() for line in out.stdout.splitlines() if line.strip()]

    def connect(self, src: str, dst: str) -> None:
        subprocess.run(["jack_connect", src, dst], env=self.env, check=True, capture_output=True, timeout=10)

    def disconnect(self, src: str, dst: str) -> None:
        subprocess.run(["jack_disconnect", src, dst], env=self.env, capture_output=True, timeout=10)

    def late_clients(self) -> dict[str, int]:
        """What jackd logged about its xruns: ``{"<client> (<its state>)": count}``. A client still
        ``Triggered`` had not started the cycle (not scheduled in time); ``Running`` was still in it."""
        found: dict[str, int] = {}
        with open(self.log_path, errors="replace") as fh:
            for line in fh:
                m = re.search(r"XRun: client = (\S+) was not finished, state = (\w+)", line)
                if m:
                    key = f"{m.group(1)} ({m.group(2)})"
                    found[key] = found.get(key, 0) + 1
        return found

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 5 s); harmless when it has already ended."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if not self._log.closed:
            self._log.close()

    def __enter__(self) -> "JackServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
