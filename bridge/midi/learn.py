"""MIDI learn for a user interface in another thread or process: :class:`Learner` waits for the next control
moved on a :class:`~bridge.midi.surface.MidiSurface` (on a thread of its own, so the caller never waits),
then maps it to the target the user chose and writes the mapping file (``MidiSurface.learn_assign``).

Its reports, taken with :meth:`Learner.next_report`, are ``(phase, text)``: ``("waiting", "")`` (from now on
the next control moved is captured), ``("captured", "ch1 cc 7")``,
``("done", "ch1 cc 7 -> ...; saved to FILE")``, ``("timeout", ...)`` or ``("error", ...)``.
"""
from __future__ import annotations

import queue
import threading

LEARN_SECONDS = 30.0


def source_text(source: tuple) -> str:
    kind, channel, number, _value = source
    return f"ch{channel + 1} {kind}" + ("" if kind == "pitchbend" else f" {number}")


def target_text(target: dict) -> str:
    if "scene" in target:
        return f"scene {target['scene']}"
    if "stem" in target:
        return f"{target['stem']} {target['control']} on {target.get('bus', 'the selected bus')}"
    if "bus" in target:
        return f"the {target['bus']} bus {target['control']}"
    return str(target.get("address", target))


class Learner:
    """One learn: ``start()``, then ``assign(target)`` or ``cancel()``; reports through :meth:`next_report`."""

    def __init__(self, surface, seconds: float = LEARN_SECONDS):
        self.surface = surface
        self.seconds = seconds
        self.source: tuple | None = None
        self._reports: queue.SimpleQueue = queue.SimpleQueue()

    def start(self) -> "Learner":
        if self.surface is None:
            self._reports.put(("error", "no MIDI controller: start with --midi NAME or --midi-virtual"))
            return self
        event = self.surface.learn_begin()
        self._reports.put(("waiting", ""))
        threading.Thread(target=self._wait, args=(event,), name="stemstream-midi-learn", daemon=True).start()
        return self

    def _wait(self, event) -> None:
        source = self.surface.learn_wait(event, self.seconds)
        if source is None:
            self._reports.put(("timeout", f"no control moved within {self.seconds:g} s"))
            return
        self.source = source
        self._reports.put(("captured", source_text(source)))

    def assign(self, target: dict) -> None:
        if self.source is None:
            self._reports.put(("error", "nothing learned yet"))
            return
        try:
            path = self.surface.learn_assign(self.source, target)
        except Exception as exc:  # noqa: BLE001 - shown to the user; the show goes on
            self.surface.learn_cancel()
            self._reports.put(("error", f"{source_text(self.source)} -> {target_text(target)}: {exc}"))
            return
        self._reports.put(("done", f"{source_text(self.source)} -> {target_text(target)}; saved to {path} "
                                   "(the next run uses it)"))

    def cancel(self) -> None:
        if self.surface is not None:
            self.surface.learn_cancel()

    def next_report(self) -> tuple[str, str] | None:
        try:
            return self._reports.get_nowait()
        except queue.Empty:
            return None
