"""Audio devices: list them (through PortAudio, via ``sounddevice``) and pick one by index or name.

``sounddevice`` is imported lazily (:func:`portaudio`): importing it starts PortAudio, which only
sees a JACK server that is already running, and fails outright without the PortAudio library.
Every function that takes a device list works on plain :class:`Device` values, so it can be tested
with made-up lists.
"""
from __future__ import annotations

import dataclasses
import json
import numbers
import re
from dataclasses import dataclass
from typing import Any

from streamer.errors import StemstreamError

__all__ = ["Device", "DeviceError", "check_channels", "find_device", "format_table", "portaudio", "query",
           "to_json"]

KINDS = ("input", "output")
NO_DEVICES_HINT = "on Linux without a sound card, a JACK server (jackd -d dummy) provides one"


class DeviceError(StemstreamError, ValueError):
    """A device that cannot be used; the message names it and lists candidates."""


def _check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"kind must be 'input' or 'output', not {kind!r}")
    return kind


@dataclass(frozen=True)
class Device:
    """One PortAudio device, as listed by :func:`query`."""

    index: int
    name: str
    hostapi: str
    max_input_channels: int
    max_output_channels: int
    default_samplerate: float
    default_input: bool = False
    default_output: bool = False

    def channels(self, kind: str) -> int:
        """The device's channel count for ``kind`` (``"input"`` or ``"output"``)."""
        return self.max_input_channels if _check_kind(kind) == "input" else self.max_output_channels

    def is_default(self, kind: str) -> bool:
        """Whether this is the default device for ``kind``."""
        return self.default_input if _check_kind(kind) == "input" else self.default_output

    def label(self) -> str:
        """``"3: system (JACK Audio Connection Kit, 2 in, 2 out)"``."""
        return (f"{self.index}: {self.name} ({self.hostapi}, {self.max_input_channels} in, "
                f"{self.max_output_channels} out)")


def portaudio() -> Any:
    """Import and return ``sounddevice``; a missing PortAudio library becomes a :class:`DeviceError`."""
    try:
        import sounddevice
    except OSError as exc:
        raise DeviceError("PortAudio is not installed: install the Debian package libportaudio2 "
                          f"(`make install` does) and try again ({exc})") from exc
    return sounddevice


def query(sd: Any = None) -> list[Device]:
    """All devices PortAudio knows, with the default input and output marked.

    ``sd`` is ``sounddevice`` (the default) or anything shaped like it: ``query_devices()``,
    ``query_hostapis()`` and ``default.device``.
    """
    sd = portaudio() if sd is None else sd
    hostapis = list(sd.query_hostapis())
    devices = [_device(info, position, hostapis) for position, info in enumerate(sd.query_devices())]
    pair = _default_pair(sd)
    chosen = {kind: _default_index(pair[i], kind, devices, hostapis) for i, kind in enumerate(KINDS)}
    return [dataclasses.replace(d, default_input=d.index == chosen["input"],
                                default_output=d.index == chosen["output"]) for d in devices]


def _device(info: dict, position: int, hostapis: list[dict]) -> Device:
    api = info.get("hostapi", -1)
    api_name = hostapis[api]["name"] if isinstance(api, int) and 0 <= api < len(hostapis) else str(api)
    return Device(index=int(info.get("index", position)), name=str(info["name"]), hostapi=str(api_name),
                  max_input_channels=int(info["max_input_channels"]),
                  max_output_channels=int(info["max_output_channels"]),
                  default_samplerate=float(info["default_samplerate"]))


def _default_pair(sd: Any) -> tuple[object, object]:
    """``sd.default.device`` as an (input, output) pair; its items are indices (-1: none) or names."""
    value = getattr(getattr(sd, "default", None), "device", None)
    if value is None or isinstance(value, (numbers.Integral, str)):
        return value, value
    try:
        return value[0], value[1]
    except (TypeError, IndexError, KeyError):
        return None, None


def _default_index(value: object, kind: str, devices: list[Device], hostapis: list[dict]) -> int | None:
    """The default device's index for ``kind``: ``value`` if it names a usable one, else the first
    host API's default that is usable; None when there is none."""
    usable = {d.index: d for d in devices if d.channels(kind) > 0}
    if isinstance(value, str):
        found = _match_query_string(value, list(usable.values()))
        if found is not None:
            return found
    elif isinstance(value, numbers.Integral) and not isinstance(value, bool) and int(value) in usable:
        return int(value)
    for api in hostapis:
        index = api.get(f"default_{kind}_device", -1)
        if isinstance(index, numbers.Integral) and int(index) in usable:
            return int(index)
    return None


def _match_query_string(query_string: str, devices: list[Device]) -> int | None:
    """Resolve a name the way ``sounddevice`` reads ``default.device`` strings: space-separated
    substrings, in order, of ``"name, host API"``; an exact name wins; None unless unambiguous."""
    words = query_string.lower().split()
    exact: list[int] = []
    matches: list[int] = []
    for d in devices:
        full = f"{d.name}, {d.hostapi}".lower()
        pos = 0
        for word in words:
            pos = full.find(word, pos)
            if pos < 0:
                break
            pos += len(word)
        else:
            matches.append(d.index)
            if query_string.lower() in (d.name.lower(), full):
                exact.append(d.index)
    if len(exact) == 1:
        return exact[0]
    return matches[0] if len(matches) == 1 else None


def _listing(devices: list[Device]) -> str:
    return ", ".join(d.label() for d in devices)


def find_device(spec: int | str | None, kind: str, devices: list[Device]) -> Device:
    """The device of ``kind`` that ``spec`` names: None (the default), an index, or a name.

    A name matches exactly (ignoring case) or else as the only substring match among the devices
    with ``kind`` channels. Anything else raises :class:`DeviceError` listing the candidates.
    """
    _check_kind(kind)
    candidates = [d for d in devices if d.channels(kind) > 0]
    if not candidates:
        raise DeviceError(f"no {kind} devices found; {NO_DEVICES_HINT}")
    listing = f"{kind} devices: {_listing(candidates)}"
    if spec is None:
        for d in candidates:
            if d.is_default(kind):
                return d
        raise DeviceError(f"no default {kind} device; choose one with --{kind} (see `stemstream devices`)")
    if isinstance(spec, bool) or not isinstance(spec, (numbers.Integral, str)):
        raise TypeError(f"a device is an index or a name, not {spec!r}")
    if isinstance(spec, numbers.Integral) or re.fullmatch(r"[0-9]+", spec.strip()):
        index = int(spec)
        device = next((d for d in devices if d.index == index), None)
        if device is None:
            raise DeviceError(f"no device with index {index}; {listing}")
        if device.channels(kind) <= 0:
            raise DeviceError(f"device {device.label()} has no {kind} channels; {listing}")
        return device
    name = spec.strip().lower()
    if not name:
        raise DeviceError(f"empty {kind} device name; {listing}")
    exact = [d for d in candidates if d.name.lower() == name]
    if len(exact) == 1:
        return exact[0]
    if len(exact) > 1:
        raise DeviceError(f"{spec!r} matches {len(exact)} {kind} devices: {_listing(exact)}; use the index")
    matches = [d for d in candidates if name in d.name.lower()]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise DeviceError(f"no {kind} device matches {spec!r}; {listing}")
    raise DeviceError(f"{spec!r} matches {len(matches)} {kind} devices: {_listing(matches)}; "
                      "use the index or a longer name")


def check_channels(device: Device, kind: str, needed: int, what: str) -> None:
    """Raise :class:`DeviceError` unless ``device`` has ``needed`` channels of ``kind`` (for ``what``)."""
    have = device.channels(kind)
    if have < needed:
        plural = "" if have == 1 else "s"
        raise DeviceError(f"{kind} device {device.name!r} has {have} {kind} channel{plural}; {what} needs {needed}")


def _rate(rate: float) -> str:
    return f"{rate:.0f}" if float(rate).is_integer() else f"{rate:g}"


def format_table(devices: list[Device]) -> str:
    """An aligned table, one device a line; ``>`` marks the default input, ``<`` the default output,
    ``*`` a device that is both (as ``sounddevice`` prints them), explained on a last line."""
    if not devices:
        return f"no audio devices found; {NO_DEVICES_HINT}"
    rows = [("", "#", "name", "host API", "in", "out", "rate")]
    for d in devices:
        mark = " ><*"[d.default_input + 2 * d.default_output]
        rows.append((mark.strip(), str(d.index), d.name, d.hostapi, str(d.max_input_channels),
                     str(d.max_output_channels), _rate(d.default_samplerate)))
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    right = {1, 4, 5, 6}
    lines = ["  ".join(cell.rjust(w) if c in right else cell.ljust(w)
                       for c, (cell, w) in enumerate(zip(row, widths))).rstrip() for row in rows]
    if any(d.default_input or d.default_output for d in devices):
        lines.append("(> default input, < default output, * both)")
    return "\n".join(lines)


def to_json(devices: list[Device]) -> str:
    """The devices as a JSON list of objects (the :class:`Device` fields), indented by 2."""
    return json.dumps([dataclasses.asdict(d) for d in devices], indent=2)
