"""The OSC address space of a separator: every address, how a value is checked, read and set, and
OSC 1.0 address patterns.

| address | argument | what |
|---|---|---|
| ``/stem/<stem>/mute``, ``/stem/<stem>/solo`` | 1/0, true/false, or a float (>= 0.5 is on) | first bus |
| ``/stem/<stem>/gain`` | dB (a finite number; above +24 stops at +24) | first bus |
| ``/stem/<stem>/fader`` | 0..1, the mixer's fader law (0.75 = 0 dB; beyond 0..1 stops at the ends) | first bus |
| ``/bus/<bus>/stem/<stem>/mute|solo|gain|fader`` | as above | any bus |
| ``/bus/<bus>/gain|fader|mute`` | as above | a bus's master |
| ``/stem/<stem>/fx/<index>/<parameter>`` | a number (or 1/0 for a switch), in the plugin's range | effect chains (index from 0) |
| ``/scene/<name>`` | optional fade in seconds | recall a scene |
| ``/scene`` | none | answers ``/scene`` with the scene names |
| ``/engine/bypass`` | 1/0 | every bus plays the delayed input |
| ``/engine/reset`` | none | a fresh stream at the next block (rings and overlap-add cleared) |
| ``/engine/status`` | none | answers ``/engine/status/<name> value`` for each status value |

A message without arguments to a settable address is a query: the answer goes back to the sender,
on the same address, with the current value (mute/solo/bypass as int 0/1, gains and faders as float;
a silent gain is ``-inf``). Patterns (``*``, ``?``, ``[a-z]``, ``[!a-z]``, ``{vocals,drums}``) match
the addresses as OSC 1.0 defines them (no part crosses a ``/``).
"""
from __future__ import annotations

import functools
import inspect
import math
import re
from dataclasses import dataclass
from typing import Any, Callable

from bridge.mix.mixer import StemMixer
from streamer.errors import SettingsError

PATTERN_CHARS = set("*?[]{}")
NOT_PARAMETERS = {"is_effect", "is_instrument", "reported_latency_samples", "parameters", "name", "version",
                  "manufacturer_name", "category", "descriptive_name", "identifier", "has_shared_container",
                  "is_instrument", "raw_state", "preset_data"}


class ControlError(SettingsError):
    """A control message that cannot be applied; the message says why (sent back as ``/error``)."""


@dataclass
class Endpoint:
    """One address: ``get()`` its value, ``set(args)`` from a message's arguments (None: read-only or an
    action), ``tag`` the OSC type of its value in answers."""

    address: str
    get: Callable[[], Any] | None
    set: Callable[[tuple], None] | None
    tag: str = "f"
    echo: bool = True      # part of the state echoed to subscribers


# ---------------------------------------------------------------------------------- values
def _one(address: str, args: tuple) -> Any:
    if len(args) != 1:
        raise ControlError(f"{address}: expected one value, got {len(args)}")
    return args[0]


def as_flag(address: str, args: tuple) -> bool:
    """1/0, true/false, or a float as a button sends it (>= 0.5 is on)."""
    v = _one(address, args)
    if isinstance(v, bool):
        return v
    if isinstance(v, int):
        if v in (0, 1):
            return bool(v)
        raise ControlError(f"{address}: expected 1 or 0, got {v}")
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ControlError(f"{address}: expected a finite number, got {v}")
        return v >= 0.5
    raise ControlError(f"{address}: expected 1/0 or true/false, got {type(v).__name__} {v!r}")


def as_number(address: str, args: tuple) -> float:
    """A finite int or float (NaN and inf refused)."""
    v = _one(address, args)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ControlError(f"{address}: expected a number, got {type(v).__name__} {v!r}")
    v = float(v)
    if not math.isfinite(v):
        raise ControlError(f"{address}: expected a finite number, got {v}")
    return v


# ---------------------------------------------------------------------------------- patterns
@functools.lru_cache(maxsize=1024)
def pattern_regex(pattern: str) -> re.Pattern:
    """An OSC 1.0 address pattern as a regular expression (no part matches across ``/``)."""
    out, i, n = [], 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "*":
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                raise ControlError(f"{pattern}: unclosed '['")
            body = pattern[i + 1:end]
            negate = body.startswith("!")
            if negate:
                body = body[1:]
            body = "".join("\\" + c if c in "\\^]" else c for c in body)
            out.append(f"[{'^' if negate else ''}{body}]" if body else ("[^/]" if negate else "(?!)"))
            i = end
        elif ch == "{":
            end = pattern.find("}", i + 1)
            if end < 0:
                raise ControlError(f"{pattern}: unclosed '{{'")
            out.append("(?:" + "|".join(re.escape(p) for p in pattern[i + 1:end].split(",")) + ")")
            i = end
        else:
            out.append(re.escape(ch))
        i += 1
    return re.compile("".join(out) + r"\Z")


# ---------------------------------------------------------------------------------- the space
def plugin_parameters(plugin) -> list[str]:
    """The settable parameters of a pedalboard plugin: a VST3's ``parameters``, or a built-in's properties."""
    params = getattr(plugin, "parameters", None)
    if isinstance(params, dict):
        return sorted(params)
    names = []
    for name, value in inspect.getmembers(type(plugin)):
        if isinstance(value, property) and not name.startswith("_") and name not in NOT_PARAMETERS \
                and value.fset is not None:
            names.append(name)
    return sorted(names)


class AddressSpace:
    """Every address of ``separator`` (a StemSeparator: its mixer, effect chains, scenes and engine).

    ``actions`` holds the callables behind the engine and scene addresses (``recall(name, seconds)``,
    ``scenes()``, ``bypass`` get/set, ``reset()``, ``status()``), so that the space does not own them.
    Rebuild it (``refresh()``) after effect chains change.
    """

    def __init__(self, separator, actions: dict[str, Callable]):
        self.sep = separator
        self.mixer: StemMixer = separator.mixer
        self.actions = actions
        self.refresh()

    def refresh(self) -> None:
        eps: dict[str, Endpoint] = {}
        m = self.mixer
        for b, bus in enumerate(m.bus_names):
            prefixes = [f"/bus/{bus}/stem"] + (["/stem"] if b == 0 else [])
            for stem in m.stem_names:
                for prefix in prefixes:
                    base = f"{prefix}/{stem}"
                    eps.update(self._stem_controls(base, bus, stem))
            master = m.buses[bus]
            eps[f"/bus/{bus}/gain"] = Endpoint(f"/bus/{bus}/gain", lambda mb=master: mb.gain_db,
                                               self._setter(master, "gain_db", as_number, f"/bus/{bus}/gain"))
            eps[f"/bus/{bus}/fader"] = Endpoint(f"/bus/{bus}/fader", lambda mb=master: mb.fader,
                                                self._setter(master, "fader", as_number, f"/bus/{bus}/fader"))
            eps[f"/bus/{bus}/mute"] = Endpoint(f"/bus/{bus}/mute", lambda mb=master: int(mb.mute),
                                               self._setter(master, "mute", as_flag, f"/bus/{bus}/mute"), tag="i")
        for stem in m.stem_names:
            chain = self.sep.stems[stem].effects if hasattr(self.sep, "stems") else None
            for index, plugin in enumerate(list(chain) if chain is not None else []):
                for param in plugin_parameters(plugin):
                    address = f"/stem/{stem}/fx/{index}/{param}"
                    eps[address] = Endpoint(address, self._param_getter(plugin, param),
                                            self._param_setter(address, plugin, param))
        a = self.actions
        eps["/engine/bypass"] = Endpoint("/engine/bypass", lambda: int(a["get_bypass"]()),
                                         lambda args: a["set_bypass"](as_flag("/engine/bypass", args)), tag="i")
        eps["/engine/reset"] = Endpoint("/engine/reset", None, lambda args: a["reset"](), echo=False)
        eps["/engine/status"] = Endpoint("/engine/status", None, None, echo=False)
        eps["/scene"] = Endpoint("/scene", None, None, echo=False)
        for name in a["scenes"]():
            address = f"/scene/{name}"
            eps[address] = Endpoint(address, None, self._scene_setter(address, name), echo=False)
        self.endpoints = eps
        self.addresses = sorted(eps)

    def _stem_controls(self, base: str, bus: str, stem: str) -> dict[str, Endpoint]:
        c = self.mixer.buses[bus].stems[stem]
        flag, number = as_flag, as_number
        return {
            f"{base}/mute": Endpoint(f"{base}/mute", lambda: int(c.mute),
                                     self._setter(c, "mute", flag, f"{base}/mute"), tag="i"),
            f"{base}/solo": Endpoint(f"{base}/solo", lambda: int(c.solo),
                                     self._setter(c, "solo", flag, f"{base}/solo"), tag="i"),
            f"{base}/gain": Endpoint(f"{base}/gain", lambda: c.gain_db,
                                     self._setter(c, "gain_db", number, f"{base}/gain")),
            f"{base}/fader": Endpoint(f"{base}/fader", lambda: c.fader,
                                      self._setter(c, "fader", number, f"{base}/fader")),
        }

    @staticmethod
    def _setter(target, attr: str, convert, address: str) -> Callable[[tuple], None]:
        def set_(args: tuple) -> None:
            value = convert(address, args)
            try:
                setattr(target, attr, value)
            except SettingsError as exc:
                raise ControlError(f"{address}: {exc}") from None

        return set_

    @staticmethod
    def _param_getter(plugin, param: str):
        def get():
            value = getattr(plugin, param)
            if isinstance(value, bool):
                return int(value)
            return float(value) if isinstance(value, (int, float)) else value

        return get

    @staticmethod
    def _param_setter(address: str, plugin, param: str):
        def set_(args: tuple) -> None:
            current = getattr(plugin, param)
            if isinstance(current, bool):
                value: Any = as_flag(address, args)
            else:
                value = as_number(address, args)
            spec = getattr(plugin, "parameters", {}).get(param) if isinstance(getattr(plugin, "parameters", None),
                                                                               dict) else None
            low, high = getattr(spec, "min_value", None), getattr(spec, "max_value", None)
            if isinstance(low, (int, float)) and isinstance(high, (int, float)) and not low <= value <= high:
                raise ControlError(f"{address}: {value:g} is outside the plugin's range {low:g} to {high:g}")
            try:
                setattr(plugin, param, value)
            except (ValueError, TypeError) as exc:
                raise ControlError(f"{address}: {str(exc).splitlines()[0]}") from None

        return set_

    def _scene_setter(self, address: str, name: str):
        def set_(args: tuple) -> None:
            seconds = 0.0 if not args else as_number(address, args)
            if seconds < 0:
                raise ControlError(f"{address}: the fade must be 0 seconds or more, got {seconds:g}")
            self.actions["recall"](name, seconds)

        return set_

    # ------------------------------------------------------------------ lookup
    def match(self, address: str) -> list[Endpoint]:
        """The endpoints an address (or an address pattern) names; empty when none."""
        if not address.startswith("/"):
            return []
        if not (PATTERN_CHARS & set(address)):
            ep = self.endpoints.get(address)
            return [ep] if ep is not None else []
        rx = pattern_regex(address)
        return [self.endpoints[a] for a in self.addresses if rx.match(a)]

    def state(self) -> dict[str, Any]:
        """The value of every echoed address (for change echoes to subscribers)."""
        out = {}
        for address, ep in self.endpoints.items():
            if ep.echo and ep.get is not None:
                try:
                    out[address] = ep.get()
                except Exception:  # noqa: BLE001 - a plugin that refuses to answer is left out
                    continue
        return out
