"""Scenes: named, complete mixer states, recalled at once or with a fade.

A scene lists the controls it changes; everything it does not list is at unity (0 dB, not muted,
not soloed), so ``full: {}`` is "everything back". In a rig file (``scenes:``), a stem's controls
apply to the first bus, and ``buses:`` holds other buses' (and bus masters'):

```yaml
scenes:
  karaoke: {vocals: {mute: true}}
  full: {}
  guide: {vocals: {gain_db: -12}, buses: {monitor: {vocals: {gain_db: -6}, gain_db: -3}}}
```

Recalled with a fade of ``seconds``, every stem's audible gain on every bus (mute, solo and the bus
master folded in) moves linearly in amplitude from what it is to what the scene makes it, in steps
of ``FADE_STEP`` seconds that the mixer's own ramp smooths; at the end the scene's exact controls are
set, which sound the same as the fade's last step. Recalling again (or ``cancel``) stops a running
fade where it is. Every step reaches the audio side as one change (``StemMixer.batch``).
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streamer.errors import SettingsError

from .mixer import StemMixer, db_to_gain, fader_to_db

FADE_STEP = 0.02          # s between the fade's steps
MAX_FADE_SECONDS = 600.0


@dataclass
class Scene:
    """Controls by bus: ``{bus: {"gain_db": .., "mute": .., "stems": {stem: {gain_db, mute, solo}}}}``,
    only what the scene sets (the rest is unity)."""

    name: str
    buses: dict[str, dict[str, Any]] = field(default_factory=dict)

    def full_state(self, mixer: StemMixer) -> dict[str, dict[str, Any]]:
        """Every control of ``mixer`` as this scene has it."""
        out = {}
        for bus in mixer.bus_names:
            given = self.buses.get(bus, {})
            stems = {}
            for stem in mixer.stem_names:
                c = {"gain_db": 0.0, "mute": False, "solo": False}
                c.update(given.get("stems", {}).get(stem, {}))
                if "fader" in c:
                    c["gain_db"] = fader_to_db(c.pop("fader"))
                stems[stem] = c
            gain = given.get("gain_db", 0.0)
            if "fader" in given:
                gain = fader_to_db(given["fader"])
            out[bus] = {"gain_db": gain, "mute": bool(given.get("mute", False)), "stems": stems}
        return out


def audible_gains(state: dict[str, dict[str, Any]], mixer: StemMixer) -> np.ndarray:
    """(buses, stems) linear gain each stem is heard at, for a full state (as ``Bus.targets``)."""
    out = np.zeros((len(mixer.bus_names), len(mixer.stem_names)), np.float64)
    for b, bus in enumerate(mixer.bus_names):
        s = state[bus]
        soloing = any(c["solo"] for c in s["stems"].values())
        master = 0.0 if s["mute"] else db_to_gain(s["gain_db"])
        for i, stem in enumerate(mixer.stem_names):
            c = s["stems"][stem]
            audible = not c["mute"] and (not soloing or c["solo"])
            out[b, i] = db_to_gain(c["gain_db"]) * master if audible else 0.0
    return out


def current_state(mixer: StemMixer) -> dict[str, dict[str, Any]]:
    return {bus: {"gain_db": mixer.buses[bus].gain_db, "mute": mixer.buses[bus].mute,
                  "stems": {s: {"gain_db": c.gain_db, "mute": c.mute, "solo": c.solo}
                            for s, c in mixer.buses[bus].stems.items()}}
            for bus in mixer.bus_names}


def apply_state(mixer: StemMixer, state: dict[str, dict[str, Any]]) -> None:
    """Set a full state on ``mixer`` as one change."""
    with mixer.batch():
        for bus, s in state.items():
            b = mixer.buses[bus]
            b.gain_db = s["gain_db"]
            b.mute = s["mute"]
            for stem, c in s["stems"].items():
                control = b.stems[stem]
                control.gain_db = c["gain_db"]
                control.mute = c["mute"]
                control.solo = c["solo"]


def _gain_state(mixer: StemMixer, gains: np.ndarray) -> dict[str, dict[str, Any]]:
    """A state that plays ``gains`` (buses, stems) with stem gains alone."""
    return {bus: {"gain_db": 0.0, "mute": False,
                  "stems": {stem: {"gain_db": 20.0 * math.log10(g) if g > 0 else -math.inf, "mute": False,
                                   "solo": False}
                            for stem, g in zip(mixer.stem_names, gains[b])}}
            for b, bus in enumerate(mixer.bus_names)}


class SceneRecaller:
    """Recalls scenes on a mixer, with fades on a thread of its own (one fade at a time)."""

    def __init__(self, mixer: StemMixer, scenes: dict[str, Scene] | None = None):
        self.mixer = mixer
        self.scenes = dict(scenes or {})
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self.current: str | None = None

    def recall(self, name: str, seconds: float = 0.0) -> None:
        if name not in self.scenes:
            known = ", ".join(self.scenes) or "none defined"
            raise SettingsError(f"no scene {name!r}; scenes: {known}")
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds) \
                or seconds < 0 or seconds > MAX_FADE_SECONDS:
            raise SettingsError(f"scene fade must be 0 to {MAX_FADE_SECONDS:g} seconds, got {seconds!r}")
        self.cancel()
        target = self.scenes[name].full_state(self.mixer)
        self.current = name
        if seconds <= FADE_STEP:
            apply_state(self.mixer, target)
            return
        start = audible_gains(current_state(self.mixer), self.mixer)
        end = audible_gains(target, self.mixer)
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._fade, args=(start, end, target, float(seconds), self._cancel),
                                        name="stemstream-scene-fade", daemon=True)
        self._thread.start()

    def _fade(self, start, end, target, seconds: float, cancel: threading.Event) -> None:
        steps = max(1, int(round(seconds / FADE_STEP)))
        for k in range(1, steps + 1):
            if cancel.wait(FADE_STEP):
                return
            if k < steps:
                apply_state(self.mixer, _gain_state(self.mixer, start + (end - start) * (k / steps)))
        apply_state(self.mixer, target)

    @property
    def fading(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def cancel(self) -> None:
        """Stop a running fade where it is."""
        self._cancel.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(1.0)
        self._thread = None
