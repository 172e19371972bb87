"""Stop signals and best-effort printing for a live session.

Signals (:class:`StopSignals`): while the model loads, a stop signal raises :class:`Stopped` (a
``KeyboardInterrupt``) at once; during the set-up and the warm-up it is acted on between steps (a
worker process being spawned is not cut short), and the run ends leaving nothing behind; from the
moment the stream opens it only asks the session to end, which then ends as for ``q``: summary,
finished files, ``session.json`` with the reason. A terminal that is gone (SIGHUP)
cannot take the summary: printing is best effort (:func:`say`), the files and ``session.json`` are not.
"""
from __future__ import annotations

import os
import signal
import sys
import threading

# every signal whose default action would end the process (and that is not a fault of the process itself
# nor a timer it set), with the words the summary and session.json give as the reason
_SIGNAL_WORDS = {
    "SIGINT": "interrupted", "SIGTERM": "terminated (SIGTERM)",
    "SIGHUP": "hangup (SIGHUP: the terminal or the connection closed)", "SIGQUIT": "quit (SIGQUIT)",
    "SIGUSR1": "signal SIGUSR1", "SIGUSR2": "signal SIGUSR2", "SIGXCPU": "CPU time limit (SIGXCPU)",
    "SIGPWR": "power failure (SIGPWR)",
}
STOP_SIGNALS = tuple(getattr(signal, name) for name in _SIGNAL_WORDS if hasattr(signal, name))


def signal_words(num: int) -> str:
    """The stop reason for signal ``num``."""
    try:
        name = signal.Signals(num).name
    except ValueError:
        return f"signal {num}"
    return _SIGNAL_WORDS.get(name, f"signal {name}")


class Stopped(KeyboardInterrupt):
    """A stop signal arrived before the stream ran (``reason``: its words)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class StopSignals:
    """``with StopSignals() as signals:`` catches :data:`STOP_SIGNALS` (main thread only; elsewhere it does
    nothing), in one of three modes:

    * at first (``raising``): the first signal raises :class:`Stopped` where the main thread is; for work
      that may be cut anywhere (loading a model, as Ctrl-C always could);
    * after :meth:`hold`: a signal is only noted, and :meth:`check`, called where stopping is safe (between
      the steps of the warm-up), raises :class:`Stopped`; nothing half-started (a worker process being
      spawned, files being created) is cut short;
    * once ``on_stop`` is set (the stream runs): ``on_stop(reason)`` is called.

    A signal after the first never interrupts the clean-up. SIGXFSZ is ignored meanwhile, so a file-size
    limit is a write error the recorder reports, not the end of the process."""

    def __init__(self):
        self.on_stop = None
        self.reason: str | None = None
        self.raising = True
        self._old: dict = {}

    def hold(self) -> None:
        """From here a signal is only noted; :meth:`check` acts on it."""
        self.raising = False

    def check(self) -> None:
        """Raise :class:`Stopped` if a stop signal arrived."""
        if self.reason is not None:
            raise Stopped(self.reason)

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._old[sig] = signal.signal(sig, self._handle)
            if hasattr(signal, "SIGXFSZ"):
                self._old[signal.SIGXFSZ] = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        return self

    def _handle(self, num, frame) -> None:
        reason = signal_words(num)
        first = self.reason is None
        self.reason = self.reason or reason
        if self.on_stop is not None:
            self.on_stop(reason)
        elif self.raising and first:
            self.raising = False
            raise Stopped(reason)

    def __exit__(self, *exc) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._old.clear()


def say(text: str, file=None) -> bool:
    """Print ``text`` (stdout by default); a terminal or pipe that is gone (a closed ssh session) is not an
    error: the stream is pointed at /dev/null, so that nothing fails later either. Returns whether it got out."""
    file = file or sys.stdout
    try:
        print(text, file=file, flush=True)
        return True
    except (OSError, ValueError):
        try:
            fd = file.fileno()
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, fd)
            os.close(null)
        except (OSError, ValueError, AttributeError):
            pass
        return False
