"""``MidiSurface``: a MIDI controller as a control surface of the model (:mod:`bridge.control.model`).

``MidiSurface(model, mapping, port="nanoKONTROL2")`` (or ``virtual="stemstream"``; ``api=``), then
``start()`` and ``close()``; ``label`` and ``counters()`` for the live session's status. Four threads of
its own, none on the audio path (the MIDI backend's own thread, JACK's process thread on JACK, only queues
what arrives in RtMidi's bounded queue and never waits for Python; see :mod:`bridge.midi.ports`):

* the **read** thread polls the input every 2 ms, stamps each message with the time it arrived and
  appends it to a bounded queue; a full queue drops it and counts it (``dropped``), so a flood of
  thousands of messages a second costs the audio nothing and cannot grow memory;
* the **apply** thread takes them in order through the :class:`~bridge.midi.interpret.Interpreter`, which
  acts through ``model.set`` (the mixer picks a change up at its next block and ramps);
* the **feedback** thread is woken by the model's change listener (any change, from any surface, a
  scene's fade, Python) and sends each mapped control's value to the controller's output (LEDs of
  buttons, motor faders, LED rings): only what differs from what the controller shows, at most
  ``feedback_hz`` times a second per control (a burst of changes is coalesced to its last value);
* the **watch** thread lists the ports about once a second: a controller unplugged mid-show leaves the
  show running (``label`` and ``connected`` say it is gone) and is reopened when it comes back
  (``reconnects``), its controls then shown again.

MIDI learn: :meth:`learn_next` waits for the next control moved on the controller (it is not applied),
:meth:`learn_assign` maps it to a target and writes the mapping file atomically (the next run reads it).
"""
from __future__ import annotations

import collections
import logging
import os
import threading
import time
from typing import Any

from . import ports
from .interpret import Interpreter
from .learn import target_text
from .mapping import Mapping, MappingError, entry_data, save_mapping, with_entry

log = logging.getLogger(__name__)

QUEUE_SIZE = 1024          # messages waiting for the apply thread; more are dropped and counted
FEEDBACK_HZ = 30.0         # at most this many feedback messages a second per control
POLL_SECONDS = 1.0         # how often the watch thread lists the ports
READ_SECONDS = 0.002       # how often the read thread polls the input
READ_BATCH = 256           # messages taken from the backend at one poll at most
COALESCE_SECONDS = 0.005   # the feedback thread looks at the state at most this often


class MidiSurface:
    """One MIDI controller (an input port, its output if it has one) or a virtual port, driving ``model``
    by ``mapping``; see the module docstring. ``name`` is the short name its counters are shown under;
    ``learn_path``: where MIDI learn writes the mapping (default: the mapping's own file)."""

    def __init__(self, model, mapping: Mapping, *, port: str | None = None, virtual: str | None = None,
                 api: str | None = None, audio_on_jack: bool = False, name: str = "midi",
                 queue_size: int = QUEUE_SIZE, feedback_hz: float = FEEDBACK_HZ, poll_seconds: float = POLL_SECONDS,
                 learn_path: str | None = None):
        if (port is None) == (virtual is None):
            raise ValueError("give port= or virtual=")
        self.model = model
        self.name = name
        self.api = ports.choose_api(api, audio_on_jack)
        self.interp = Interpreter(model, mapping)
        self.learn_path = learn_path or mapping.path
        self.query = port
        self.virtual = virtual
        self.queue_size = int(queue_size)
        self.feedback_interval = 1.0 / float(feedback_hz)
        self.poll_seconds = float(poll_seconds)
        self._queue: collections.deque = collections.deque()
        self._wake = threading.Event()
        self._changed = threading.Event()
        self._stop = threading.Event()
        self._out_lock = threading.Lock()
        self._in_lock = threading.Lock()   # the read thread's use of midi_in against closing it
        self._threads: list[threading.Thread] = []
        self.counts = {"dropped": 0, "feedback_sent": 0, "feedback_errors": 0, "reconnects": 0, "unplugged": 0}
        self.midi_in = self.midi_out = None
        self.connected = False
        self.in_name: str | None = None
        self.out_name: str | None = None
        self._lister = None
        self._shown: dict[tuple, tuple] = self.interp.shown
        self._sent_at: dict[tuple, float] = {}
        self._learning: threading.Event | None = None
        self._learned: tuple | None = None
        if port is not None:               # the port must exist now: an error before the show starts
            self._lister = ports.PortLister(self.api)
            try:
                self.in_name = ports.find_port(port, self._lister.inputs(), "input", self.api)
                self.out_name = ports.matching_output(self.in_name, port, self._lister.outputs())
            except BaseException:
                self._lister.close()
                raise

    # ------------------------------------------------------------------ protocol of a live session's surface
    @property
    def label(self) -> str:
        if self.virtual is not None:
            return f"midi: virtual port {self.virtual} (in+out)"
        if not self.connected and self._threads and not self._stop.is_set():
            return f"midi: {self.in_name} UNPLUGGED (the show goes on; reopened when it is back)"
        return f"midi: {self.in_name} ({'in+out' if self.out_name else 'in'})"

    def counters(self) -> dict[str, int]:
        out = dict(self.interp.counters)
        out.update(self.counts)
        out["queued"] = len(self._queue)
        out["connected"] = int(self.connected)
        return out

    def start(self) -> "MidiSurface":
        try:
            if self.virtual is not None:
                self.midi_in, self.midi_out = ports.open_virtual(self.api, self.virtual)
                self.connected = True
            else:
                self._open()
        except BaseException:
            self.close()                   # nothing left open by a surface that did not start
            raise
        self.model.add_listener(self._on_change)
        self._changed.set()                # show the whole state once
        loops = [(self._read_loop, "read"), (self._apply_loop, "apply"), (self._feedback_loop, "feedback")]
        if self.virtual is None:
            loops.append((self._watch_loop, "watch"))
        for target, what in loops:
            t = threading.Thread(target=target, name=f"stemstream-{self.name}-{what}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def close(self) -> None:
        """Stop the threads and close the ports (idempotent)."""
        self._stop.set()
        self._wake.set()
        self._changed.set()
        self.model.remove_listener(self._on_change)
        for t in self._threads:
            t.join(2.0)
        self._close_ports()
        if self._lister is not None:
            self._lister.close()
            self._lister = None
        self.connected = False

    def __enter__(self) -> "MidiSurface":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ ports
    def _open(self) -> None:
        midi_in = ports.open_input(self.api, self.in_name)
        with self._in_lock:
            self.midi_in = midi_in
        if self.out_name is not None:
            try:
                self.midi_out = ports.open_output(self.api, self.out_name)
            except Exception as exc:  # noqa: BLE001 - no feedback is no reason to stop the controller
                log.warning("MIDI output %s: %s; no feedback", self.out_name, exc)
                self.midi_out = None
        self.connected = True

    def _close_ports(self) -> None:
        with self._in_lock, self._out_lock:
            midi_in, midi_out, self.midi_in, self.midi_out = self.midi_in, self.midi_out, None, None
        ports.close(midi_in)
        ports.close(midi_out)

    def _watch_loop(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                present = self.in_name in self._lister.inputs()
            except Exception:  # noqa: BLE001 - the backend went away for a moment: try again later
                continue
            if self.connected and not present:
                self.connected = False
                self.counts["unplugged"] += 1
                self._close_ports()
                log.warning("MIDI input %s is gone; the show goes on, waiting for it to return", self.in_name)
            elif not self.connected and present:
                try:
                    if self.out_name is not None and self.out_name not in self._lister.outputs():
                        time.sleep(0.1)   # its output may be registered a moment after its input
                    self._open()
                except Exception as exc:  # noqa: BLE001 - half back: the next poll tries again
                    self._close_ports()
                    log.warning("MIDI input %s is back but cannot be opened yet: %s", self.in_name, exc)
                    continue
                self.counts["reconnects"] += 1
                self._shown.clear()   # a controller that was away shows nothing of ours: show it all
                self._changed.set()

    # ------------------------------------------------------------------ input
    def _read_loop(self) -> None:
        while not self._stop.is_set():
            with self._in_lock:
                got = ports.read(self.midi_in, READ_BATCH) if self.midi_in is not None else []
            if got:
                self._take(got, time.monotonic())
            self._stop.wait(READ_SECONDS)

    def _take(self, got: list, now: float) -> None:
        """Queue (bounded) what one poll read, each stamped with its arrival (the last one's is ``now``; the
        backend's delta times give the others'), and wake the apply thread."""
        stamps = [now] * len(got)
        for i in range(len(got) - 1, 0, -1):
            stamps[i - 1] = stamps[i] - max(0.0, float(got[i][1]))
        q = self._queue
        for (data, _delta), t in zip(got, stamps):
            if len(q) >= self.queue_size:
                self.counts["dropped"] += 1
            else:
                q.append((t, data))
        if not self._wake.is_set():
            self._wake.set()

    def _apply_loop(self) -> None:
        q = self._queue
        while not self._stop.is_set():
            self._wake.wait(0.1)
            self._wake.clear()
            while q and not self._stop.is_set():
                t, data = q.popleft()
                if self._learning is not None and self._capture(data):
                    continue
                try:
                    self.interp.handle(data, t)
                except Exception as exc:  # noqa: BLE001 - the surface must survive anything a message causes
                    self.interp.counters["errors"] += 1
                    log.warning("MIDI message %s: %s", data, exc)

    # ------------------------------------------------------------------ feedback
    def _on_change(self) -> None:
        self._changed.set()

    def _feedback_loop(self) -> None:
        due: float | None = None
        while not self._stop.is_set():
            wait = None if due is None else max(0.0, due - time.monotonic())
            self._changed.wait(wait if wait is not None else 0.5)
            if self._stop.is_set():
                break
            self._changed.clear()
            due = self._send_feedback()
            self._stop.wait(COALESCE_SECONDS)

    def _send_feedback(self) -> float | None:
        """Send what differs from what the controller shows; returns when to look again for what the
        per-control limit held back (None: nothing held back)."""
        if self.midi_out is None:
            return None
        now = time.monotonic()
        due = None
        for key, msgs in self.interp.feedback().items():
            if self._shown.get(key) == msgs:
                continue
            ready = self._sent_at.get(key, -1e9) + self.feedback_interval
            if ready > now:
                due = ready if due is None else min(due, ready)
                continue
            with self._out_lock:
                out = self.midi_out
                if out is None:
                    return None
                try:
                    for m in msgs:
                        out.send_message(list(m))
                except Exception:  # noqa: BLE001 - a port going away: the watch thread sees it
                    self.counts["feedback_errors"] += 1
                    return None
            self.counts["feedback_sent"] += len(msgs)
            self._shown[key] = msgs
            self._sent_at[key] = now
        return due

    # ------------------------------------------------------------------ learn
    def _capture(self, data) -> bool:
        verdict, msg = self.interp.classify(data)
        if verdict != "ok" or msg[0] == "other":
            return False
        kind, channel, number, value = msg
        if kind == "note" and value == 0:
            return True                    # the release of the note being learned
        learning = self._learning
        if self._learned is None and learning is not None:
            self._learned = (kind, channel, number, value)
            learning.set()
        return True                        # what the control sends while learning is not applied

    def learn_next(self, timeout: float = 10.0) -> tuple | None:
        """Wait up to ``timeout`` s for the next control moved on the controller: ``(kind, channel, number,
        value)`` (``kind`` "cc", "note" or "pitchbend"; ``channel`` 0-15), or None. Until
        :meth:`learn_assign` or :meth:`learn_cancel`, the controller's messages are not applied."""
        return self.learn_wait(self.learn_begin(), timeout)

    def learn_begin(self) -> threading.Event:
        """Start learning now (what the controller sends from here on is captured); then :meth:`learn_wait`."""
        event = threading.Event()
        self._learned = None
        self._learning = event
        return event

    def learn_wait(self, event: threading.Event, timeout: float) -> tuple | None:
        """What :meth:`learn_begin` captured within ``timeout`` s (None: nothing, or cancelled)."""
        event.wait(timeout)
        learned = self._learned if self._learning is event else None
        if learned is None and self._learning is event:
            self._learning = None
        return learned

    def learn_cancel(self) -> None:
        """Stop learning (a waiting :meth:`learn_next` returns None); the controller acts again."""
        event, self._learning = self._learning, None
        self._learned = None
        if event is not None:
            event.set()

    def learn_assign(self, source: tuple, target: dict[str, Any], path: str | None = None) -> str:
        """Map ``source`` (from :meth:`learn_next`) to ``target`` (mapping-file keys: ``{"stem": "vocals",
        "control": "mute"}``, ``{"scene": "karaoke"}``, ``{"bus": "monitor", "control": "fader"}``,
        ``{"address": "/engine/bypass"}``), use it from now on and write the mapping file atomically
        (``path``, else ``learn_path``); returns the path written."""
        kind, channel, number, _value = source
        data = entry_data(kind, number, channel, target)
        mapping = with_entry(self.interp.mapping, data)
        path = path or self.learn_path
        if not path:
            raise ValueError("no file to write the learned mapping to")
        mapping.path = path
        old = self.interp.mapping
        self.interp.bind(mapping)    # raises before anything is written when the rig has no such target
        if (kind, channel, number) not in self.interp.table:
            self.interp.bind(old)
            raise MappingError(f"the rig has no {target_text(target)}")
        save_mapping(mapping, path)
        self.learn_path = path
        self._learning = None
        self._learned = None
        self._shown.clear()
        self._changed.set()
        return path


def default_user_map() -> str:
    """Where MIDI learn keeps a learned mapping when no ``--midi-map`` was given (read by the next run)."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "stemstream", "midi-map.yaml")


__all__ = ["MidiSurface", "QUEUE_SIZE", "FEEDBACK_HZ", "default_user_map"]
