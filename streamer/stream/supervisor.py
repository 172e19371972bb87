"""Watching the inference worker while it streams: a dead worker is noticed, recorded and restarted.

A worker can die in ways it cannot report itself: killed, out of memory, a crash in native code.
The supervisor polls the host from its own thread (never the audio side) several times per hop;
when the worker has died it records the cause (the exception's message, the exit code or the signal),
restarts it, at most ``max_restarts`` times, and counts all of it. While the worker is down, the audio
side plays the delayed input the safe way (in the residual stem, or split equally over the stems, so
the stems still sum to the input, and an unmuted bus plays the input); separation fades back in once
the new worker publishes.
"""
from __future__ import annotations

import logging
import threading

log = logging.getLogger(__name__)

DEFAULT_MAX_RESTARTS = 3


class Supervisor:
    """Restarts a crashed worker host; counts deaths and restarts and keeps the last cause."""

    def __init__(self, host, period: float, max_restarts: int = DEFAULT_MAX_RESTARTS, start_timeout: float = 120.0):
        self.host = host
        self.period = max(0.005, float(period))
        self.max_restarts = int(max_restarts)
        self.start_timeout = start_timeout
        self.deaths = 0
        self.restarts = 0
        self.given_up = False
        self.last_cause: str | None = None
        self.lock = threading.Lock()  # taken by control threads only (start/stop/restart), never the audio side
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="stemstream-supervisor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self.period):
            with self.lock:
                if self._stop.is_set() or self.given_up or not self.host.crashed():
                    continue
                self.deaths += 1
                self.last_cause = self.host.exit_cause()
                if self.restarts >= self.max_restarts:
                    self.given_up = True
                    log.error("%s; not restarting it (%d restarts already): playing the dry input", self.last_cause,
                              self.restarts)
                    self.host.stop()
                    continue
                self.restarts += 1
                log.error("%s; restarting it (restart %d of %d)", self.last_cause, self.restarts, self.max_restarts)
                try:
                    self.host.restart(self.start_timeout)
                except Exception as exc:  # noqa: BLE001 - a failed restart is another death, counted next round
                    self.last_cause = f"{self.last_cause}; restart failed: {exc}"
                    log.error("worker restart failed: %s", exc)
