"""MIDI mapping files: which MIDI control (channel + CC, note or pitch bend) drives which control of the
model (:mod:`bridge.control.model`: the OSC address names), and how.

```yaml
name: Korg nanoKONTROL2 (factory scene, CC mode)
channel: 1            # MIDI channel (1-16) of every control that does not give its own
pickup: true          # soft takeover for absolute faders and knobs (default true)
feedback: true        # send every change back to the controller's output (LEDs, motor faders, rings)
controls:
  - {cc: 0-7, stem: 1-8, control: fader}                 # bus: selected (the default)
  - {cc: 16-23, stem: 1-8, bus: 2, control: fader}        # the second bus, if the rig has one
  - {cc: 32-39, stem: 1-8, control: solo}                 # buttons: tap toggles, hold is momentary
  - {cc: 48-55, stem: 1-8, control: mute}
  - {cc: 64-71, scene: 1-8}                               # the rig's scenes, in its order
  - {cc: 58, bus_select: previous}
  - {cc: 59, bus_select: next}
  - {note: 36, address: /engine/bypass, mode: toggle}     # any address of the model
  - {cc: 20, lsb: 52, address: "/stem/vocals/fx/0/mix", range: [0, 1]}   # a 14-bit pair
```

Each entry has one **source**: ``cc: N``, ``note: N`` or ``pitchbend: true`` (with ``channel:``), and one
**target**:

* ``stem: N|name`` + ``control: fader|gain|mute|solo`` (+ ``bus: selected|N|name``, default the selected
  bus, which starts as the first) -> ``/bus/<bus>/stem/<stem>/<control>``;
* ``bus: N|name`` + ``control: fader|gain|mute`` (no stem) -> the bus master;
* ``scene: N|name`` (+ ``fade: seconds``) -> recall a scene on press;
* ``bus_select: N|name|next|previous`` -> which bus ``bus: selected`` controls (a bank of faders);
* ``address: /any/model/address`` (``{stem}`` and ``{bus}`` in it are filled in): anything else.

Ranges (``cc: 0-7`` with ``stem: 1-8``, also ``note``, ``channel``, ``scene``, ``bus``) expand into one
entry per number; ranges in one entry must be as long. Stem, bus and scene numbers count from 1 in the
rig's order; a number beyond what the rig has leaves that control unmapped (one map fits any rig), a
name that is not there is an error.

``mode``: ``absolute`` (7-bit CC, the default for continuous controls; 0 = the range's bottom, 127 its
top), ``absolute14`` (a 14-bit MSB/LSB pair: ``lsb`` defaults to ``cc`` + 32; an MSB sets the LSB to 0,
as the MIDI spec says), ``relative-twos`` (encoders: 1..63 up, 127..65 down) and ``relative-offset``
(64 = no move, 65 up one, 63 down one), each tick moving ``step`` (default 1/100 of the range);
``toggle`` (each press flips), ``momentary`` (on while held) and ``auto`` (the default for buttons:
a tap toggles, a press held longer than ``HOLD_SECONDS`` is momentary, released on release). A CC is
pressed at 64 and above, a note by a note-on with a velocity above 0. Pitch bend is absolute, 14 bits.
``range: [low, high]``: the values the control spans (faders 0..1, the default; gains -60..+12 dB by
default; an effect parameter needs one). ``pickup: false`` on an entry turns soft takeover off for it.

:func:`load_mapping` reads a file through :mod:`streamer.msst.yamlsafe` (size and nesting bounded),
:func:`parse_mapping` checks data (a rig's inline ``midi:`` section), :func:`save_mapping` writes one
atomically (MIDI learn). Nothing here needs a MIDI backend.
"""
from __future__ import annotations

import math
import os
import re
import tempfile
from dataclasses import dataclass, field
from typing import Any

import yaml

from streamer.errors import SettingsError
from streamer.msst.yamlsafe import excerpt, load_yaml

HOLD_SECONDS = 0.3          # a button held longer than this is momentary in mode auto
MODES = ("absolute", "absolute14", "relative-twos", "relative-offset", "toggle", "momentary", "auto")
BUTTON_MODES = ("toggle", "momentary", "auto")
CONTINUOUS_MODES = ("absolute", "absolute14", "relative-twos", "relative-offset")
STEM_CONTROLS = ("fader", "gain", "mute", "solo")
BUS_CONTROLS = ("fader", "gain", "mute")
DEFAULT_GAIN_RANGE = (-60.0, 12.0)
ENTRY_KEYS = {"cc", "note", "pitchbend", "channel", "lsb", "stem", "bus", "control", "scene", "fade", "bus_select",
              "address", "mode", "range", "step", "pickup", "feedback"}
TOP_KEYS = {"name", "channel", "pickup", "feedback", "controls"}
MAX_ENTRIES = 4096


class MappingError(SettingsError):
    """A mapping file or section that cannot be used; the message names the file and the entry."""


@dataclass(frozen=True)
class Entry:
    """One mapped control (ranges already expanded). ``kind``: "cc", "note" or "pitchbend"; ``number``: the
    CC or note number (0 for pitch bend); ``channel`` 0-15. Exactly one target is set: ``address`` (may
    hold ``{bus}`` and ``{stem}``), ``scene`` or ``bus_select``; ``stem``/``bus`` fill the address."""

    kind: str
    number: int
    channel: int
    mode: str
    address: str | None = None
    stem: int | str | None = None
    bus: int | str | None = "selected"
    scene: int | str | None = None
    fade: float = 0.0
    bus_select: int | str | None = None
    lsb: int | None = None
    range: tuple[float, float] | None = None
    step: float | None = None
    pickup: bool = True
    feedback: bool = True

    @property
    def source(self) -> str:
        """How the mapping names the source, e.g. ``ch1 cc 7``, ``ch10 note 36``, ``ch1 pitchbend``."""
        return f"ch{self.channel + 1} {self.kind}" + ("" if self.kind == "pitchbend" else f" {self.number}")


@dataclass
class Mapping:
    """A mapping file's content: ``entries`` plus what the file said at its top, and where it came from."""

    entries: list[Entry] = field(default_factory=list)
    name: str = ""
    channel: int = 0
    pickup: bool = True
    feedback: bool = True
    path: str | None = None
    raw: dict = field(default_factory=dict)      # the data as read (learn appends to it and writes it back)


# ---------------------------------------------------------------------------------- reading
def load_mapping(path: str | os.PathLike) -> Mapping:
    """Read and check the mapping file ``path`` (see the module docstring)."""
    path = os.fspath(path)
    data = load_yaml(path, "mapping file", error=MappingError)
    mapping = parse_mapping(data, path)
    mapping.path = path
    return mapping


def parse_mapping(data: Any, where: str = "midi") -> Mapping:
    """Check mapping data (a file's content or a rig's inline ``midi:`` section)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise MappingError(f"{where}: expected a mapping with keys {', '.join(sorted(TOP_KEYS))}, got "
                           f"{type(data).__name__}")
    _keys(where, data, TOP_KEYS)
    channel = _channel(f"{where}: channel", data.get("channel", 1))
    pickup = _flag(f"{where}: pickup", data.get("pickup", True))
    feedback = _flag(f"{where}: feedback", data.get("feedback", True))
    name = data.get("name", "")
    if not isinstance(name, str) or len(name) > 200:
        raise MappingError(f"{where}: name: expected a short text, got {excerpt(name)}")
    controls = data.get("controls") or []
    if not isinstance(controls, list):
        raise MappingError(f"{where}: controls: expected a list of entries, e.g. - {{cc: 7, stem: 1, control: fader}}")
    entries: list[Entry] = []
    for i, raw in enumerate(controls):
        entries.extend(_entries(f"{where}: controls[{i}]", raw, channel, pickup, feedback))
        if len(entries) > MAX_ENTRIES:
            raise MappingError(f"{where}: more than {MAX_ENTRIES} controls")
    seen: dict[tuple, str] = {}
    for e in entries:
        for key in _keys_of(e):
            if key in seen:
                raise MappingError(f"{where}: {e.source} is mapped twice ({seen[key]} and {_target_text(e)})")
            seen[key] = _target_text(e)
    return Mapping(entries=entries, name=name, channel=channel, pickup=pickup, feedback=feedback,
                   raw=dict(data, controls=list(controls)))


def _keys_of(e: Entry) -> list[tuple]:
    """The (kind, channel, number) keys an entry listens to (two for a 14-bit pair)."""
    keys = [(e.kind, e.channel, e.number)]
    if e.mode == "absolute14":
        keys.append(("cc", e.channel, e.lsb))
    return keys


def _target_text(e: Entry) -> str:
    if e.scene is not None:
        return f"scene {e.scene}"
    if e.bus_select is not None:
        return f"bus_select {e.bus_select}"
    return e.address or "?"


def _keys(where: str, data: dict, allowed: set[str]) -> None:
    unknown = sorted((str(k) for k in data if k not in allowed))
    if unknown:
        raise MappingError(f"{where}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown[:5])}; "
                           f"expected {', '.join(sorted(allowed))}")


def _flag(where: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise MappingError(f"{where}: expected true or false, got {excerpt(value)}")


def _int(where: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise MappingError(f"{where}: expected a whole number from {low} to {high}, got {excerpt(value)}")
    return value


def _channel(where: str, value: Any) -> int:
    return _int(where, value, 1, 16) - 1


def _number(where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        raise MappingError(f"{where}: expected a finite number, got {excerpt(value)}")
    return float(value)


RANGE_TEXT = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")


def _span(where: str, value: Any) -> list | None:
    """``"0-7"`` -> [0..7] (inclusive); anything else -> None (a single value)."""
    if isinstance(value, str):
        m = RANGE_TEXT.match(value)
        if m:
            a, b = int(m.group(1)), int(m.group(2))
            if b < a or b - a >= 128:
                raise MappingError(f"{where}: range {value!r} must go up, at most 128 numbers")
            return list(range(a, b + 1))
    return None


def _expand(where: str, raw: Any) -> list[dict]:
    """One entry's data with its ranges expanded: one dict per number (the entry itself when it has none)."""
    if not isinstance(raw, dict):
        raise MappingError(f"{where}: expected a mapping such as {{cc: 7, stem: 1, control: fader}}, got "
                           f"{excerpt(raw)}")
    _keys(where, raw, ENTRY_KEYS)
    spans = {k: _span(f"{where}.{k}", raw[k]) for k in ("cc", "note", "channel", "stem", "scene", "bus") if k in raw}
    spans = {k: v for k, v in spans.items() if v is not None}
    lengths = {len(v) for v in spans.values()}
    if len(lengths) > 1:
        raise MappingError(f"{where}: ranges of different lengths ({', '.join(f'{k}: {raw[k]}' for k in spans)})")
    if not spans:
        return [raw]
    return [dict(raw, **{k: v[i] for k, v in spans.items()}) for i in range(lengths.pop())]


def _entries(where: str, raw: Any, channel: int, pickup: bool, feedback: bool) -> list[Entry]:
    ones = _expand(where, raw)
    return [_entry(where if len(ones) == 1 else f"{where} (#{i + 1})", one, channel, pickup, feedback)
            for i, one in enumerate(ones)]


def _ref(where: str, value: Any) -> int | str:
    """A stem, bus or scene: a number from 1 (the rig's order) or a name."""
    if isinstance(value, bool):
        raise MappingError(f"{where}: expected a number from 1 or a name, got {value!r}")
    if isinstance(value, int):
        if value < 1:
            raise MappingError(f"{where}: numbers count from 1, got {value}")
        return value
    if isinstance(value, str) and 0 < len(value) <= 100 and "/" not in value:
        return value
    raise MappingError(f"{where}: expected a number from 1 or a name, got {excerpt(value)}")


def _entry(where: str, raw: dict, channel: int, pickup: bool, feedback: bool) -> Entry:
    sources = [k for k in ("cc", "note", "pitchbend") if k in raw]
    if len(sources) != 1:
        raise MappingError(f"{where}: give one source: cc: N, note: N or pitchbend: true")
    kind = sources[0]
    if kind == "pitchbend":
        if raw["pitchbend"] is not True:
            raise MappingError(f"{where}: pitchbend: expected true")
        number = 0
    else:
        number = _int(f"{where}.{kind}", raw[kind], 0, 127)
    ch = _channel(f"{where}.channel", raw["channel"]) if "channel" in raw else channel
    targets = [k for k in ("address", "scene", "bus_select") if k in raw]
    if "control" in raw and not targets:
        targets = ["control"]
    if len(targets) != 1:
        raise MappingError(f"{where}: give one target: stem + control, bus + control, scene, bus_select or address")
    target = targets[0]
    fields: dict[str, Any] = {"kind": kind, "number": number, "channel": ch,
                              "pickup": _flag(f"{where}.pickup", raw["pickup"]) if "pickup" in raw else pickup,
                              "feedback": _flag(f"{where}.feedback", raw["feedback"]) if "feedback" in raw else feedback}
    continuous = True
    if target == "scene":
        fields["scene"] = _ref(f"{where}.scene", raw["scene"])
        if "fade" in raw:
            fade = _number(f"{where}.fade", raw["fade"])
            if not 0 <= fade <= 600:
                raise MappingError(f"{where}.fade: expected seconds from 0 to 600, got {excerpt(raw['fade'])}")
            fields["fade"] = fade
        continuous = False
    elif target == "bus_select":
        value = raw["bus_select"]
        fields["bus_select"] = value if value in ("next", "previous") else _ref(f"{where}.bus_select", value)
        continuous = False
    elif target == "control":
        control = raw["control"]
        stem = raw.get("stem")
        allowed = STEM_CONTROLS if stem is not None else BUS_CONTROLS
        if control not in allowed:
            raise MappingError(f"{where}.control: expected one of {', '.join(allowed)}"
                               f"{'' if stem is not None else ' (a bus master; give stem: for a stem)'}, got "
                               f"{excerpt(control)}")
        bus = raw.get("bus", "selected")
        fields["bus"] = bus if bus == "selected" else _ref(f"{where}.bus", bus)
        if stem is not None:
            fields["stem"] = _ref(f"{where}.stem", stem)
            fields["address"] = "/bus/{bus}/stem/{stem}/" + control
        else:
            fields["address"] = "/bus/{bus}/" + control
        continuous = control in ("fader", "gain")
    else:
        address = raw["address"]
        if not isinstance(address, str) or not address.startswith("/") or len(address) > 300:
            raise MappingError(f"{where}.address: expected a model address such as /engine/bypass, got "
                               f"{excerpt(address)}")
        if "stem" in raw:
            fields["stem"] = _ref(f"{where}.stem", raw["stem"])
        bus = raw.get("bus", "selected")
        fields["bus"] = bus if bus == "selected" else _ref(f"{where}.bus", bus)
        fields["address"] = address
        leaf = address.rsplit("/", 1)[-1]
        continuous = not (leaf in ("mute", "solo", "bypass", "reset") or address.startswith("/scene/"))
        if "/fx/" in address and "range" not in raw:
            raise MappingError(f"{where}: an effect parameter needs range: [low, high] (the values it spans)")
    default_mode = ("absolute" if kind != "note" else "auto") if continuous else "auto"
    mode = raw.get("mode", default_mode)
    if mode == "relative":
        mode = "relative-twos"
    if mode not in MODES:
        raise MappingError(f"{where}.mode: expected one of {', '.join(MODES)}, got {excerpt(mode)}")
    if mode in CONTINUOUS_MODES and not continuous:
        raise MappingError(f"{where}.mode: {mode} is for faders and knobs; this target is a button "
                           f"({', '.join(BUTTON_MODES)})")
    if mode in CONTINUOUS_MODES and kind == "note":
        raise MappingError(f"{where}.mode: a note is a button ({', '.join(BUTTON_MODES)})")
    if kind == "pitchbend" and mode != "absolute":
        raise MappingError(f"{where}.mode: pitch bend is absolute (14 bits)")
    fields["mode"] = mode
    if "lsb" in raw or mode == "absolute14":
        if kind != "cc" or mode != "absolute14":
            raise MappingError(f"{where}.lsb: goes with cc and mode: absolute14")
        lsb = _int(f"{where}.lsb", raw["lsb"], 0, 127) if "lsb" in raw else number + 32
        if lsb > 127 or lsb == number:
            raise MappingError(f"{where}: cc {number} has no LSB at cc {lsb}; give lsb: N")
        fields["lsb"] = lsb
    if "range" in raw:
        r = raw["range"]
        if not isinstance(r, list) or len(r) != 2:
            raise MappingError(f"{where}.range: expected [low, high], got {excerpt(r)}")
        low, high = _number(f"{where}.range", r[0]), _number(f"{where}.range", r[1])
        if low == high:
            raise MappingError(f"{where}.range: low and high are the same")
        fields["range"] = (low, high)
    if "step" in raw:
        step = _number(f"{where}.step", raw["step"])
        if step <= 0:
            raise MappingError(f"{where}.step: expected a number above 0")
        fields["step"] = step
    return Entry(**fields)


# ---------------------------------------------------------------------------------- writing (learn)
def entry_data(kind: str, number: int, channel: int, target: dict[str, Any], mode: str | None = None) -> dict:
    """One entry as a mapping file holds it (``channel`` 0-15), e.g. for MIDI learn."""
    out: dict[str, Any] = {kind: True if kind == "pitchbend" else int(number), "channel": int(channel) + 1}
    out.update(target)
    if mode is not None:
        out["mode"] = mode
    return out


def with_entry(mapping: Mapping, data: dict, where: str = "learned") -> Mapping:
    """``mapping`` with one more entry (``data`` as :func:`entry_data` makes it); any entry of the mapping on
    the same source is replaced. Checked as a whole (raises :class:`MappingError`)."""
    new = _entries(where, data, mapping.channel, mapping.pickup, mapping.feedback)
    taken = {k for e in new for k in _keys_of(e)}
    kept = []
    for raw in mapping.raw.get("controls", []):
        try:
            ones = _expand(where, raw)
            olds = [_entry(where, one, mapping.channel, mapping.pickup, mapping.feedback) for one in ones]
        except MappingError:
            kept.append(raw)
            continue
        hit = [any(k in taken for k in _keys_of(e)) for e in olds]
        if not any(hit):
            kept.append(raw)                  # untouched: kept as written (ranges and all)
        else:
            kept.extend(one for one, h in zip(ones, hit) if not h)   # a range loses only the learned number
    raw = dict(mapping.raw, controls=kept + [data])
    result = parse_mapping(raw, mapping.path or where)
    result.path = mapping.path
    return result


def save_mapping(mapping: Mapping, path: str | os.PathLike) -> str:
    """Write ``mapping`` to ``path`` as YAML, atomically: a temporary file in the same folder, renamed over the
    old one (a crash leaves the old file or the new one, never half of one). Returns the path."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    text = ("# stemstream MIDI mapping (written by MIDI learn; see the README's MIDI section)\n"
            + yaml.safe_dump(_plain(mapping.raw), sort_keys=False, default_flow_style=None, width=120))
    fd, tmp = tempfile.mkstemp(prefix=".stemstream-midi-", suffix=".partial", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


__all__ = ["Entry", "Mapping", "MappingError", "HOLD_SECONDS", "MODES", "load_mapping", "parse_mapping",
           "save_mapping", "with_entry", "entry_data"]
