"""Raw MIDI messages -> changes of the control model, by a mapping (:mod:`bridge.midi.mapping`); and the
values a controller should show (feedback).

:class:`Interpreter` binds a mapping to a model (stem, bus and scene numbers to the rig's names), then
takes one raw message at a time (``handle(data, t)``, on the MIDI surface's apply thread, never on the
audio path) and acts through ``model.set``:

* **absolute** controls (7-bit CC, 14-bit pairs, pitch bend) set the value at their position in the
  control's range, with **pickup** (soft takeover): after the value changed from elsewhere (another
  surface, a scene, the other bank of faders), the control only takes over once it reaches or crosses the
  value, so nothing jumps; until then its messages are counted as ``pickup_waiting``;
* **relative** encoders move the value by ``step`` per tick (no pickup needed);
* **buttons** flip a flag on press (``toggle``), hold it while pressed (``momentary``) or both (``auto``:
  a press held longer than ``HOLD_SECONDS`` is released on release); scene and bus-select buttons act on
  press.

What it ignores is counted by kind: ``unmapped`` (a channel message no entry takes), ``other_channel`` (on
a channel the mapping does not use), ``system`` (SysEx, clock, start/stop and other system messages),
``malformed`` (running status or stray data bytes, wrong lengths), ``errors`` (the model refused).
:meth:`feedback` says, per mapped control, the message(s) that show the current value.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .mapping import DEFAULT_GAIN_RANGE, HOLD_SECONDS, Entry, Mapping

CC, NOTE_ON, NOTE_OFF, PITCHBEND = 0xB0, 0x90, 0x80, 0xE0
LENGTHS = {0x80: 3, 0x90: 3, 0xA0: 3, 0xB0: 3, 0xC0: 2, 0xD0: 2, 0xE0: 3}
PICKUP_TOLERANCE = 1.0 / 127.0 + 1e-9     # within one 7-bit step: taken over at once
COUNTERS = ("messages", "applied", "ignored", "unmapped", "other_channel", "system", "malformed", "pickup_waiting",
            "errors")
FLAGS = ("mute", "solo", "bypass")


@dataclass
class Bound:
    """One entry bound to the rig: names resolved (``stem``/``bus`` None where the address has none or the
    bus is the selected one), plus its live state (pickup, 14-bit MSB, a held button)."""

    entry: Entry
    stem: str | None
    bus: str | None            # a fixed bus, or None: the selected one
    scene: str | None = None
    select: Any = None         # bus_select: an index, "next" or "previous"
    engaged_address: str | None = None   # pickup: the address this control has taken over (None: not engaged)
    last_set: float | None = None        # pickup: the normalised value it set last
    last_seen: float | None = None       # pickup: where the control was last (normalised)
    msb: int = 0
    pressed_at: float | None = None
    before: Any = None

    @property
    def key(self) -> tuple[str, int, int]:
        return self.entry.kind, self.entry.channel, self.entry.number


def _index_or_name(ref, names: list[str], what: str, where: str) -> str | None:
    """A 1-based number (None beyond the rig's) or a name (an error when the rig has none of it)."""
    if isinstance(ref, int):
        return names[ref - 1] if ref <= len(names) else None
    if ref not in names:
        from .mapping import MappingError

        raise MappingError(f"{where}: no {what} named {ref!r}; {what}s: {', '.join(names) or 'none'}")
    return ref


class Interpreter:
    """A mapping bound to ``model`` (a :class:`bridge.control.model.ControlModel`); see the module docstring."""

    def __init__(self, model, mapping: Mapping):
        self.model = model
        self.mapping = mapping
        self.selected = 0                    # index of the bus that "bus: selected" controls
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.shown: dict[tuple, tuple] = {}  # what the controller shows, by control (feedback skips those)
        self.bind(mapping)

    # ------------------------------------------------------------------ binding
    def bind(self, mapping: Mapping) -> None:
        """(Re)bind ``mapping`` to the model's stems, buses and scenes."""
        stems = list(self.model.mixer.stem_names)
        buses = list(self.model.mixer.bus_names)
        scenes = list(self.model.scenes)
        where = mapping.path or "midi mapping"
        table: dict[tuple, tuple[Bound, str]] = {}
        controls: list[Bound] = []
        for e in mapping.entries:
            stem = bus = scene = select = None
            if e.stem is not None:
                stem = _index_or_name(e.stem, stems, "stem", f"{where}: {e.source}")
                if stem is None:
                    continue
            if e.address is not None and "{bus}" in e.address and e.bus != "selected":
                bus = _index_or_name(e.bus, buses, "bus", f"{where}: {e.source}")
                if bus is None:
                    continue
            if e.scene is not None:
                scene = _index_or_name(e.scene, scenes, "scene", f"{where}: {e.source}")
                if scene is None:
                    continue
            if e.bus_select is not None:
                if e.bus_select in ("next", "previous"):
                    select = e.bus_select
                else:
                    name = _index_or_name(e.bus_select, buses, "bus", f"{where}: {e.source}")
                    if name is None:
                        continue
                    select = buses.index(name)
            b = Bound(e, stem, bus, scene, select)
            controls.append(b)
            table[b.key] = (b, "msb" if e.mode == "absolute14" else "")
            if e.mode == "absolute14":
                table[("cc", e.channel, e.lsb)] = (b, "lsb")
        self.mapping = mapping
        self.table = table
        self.controls = controls
        self.channels = {e.channel for e in mapping.entries}
        self.selected = min(self.selected, len(buses) - 1)

    # ------------------------------------------------------------------ names and values
    @property
    def selected_bus(self) -> str:
        return self.model.mixer.bus_names[self.selected]

    def address(self, b: Bound) -> str | None:
        """The model address ``b`` acts on now (the selected bus filled in); None for scene/bus select."""
        a = b.entry.address
        if a is None:
            return None
        if "{bus}" in a:
            a = a.replace("{bus}", b.bus or self.selected_bus)
        if "{stem}" in a:
            if b.stem is None:
                return None
            a = a.replace("{stem}", b.stem)
        return a

    @staticmethod
    def span(b: Bound, address: str) -> tuple[float, float]:
        if b.entry.range is not None:
            return b.entry.range
        return DEFAULT_GAIN_RANGE if address.endswith("/gain") else (0.0, 1.0)

    def normalised(self, b: Bound, address: str) -> float:
        lo, hi = self.span(b, address)
        value = float(self.model.get(address))
        if math.isinf(value):
            value = lo if value < 0 else hi
        return min(1.0, max(0.0, (value - lo) / (hi - lo)))

    def _set_normalised(self, b: Bound, address: str, x: float) -> None:
        lo, hi = self.span(b, address)
        self.model.set(address, lo + min(1.0, max(0.0, x)) * (hi - lo))
        b.last_set = self.normalised(b, address)

    @staticmethod
    def is_flag(address: str) -> bool:
        return address.rsplit("/", 1)[-1] in FLAGS

    # ------------------------------------------------------------------ messages
    def classify(self, data) -> tuple[str, tuple | None]:
        """``("ok", (kind, channel, number, value))`` for a channel message a mapping can name, else the
        counter it goes to."""
        if not data:
            return "malformed", None
        status = data[0]
        if status < 0x80:
            return "malformed", None          # running status or a stray data byte
        if status >= 0xF0:
            return "system", None             # SysEx, clock, start/stop, active sensing ...
        kind = status & 0xF0
        if len(data) != LENGTHS[kind] or any(not 0 <= d < 0x80 for d in data[1:]):
            return "malformed", None
        channel = status & 0x0F
        if kind == CC:
            return "ok", ("cc", channel, data[1], data[2])
        if kind == NOTE_ON:
            return "ok", ("note", channel, data[1], data[2])
        if kind == NOTE_OFF:
            return "ok", ("note", channel, data[1], 0)
        if kind == PITCHBEND:
            return "ok", ("pitchbend", channel, 0, data[1] | (data[2] << 7))
        return "ok", ("other", channel, data[1], 0)

    def handle(self, data, t: float) -> str:
        """Act on one raw message received at ``t`` (monotonic seconds); returns the counter it went to."""
        c = self.counters
        c["messages"] += 1
        verdict, msg = self.classify(data)
        if verdict == "ok":
            kind, channel, number, value = msg
            hit = self.table.get((kind, channel, number))
            if hit is None:
                verdict = "unmapped" if channel in self.channels else "other_channel"
            else:
                b = hit[0]
                try:
                    verdict = self._act(b, hit[1], value, t)
                except Exception:  # noqa: BLE001 - a refused value (the model's ControlError) is counted
                    verdict = "errors"
                if verdict == "applied" and b.entry.mode == "absolute" and kind != "note":
                    self.shown[b.key] = (tuple(data),)   # the control shows where it is: no echo back
        if verdict != "applied" and verdict != "":
            c[verdict] += 1
            if verdict in ("unmapped", "other_channel", "system", "malformed"):
                c["ignored"] += 1
        elif verdict == "applied":
            c["applied"] += 1
        return verdict or "applied"

    def _act(self, b: Bound, role: str, value: int, t: float) -> str:
        e = b.entry
        if e.mode in ("toggle", "momentary", "auto") or e.scene is not None or e.bus_select is not None:
            pressed = value >= 64 if e.kind == "cc" else value > 0
            return self._button(b, pressed, t)
        address = self.address(b)
        if address is None:
            return "unmapped"
        if e.mode in ("relative-twos", "relative-offset"):
            ticks = (value - 128 if value >= 64 else value) if e.mode == "relative-twos" else value - 64
            if ticks == 0:
                return ""
            lo, hi = self.span(b, address)
            step = (e.step / abs(hi - lo)) if e.step is not None else 0.01
            self._set_normalised(b, address, self.normalised(b, address) + ticks * step)
            return "applied"
        if e.mode == "absolute14":
            if role == "msb":
                b.msb, raw = value, value << 7       # an MSB sets the LSB to 0 (MIDI 1.0)
            else:
                raw = (b.msb << 7) | value
            x = raw / 16383.0
        elif e.kind == "pitchbend":
            x = value / 16383.0
        else:
            x = value / 127.0
        return self._absolute(b, address, x)

    def _absolute(self, b: Bound, address: str, x: float) -> str:
        if not b.entry.pickup:
            self._set_normalised(b, address, x)
            return "applied"
        v = self.normalised(b, address)
        if b.engaged_address == address and b.last_set is not None and abs(v - b.last_set) > 1e-6:
            b.engaged_address = None          # changed from elsewhere since: pick it up again
        if b.engaged_address != address:
            crossed = b.last_seen is not None and (b.last_seen - v) * (x - v) <= 0
            if abs(x - v) <= PICKUP_TOLERANCE or crossed:
                b.engaged_address = address
        b.last_seen = x
        if b.engaged_address != address:
            return "pickup_waiting"
        self._set_normalised(b, address, x)
        return "applied"

    def _button(self, b: Bound, pressed: bool, t: float) -> str:
        e = b.entry
        if e.scene is not None or e.bus_select is not None:
            if not pressed:
                return ""
            if e.scene is not None:
                self.model.set(f"/scene/{b.scene}", float(e.fade))
            else:
                n = len(self.model.mixer.bus_names)
                self.selected = ((self.selected + (1 if b.select == "next" else -1)) % n
                                 if b.select in ("next", "previous") else b.select)
            return "applied"
        address = self.address(b)
        if address is None:
            return "unmapped"
        if not self.is_flag(address):         # a trigger (/engine/reset, /scene/...): on press
            if pressed:
                self.model.set(address) if address.endswith("/reset") else self.model.set(address, float(e.fade))
                return "applied"
            return ""
        if pressed:
            if b.pressed_at is not None:      # a second press without a release: taken as a new press
                b.pressed_at = None
            b.before = int(self.model.get(address))
            b.pressed_at = t
            self.model.set(address, 1 - b.before)
            return "applied"
        if b.pressed_at is None:
            return ""
        held = t - b.pressed_at
        b.pressed_at = None
        if e.mode == "momentary" or (e.mode == "auto" and held > HOLD_SECONDS):
            self.model.set(address, b.before)
            return "applied"
        return ""

    # ------------------------------------------------------------------ feedback
    def shown_by(self, b: Bound) -> tuple[tuple[int, ...], ...] | None:
        """The message(s) that show ``b``'s current value on the controller (None: nothing to show)."""
        e = b.entry
        if not e.feedback:
            return None
        if e.bus_select is not None:
            if b.select in ("next", "previous"):
                return None
            on = b.select == self.selected
            return ((NOTE_ON | e.channel if e.kind == "note" else CC | e.channel, e.number, 127 if on else 0),)
        address = self.address(b)
        if address is None or e.scene is not None or address.endswith("/reset") or address.startswith("/scene/"):
            return None
        try:
            if self.is_flag(address):
                on = bool(self.model.get(address))
                status = NOTE_ON if e.kind == "note" else CC
                return ((status | e.channel, e.number, 127 if on else 0),)
            x = self.normalised(b, address)
        except Exception:  # noqa: BLE001 - a control that went away shows nothing
            return None
        if e.kind == "pitchbend":
            raw = round(x * 16383)
            return ((PITCHBEND | e.channel, raw & 0x7F, raw >> 7),)
        if e.mode == "absolute14":
            raw = round(x * 16383)
            return ((CC | e.channel, e.number, raw >> 7), (CC | e.channel, e.lsb, raw & 0x7F))
        return ((CC | e.channel, e.number, round(x * 127)),)

    def feedback(self) -> dict[tuple, tuple]:
        """Per mapped control (its key), the message(s) showing its current value."""
        out = {}
        for b in self.controls:
            shown = self.shown_by(b)
            if shown is not None:
                out[b.key] = shown
        return out


__all__ = ["Interpreter", "Bound", "COUNTERS"]
