"""A complete mixer state as one typed value: every bus's master (gain, mute) and every stem's gain,
mute and solo on it. ``MixerState.snapshot(mixer)`` takes it, ``state.apply(mixer)`` sets it (only what
differs, as one change, through the mixer's own rules). Scenes, rig files, the CLI's
``--mute/--solo/--gain``, the terminal mixer's mirror and OSC state queries all use this one value.

Values are as the mixer keeps them (``gain_db``; a fader is only another view of it), and
:meth:`MixerState.audible` folds mute, solo and the bus master in with the mixer's own rule
(:func:`bridge.mix.mixer.audible_gain`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

from .mixer import RULES, StemMixer, audible_gain, db_to_gain, fader_to_db


@dataclass(frozen=True)
class StemState:
    """One stem's controls on one bus."""

    gain_db: float = 0.0
    mute: bool = False
    solo: bool = False


@dataclass(frozen=True)
class BusState:
    """A bus: its master's gain and mute, and its stems' controls (in the mixer's stem order)."""

    stems: tuple[StemState, ...]
    gain_db: float = 0.0
    mute: bool = False

    def audible(self) -> list[float]:
        soloing = any(s.solo for s in self.stems)
        master = 0.0 if self.mute else db_to_gain(self.gain_db)
        return [audible_gain(s.gain_db, s.mute, s.solo, soloing, master) for s in self.stems]


@dataclass(frozen=True)
class MixerState:
    """Every control of a mixer with these stem and bus names (see the module docstring)."""

    stem_names: tuple[str, ...]
    bus_names: tuple[str, ...]
    buses: tuple[BusState, ...]

    # ------------------------------------------------------------------ making one
    @classmethod
    def unity(cls, stems: Sequence[str], buses: Sequence[str]) -> "MixerState":
        """Everything at 0 dB, nothing muted or soloed (a scene's starting point)."""
        return cls(tuple(stems), tuple(buses), tuple(BusState(tuple(StemState() for _ in stems)) for _ in buses))

    @classmethod
    def snapshot(cls, mixer: StemMixer) -> "MixerState":
        """The mixer's controls now."""
        buses = []
        for name in mixer.bus_names:
            b = mixer.buses[name]
            buses.append(BusState(tuple(StemState(c.gain_db, c.mute, c.solo)
                                        for c in (b.stems[s] for s in mixer.stem_names)), b.gain_db, b.mute))
        return cls(tuple(mixer.stem_names), tuple(mixer.bus_names), tuple(buses))

    @classmethod
    def from_gains(cls, stems: Sequence[str], buses: Sequence[str], gains: np.ndarray) -> "MixerState":
        """A state that plays ``gains`` (buses, stems; linear) with the stems' gains alone."""
        return cls(tuple(stems), tuple(buses), tuple(
            BusState(tuple(StemState(20.0 * math.log10(g) if g > 0 else -math.inf) for g in gains[b]))
            for b in range(len(buses))))

    # ------------------------------------------------------------------ changing one (a new value)
    def _index(self, bus: str | None, stem: str | None = None) -> tuple[int, int | None]:
        b = 0 if bus is None else self._bus_index(bus)
        if stem is None:
            return b, None
        try:
            return b, self.stem_names.index(stem)
        except ValueError:
            raise KeyError(f"no stem {stem!r}; stems: {', '.join(self.stem_names)}") from None

    def _bus_index(self, bus: str) -> int:
        try:
            return self.bus_names.index(bus)
        except ValueError:
            raise KeyError(f"no bus {bus!r}; buses: {', '.join(self.bus_names)}") from None

    def with_stem(self, stem: str, bus: str | None = None, **controls) -> "MixerState":
        """This state with ``stem`` on ``bus`` (default: the first) changed: ``gain_db``, ``fader``, ``mute``,
        ``solo``, each through the mixer's rule (a ValueError says what the control accepts)."""
        b, s = self._index(bus, stem)
        values = _checked(controls, ("gain_db", "fader", "mute", "solo"))
        stems = list(self.buses[b].stems)
        stems[s] = replace(stems[s], **values)
        return self._with_bus(b, replace(self.buses[b], stems=tuple(stems)))

    def with_bus(self, bus: str, **controls) -> "MixerState":
        """This state with ``bus``'s master changed (``gain_db``, ``fader``, ``mute``)."""
        b = self._bus_index(bus)
        return self._with_bus(b, replace(self.buses[b], **_checked(controls, ("gain_db", "fader", "mute"))))

    def _with_bus(self, b: int, state: BusState) -> "MixerState":
        buses = list(self.buses)
        buses[b] = state
        return replace(self, buses=tuple(buses))

    # ------------------------------------------------------------------ reading and applying
    def stem(self, stem: str, bus: str | None = None) -> StemState:
        b, s = self._index(bus, stem)
        return self.buses[b].stems[s]

    def bus(self, bus: str) -> BusState:
        return self.buses[self._bus_index(bus)]

    def audible(self) -> np.ndarray:
        """(buses, stems) linear gain each stem is heard at."""
        return np.array([b.audible() for b in self.buses], np.float64).reshape(len(self.bus_names),
                                                                                 len(self.stem_names))

    def apply(self, mixer: StemMixer) -> None:
        """Set this state on ``mixer``, touching only what differs, as one change (``StemMixer.batch``)."""
        if tuple(mixer.stem_names) != self.stem_names or tuple(mixer.bus_names) != self.bus_names:
            raise ValueError(f"a state of stems {list(self.stem_names)} and buses {list(self.bus_names)} does not fit "
                             f"a mixer of stems {mixer.stem_names} and buses {mixer.bus_names}")
        with mixer.batch():
            for name, bs in zip(self.bus_names, self.buses):
                b = mixer.buses[name]
                _set_changed(b, bs, ("gain_db", "mute"))
                for stem, ss in zip(self.stem_names, bs.stems):
                    _set_changed(b.stems[stem], ss, ("gain_db", "mute", "solo"))


def _set_changed(control, state, attrs: tuple[str, ...]) -> None:
    """Set each of ``attrs`` of ``control`` (through its setter, its rule) only where ``state`` differs."""
    for attr in attrs:
        value = getattr(state, attr)
        if getattr(control, attr) != value:
            setattr(control, attr, value)

def _checked(controls: dict, allowed: tuple[str, ...]) -> dict:
    out = {}
    for key, value in controls.items():
        if key not in allowed:
            raise ValueError(f"unknown control {key!r}; expected one of {', '.join(allowed)}")
        value = RULES[key](value)
        if key == "fader":
            key, value = "gain_db", fader_to_db(value)
        out[key] = value
    return out
