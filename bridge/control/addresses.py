"""The OSC address space of a separator: every address, how a value is checked, read and set, and
OSC 1.0 address patterns.

| address | argument | what |
|---|---|---|
| ``/stem/<stem>/mute``, ``/stem/<stem>/solo`` | 1/0 (int or float) or true/false | first bus |
| ``/stem/<stem>/gain`` | dB (a number, -inf is silence; above +24 stops at +24) | first bus |
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

Values follow the mixer's rules (:data:`bridge.mix.mixer.RULES`), the same for every source (Python,
rig files, CLI flags, the terminal mixer, MIDI).
"""
from __future__ import annotations

import functools
import inspect
import math
from dataclasses import dataclass
from typing import Any, Callable

from bridge.mix.mixer import StemMixer, flag_value, shown
from streamer.errors import SettingsError

PATTERN_CHARS = set("*?[]{}")
NOT_PARAMETERS = {"is_effect", "is_instrument", "reported_latency_samples", "parameters", "name", "version",
                  "manufacturer_name", "category", "descriptive_name", "identifier", "has_shared_container",
                  "raw_state", "preset_data"}


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
    """A flag by the mixer's rule (:func:`bridge.mix.mixer.flag_value`): 1/0 (int or float), true/false."""
    v = _one(address, args)
    try:
        return flag_value(v)
    except ValueError as exc:
        raise ControlError(f"{address}: expected {exc}, got {type(v).__name__} {shown(v)}") from None


def as_value(address: str, args: tuple) -> Any:
    """One argument, as sent: the control's own rule (the mixer's) checks it."""
    return _one(address, args)


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
MAX_PATTERN = 256          # characters in an address pattern
MAX_ALTERNATIVES = 64      # strings one segment's {a,b} lists may expand to


def _expand_braces(segment: str, where: str) -> list[str]:
    """``a{b,c}d`` -> [abd, acd] (OSC 1.0 lists; no nesting), at most MAX_ALTERNATIVES."""
    out = [""]
    i = 0
    while i < len(segment):
        ch = segment[i]
        if ch == "{":
            end = segment.find("}", i + 1)
            if end < 0:
                raise ControlError(f"{where}: unclosed '{{'")
            options = segment[i + 1:end].split(",")
            if len(out) * len(options) > MAX_ALTERNATIVES:
                raise ControlError(f"{where}: more than {MAX_ALTERNATIVES} alternatives in one part")
            out = [o + opt for o in out for opt in options]
            i = end + 1
        else:
            out = [o + ch for o in out]
            i += 1
    return out


def _tokens(segment: str, where: str) -> list:
    """A segment without braces as tokens: "*", "?", ("set", chars, negate) or a literal character."""
    tokens: list = []
    i = 0
    while i < len(segment):
        ch = segment[i]
        if ch == "*":
            if not tokens or tokens[-1] != "*":   # runs of '*' are one '*'
                tokens.append("*")
        elif ch == "?":
            tokens.append("?")
        elif ch == "[":
            end = segment.find("]", i + 1)
            if end < 0:
                raise ControlError(f"{where}: unclosed '['")
            body = segment[i + 1:end]
            negate = body.startswith("!")
            if negate:
                body = body[1:]
            chars: set[str] = set()
            j = 0
            while j < len(body):
                if j + 2 < len(body) and body[j + 1] == "-":
                    lo, hi = body[j], body[j + 2]
                    if lo > hi:
                        raise ControlError(f"{where}: bad range [{lo}-{hi}]")
                    chars.update(chr(c) for c in range(ord(lo), ord(hi) + 1))
                    j += 3
                else:
                    chars.add(body[j])
                    j += 1
            tokens.append(("set", frozenset(chars), negate))
            i = end
        elif ch in "]}":
            raise ControlError(f"{where}: unmatched '{ch}'")
        else:
            tokens.append(ch)
        i += 1
    return tokens


def _one_char(token, ch: str) -> bool:
    if token == "?":
        return True
    if isinstance(token, tuple):
        return (ch in token[1]) != token[2]
    return token == ch


def _match_tokens(tokens: list, text: str) -> bool:
    """Wildcard matching without backtracking blow-up: at most len(tokens) * len(text) steps."""
    t = s = 0
    star_t, star_s = -1, 0
    while s < len(text):
        if t < len(tokens) and tokens[t] != "*" and _one_char(tokens[t], text[s]):
            t += 1
            s += 1
        elif t < len(tokens) and tokens[t] == "*":
            star_t, star_s = t, s
            t += 1
        elif star_t >= 0:
            t = star_t + 1
            star_s += 1
            s = star_s
        else:
            return False
    while t < len(tokens) and tokens[t] == "*":
        t += 1
    return t == len(tokens)


class AddressPattern:
    """An OSC 1.0 address pattern (``*``, ``?``, ``[a-z]``, ``[!a-z]``, ``{a,b}``), matched part by part
    (no part crosses a ``/``), in time linear in the pattern and the address: a pattern is data from
    the network, so it must never be able to stall the server."""

    def __init__(self, pattern: str):
        if len(pattern) > MAX_PATTERN:
            raise ControlError(f"address pattern longer than {MAX_PATTERN} characters")
        self.parts = [[_tokens(alt, pattern) for alt in _expand_braces(seg, pattern)]
                      for seg in pattern.split("/")]

    def match(self, address: str) -> bool:
        segs = address.split("/")
        if len(segs) != len(self.parts):
            return False
        return all(any(_match_tokens(alt, seg) for alt in alts) for alts, seg in zip(self.parts, segs))


@functools.lru_cache(maxsize=256)
def compile_pattern(pattern: str) -> AddressPattern:
    return AddressPattern(pattern)


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
                                               self._setter(master, "gain_db", as_value, f"/bus/{bus}/gain"))
            eps[f"/bus/{bus}/fader"] = Endpoint(f"/bus/{bus}/fader", lambda mb=master: mb.fader,
                                                self._setter(master, "fader", as_value, f"/bus/{bus}/fader"))
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
        flag, number = as_flag, as_value
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
            try:
                self.actions["recall"](name, seconds)
            except SettingsError as exc:
                raise ControlError(f"{address}: {exc}") from None

        return set_

    # ------------------------------------------------------------------ lookup
    def match(self, address: str) -> list[Endpoint]:
        """The endpoints an address (or an address pattern) names; empty when none."""
        if not address.startswith("/"):
            return []
        if not (PATTERN_CHARS & set(address)):
            ep = self.endpoints.get(address)
            return [ep] if ep is not None else []
        pattern = compile_pattern(address)
        return [self.endpoints[a] for a in self.addresses if pattern.match(a)]

    def state(self) -> dict[str, Any]:
        """The value of every echoed address (for change echoes to subscribers: compared with the values
        last sent after the control model announced a change)."""
        out = {}
        for address, ep in self.endpoints.items():
            if ep.echo and ep.get is not None:
                try:
                    out[address] = ep.get()
                except Exception:  # noqa: BLE001 - a plugin that refuses to answer is left out
                    continue
        return out
