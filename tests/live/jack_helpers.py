"""A real JACK server (dummy backend: no sound card, paced in real time) for the live tests:
``bridge.live.jackserver.JackServer``, with a private name, stopped by its own PID. Without ``jackd``
on the machine the tests that need it skip with the reason (``make install`` installs it, so they run
in CI)."""
from __future__ import annotations

import shutil

import pytest

from bridge.live.jackserver import JackServer

__all__ = ["JACKD", "JackServer", "jack_server", "needs_jackd"]

JACKD = shutil.which("jackd")
needs_jackd = pytest.mark.skipif(JACKD is None, reason="jackd is not installed (make install installs jackd2)")


@pytest.fixture
def jack_server(tmp_path):
    """A JACK dummy server at 44100 Hz, 256-frame periods, stopped after the test."""
    if JACKD is None:
        pytest.skip("jackd is not installed (make install installs jackd2)")
    with JackServer(log_dir=str(tmp_path), prefix="stemstream_test") as server:
        yield server
