"""The terminal mixer in a process of its own.

Drawing a Textual screen costs about 15 ms of Python per refresh. In the audio process that time holds
the GIL the audio callback needs, and on a small machine it takes CPU from it: measured with the
demo model on 2 cores through JACK, the mixer drawn in-process gave 8 to 49 xruns in 6 s where the
same run without it gave none. So the live session runs the mixer in a child process that holds a
*mirror* of the stem mixer:

* the session's main thread (``UiProcess.pump``, every 20 ms) sends the meters, the status and the
  mixer's controls at the refresh rate, and applies the control changes the child sends;
* the child's mirror is a real :class:`~bridge.mix.mixer.StemMixer`, so every key press is validated
  by the same code (a refused setting shows in the mixer at once); each change is sent as the whole
  set of controls with a sequence number, and the parent acknowledges the last one it applied, so
  the mirror never flickers back to a stale state;
* ``q``/Ctrl-C in the mixer ends the session; the session ending (``--seconds``, SIGINT, an error)
  closes the mixer; a parent that dies leaves the child's pipe at end of file, and it exits.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import sys
import threading
import time

import numpy as np

from bridge.mix.mixer import StemMixer
from bridge.mix.state import MixerState

from .status import LiveStatus

log = logging.getLogger(__name__)

JOIN_SECONDS = 3.0
UI_NICENESS = 10     # the mixer process's CPU priority, below the audio's


def mixer_controls(mixer: StemMixer) -> MixerState:
    """Every control of every bus, as one value (:class:`bridge.mix.state.MixerState`)."""
    return MixerState.snapshot(mixer)


def apply_controls(mixer: StemMixer, controls: MixerState) -> None:
    """Set ``controls`` on ``mixer``, touching only what differs, as one change (``StemMixer.batch``)."""
    controls.apply(mixer)


class _Mirror(StemMixer):
    """The child's copy of the session's mixer: changes made here are sent to the parent."""

    def __init__(self, stems, rate, buses, conn):
        self._conn = None
        super().__init__(stems, rate, buses=buses)
        self._conn = conn
        self.sent = 0
        self._loading = False

    def _changed(self) -> None:
        super()._changed()
        if self._conn is not None and not self._loading:
            self.sent += 1
            try:
                self._conn.send(("controls", self.sent, mixer_controls(self)))
            except (OSError, EOFError, BrokenPipeError):
                pass

    def load(self, controls: list) -> None:
        """Take the parent's controls without sending them back."""
        self._loading = True
        try:
            apply_controls(self, controls)
        finally:
            self._loading = False


class _RemoteView:
    """What the mixer app reads, fed by the parent's messages."""

    def __init__(self, mirror: _Mirror, conn):
        self.mixer = mirror
        self._conn = conn
        self._status = LiveStatus()
        self._finished = False
        self.learn_state: tuple[str, str] | None = None   # MIDI learn, as the parent reports it
        self.web: tuple[str, str] | None = None   # the browser mixer's (address, QR code), for the w key
        threading.Thread(target=self._receive, name="stemstream-ui-receiver", daemon=True).start()

    def learn(self, request: tuple) -> None:
        """A MIDI learn request to the parent (``("start",)``, ``("assign", target)``, ``("cancel",)``)."""
        if request[0] == "start":
            self.learn_state = ("starting", "")
        try:
            self._conn.send(("learn", *request))
        except (OSError, EOFError, BrokenPipeError):
            self.learn_state = ("error", "the live session is gone")

    @property
    def finished(self) -> bool:
        return self._finished

    def status(self) -> LiveStatus:
        return self._status

    def _receive(self) -> None:
        try:
            while True:
                msg = self._conn.recv()
                if msg[0] == "state":
                    _, ack, meters, status, controls = msg
                    self.mixer.meters[:] = meters
                    self._status = status
                    if ack >= self.mixer.sent:   # the parent has applied every change made here
                        self.mixer.load(controls)
                elif msg[0] == "learn":
                    self.learn_state = (msg[1], msg[2])
                elif msg[0] == "finish":
                    break
        except (EOFError, OSError):
            pass
        self._finished = True


def ui_main(conn, stems: list[str], rate: int, buses: list[str], refresh_hz: float,
            web: tuple[str, str] | None = None) -> None:
    """Entry point of the mixer process (``web``: the browser mixer's address and QR code, for ``w``)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # the session (the parent) decides when to stop
    try:
        os.nice(UI_NICENESS)   # the audio, the model and the audio server come first
    except OSError:
        pass
    # multiprocessing replaces a child's stdin with /dev/null; the mixer reads its keys from the terminal
    sys.stdin = sys.__stdin__ = open(0, "r", closefd=False)
    from .ui import MixerApp

    mirror = _Mirror(stems, rate, buses, conn)
    view = _RemoteView(mirror, conn)
    view.web = web
    app = MixerApp(view, refresh_hz=refresh_hz)
    app.call_later(lambda: conn.send(("ready",)))
    result = app.run()
    try:
        conn.send(("exit", result or "finished"))
    except (OSError, EOFError, BrokenPipeError):
        pass


class UiProcess:
    """The parent's end: start the mixer process, ``pump()`` it from the main loop, ``close()`` it."""

    def __init__(self, session, refresh_hz: float = 15.0):
        self.session = session
        self.refresh_hz = float(refresh_hz)
        self._conn = None
        self._process = None
        self._ack = 0
        self._next = 0.0
        self.quit_requested = False
        self.exited = False
        self._ready = False
        self._learner = None      # MIDI learn in progress (bridge.midi.learn.Learner)

    def start(self) -> "UiProcess":
        ctx = mp.get_context("spawn")
        mixer = self.session.mixer
        self._conn, child = ctx.Pipe(duplex=True)
        self._process = ctx.Process(target=ui_main, name="stemstream-mixer",
                                    args=(child, list(mixer.stem_names), mixer.sample_rate, list(mixer.bus_names),
                                          self.refresh_hz, self._web()), daemon=True)
        self._process.start()
        child.close()
        return self

    def _web(self) -> tuple[str, str] | None:
        """The browser mixer's (address with token, QR code), if a surface of the session serves one."""
        surfaces = getattr(getattr(self.session, "surfaces", None), "items", [])
        for surface in surfaces:
            if hasattr(surface, "url") and hasattr(surface, "qr"):
                try:
                    return str(surface.url), str(surface.qr())
                except Exception as exc:  # noqa: BLE001 - the mixer runs without it
                    log.warning("browser mixer address not shown in the mixer: %s", exc)
        return None

    def wait_ready(self, timeout: float = 30.0) -> bool:
        """Wait until the mixer is drawn (or gone, or ``timeout`` seconds); control messages that come
        meanwhile are applied."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.alive and not self._ready:
            self.pump(send=False)
            time.sleep(0.01)
        return self._ready

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.is_alive() and not self.exited

    def pump(self, send: bool = True) -> None:
        """Apply the child's control changes; send it the state at the refresh rate. Never blocks long."""
        if self._conn is None:
            return
        mixer = self.session.mixer
        try:
            while self._conn.poll():
                msg = self._conn.recv()
                if msg[0] == "controls":
                    try:
                        apply_controls(mixer, msg[2])
                    except Exception as exc:  # noqa: BLE001 - validated in the child; never stop the audio
                        log.warning("mixer change refused: %s", exc)
                    self._ack = msg[1]
                elif msg[0] == "ready":
                    self._ready = True
                elif msg[0] == "learn":
                    self._learn(msg[1:])
                elif msg[0] == "exit":
                    self.exited = True
                    if msg[1] == "quit":
                        self.quit_requested = True
                        self.session.request_stop("quit")
            while self._learner is not None and (report := self._learner.next_report()) is not None:
                self._conn.send(("learn", *report))
            now = time.monotonic()
            if send and now >= self._next and not self.exited:
                self._next = now + 1.0 / self.refresh_hz
                self._conn.send(("state", self._ack, np.array(mixer.meters), self.session.status(),
                                 mixer_controls(mixer)))
        except (EOFError, OSError, BrokenPipeError):
            self.exited = True

    def _learn(self, request: tuple) -> None:
        """A MIDI learn request from the mixer, for the session's first MIDI surface."""
        from bridge.midi.learn import Learner

        if request[0] == "start":
            surfaces = [s for s in getattr(self.session, "surfaces", None).items if hasattr(s, "learn_next")] \
                if getattr(self.session, "surfaces", None) is not None else []
            if self._learner is not None:
                self._learner.cancel()
            self._learner = Learner(surfaces[0] if surfaces else None).start()
        elif self._learner is not None:
            if request[0] == "assign":
                self._learner.assign(request[1])
            else:
                self._learner.cancel()

    def close(self) -> None:
        """Close the mixer (it restores the terminal) and wait for its process."""
        if self._process is None:
            return
        try:
            self._conn.send(("finish",))
        except (OSError, EOFError, BrokenPipeError):
            pass
        self._process.join(JOIN_SECONDS)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(JOIN_SECONDS)
        self._conn.close()
        self._process = None
