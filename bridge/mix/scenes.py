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

from .mixer import StemMixer
from .state import MixerState

FADE_STEP = 0.02          # s between the fade's steps
MAX_FADE_SECONDS = 600.0


@dataclass
class Scene:
    """Controls by bus: ``{bus: {"gain_db": .., "mute": .., "stems": {stem: {gain_db, mute, solo}}}}``,
    only what the scene sets (the rest is unity)."""

    name: str
    buses: dict[str, dict[str, Any]] = field(default_factory=dict)

    def full_state(self, mixer: StemMixer) -> MixerState:
        """Every control of ``mixer`` as this scene has it."""
        state = MixerState.unity(mixer.stem_names, mixer.bus_names)
        for bus in mixer.bus_names:
            given = self.buses.get(bus, {})
            master = {k: v for k, v in given.items() if k in ("gain_db", "fader", "mute")}
            if master:
                state = state.with_bus(bus, **master)
            for stem, controls in given.get("stems", {}).items():
                state = state.with_stem(stem, bus, **controls)
        return state


def audible_gains(state: MixerState, mixer: StemMixer | None = None) -> np.ndarray:
    """(buses, stems) linear gain each stem is heard at (:meth:`MixerState.audible`)."""
    return state.audible()


def current_state(mixer: StemMixer) -> MixerState:
    return MixerState.snapshot(mixer)


def apply_state(mixer: StemMixer, state: MixerState) -> None:
    """Set a full state on ``mixer`` as one change."""
    state.apply(mixer)


class SceneRecaller:
    """Recalls scenes on a mixer, with fades on a thread of its own (one fade at a time).

    There is one per separator (``StemSeparator.recaller``), shared by every control surface, so two
    surfaces never run two fades that fight: recalling a scene from anywhere replaces the running
    fade, and any other change of the mixer (from OSC, MIDI, the terminal mixer, Python) takes over
    from it: the fade stops where it is and the change stays. Surfaces that go through
    ``bridge.control.model.ControlModel`` stop the fade before they apply (nothing is lost); a change
    made straight on the mixer stops it at its next step."""

    def __init__(self, mixer: StemMixer, scenes: dict[str, Scene] | None = None):
        self.mixer = mixer
        self.scenes = dict(scenes or {})
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self.current: str | None = None
        self.taken_over = 0               # fades stopped by a change from elsewhere
        mixer.add_listener(self._mixer_changed)

    def _mixer_changed(self) -> None:
        if self._thread is not None and threading.current_thread() is not self._thread and not self._cancel.is_set():
            self._cancel.set()            # a change from elsewhere: the fade stops where it is
            self.taken_over += 1

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
            target.apply(self.mixer)
            return
        start = MixerState.snapshot(self.mixer).audible()
        end = target.audible()
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._fade, args=(start, end, target, float(seconds), self._cancel),
                                        name="stemstream-scene-fade", daemon=True)
        self._thread.start()

    def _fade(self, start, end, target: MixerState, seconds: float, cancel: threading.Event) -> None:
        steps = max(1, int(round(seconds / FADE_STEP)))
        m = self.mixer
        for k in range(1, steps + 1):
            if cancel.wait(FADE_STEP):
                return
            state = target if k == steps else \
                MixerState.from_gains(m.stem_names, m.bus_names, start + (end - start) * (k / steps))
            state.apply(m)

    @property
    def fading(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def cancel(self) -> None:
        """Stop a running fade where it is (waits for a step being applied to finish)."""
        self._cancel.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(1.0)
        self._thread = None
