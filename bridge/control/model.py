"""The control model: everything of a separator that can be controlled, independent of any surface.

One :class:`ControlModel` per separator (``ControlModel.of(separator)``) holds what every control surface
needs: the terminal mixer, OSC (:mod:`bridge.control.server`), MIDI (:mod:`bridge.midi`) and the browser
mixer all act through it, so they behave the same:

* **names**: the OSC address scheme (:mod:`bridge.control.addresses`: ``/stem/<stem>/fader``,
  ``/bus/<bus>/stem/<stem>/mute``, ``/bus/<bus>/gain``, ``/stem/<stem>/fx/<i>/<param>``,
  ``/scene/<name>``, ``/engine/bypass``, ``/engine/reset``) is the model's naming, whatever the surface;
* **values**: each value's rule is the mixer's (:data:`bridge.mix.mixer.RULES`), the same from Python,
  rig files, CLI flags and every surface;
* **state**: :meth:`state` is the whole mixer as one typed value (:class:`bridge.mix.state.MixerState`),
  :meth:`apply_state` sets one;
* **scenes**: the separator's one :class:`~bridge.mix.scenes.SceneRecaller`; a change from any surface
  takes over from a running fade (it stops where it is, then the change is applied);
* **changes**: :meth:`add_listener` calls a function after every change, whoever made it (a surface,
  Python, a scene's fade), so surfaces send feedback without polling;
* **status**: :meth:`status` is one typed value (:class:`Status`): the engine's numbers, what the
  host (a live session) adds, and every surface's counters under its label.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from bridge.mix.mixer import Listeners
from bridge.mix.state import MixerState
from streamer.errors import SettingsError

from .addresses import AddressSpace, ControlError, Endpoint

NOT_QUERIES = ("/engine/reset",)


@dataclass
class Status:
    """What a separator reports, typed (``/engine/status`` answers :meth:`values`).

    ``latency_ms``: input to output; ``realtime_factor``: each window's compute over the hop (-1 before the
    first); ``deadline_misses``: windows that came too late (the dry input played); ``xruns``, ``seconds``:
    a live session's device overruns and audio played (None outside one); ``surfaces``: each control
    surface's counters by its label (``{"osc": {"messages": 12, "errors": 0, ...}, "midi": {...}}``)."""

    latency_ms: float
    realtime_factor: float
    deadline_misses: int
    model: str
    bypass: bool
    xruns: int | None = None
    seconds: float | None = None
    surfaces: dict[str, dict[str, int]] = field(default_factory=dict)

    def values(self) -> dict[str, Any]:
        """Flat ``name -> number or text``, as ``/engine/status/<name>`` answers them."""
        out: dict[str, Any] = {"latency_ms": float(self.latency_ms), "realtime_factor": float(self.realtime_factor),
                               "deadline_misses": int(self.deadline_misses)}
        if self.xruns is not None:
            out["xruns"] = int(self.xruns)
        if self.seconds is not None:
            out["seconds"] = float(self.seconds)
        out["model"] = self.model
        out["bypass"] = int(self.bypass)
        for label, counters in self.surfaces.items():
            for name, value in counters.items():
                out[name if name.startswith(f"{label}_") or name == "subscribers" else f"{label}_{name}"] = value
        return out


class ControlModel:
    """The control model of ``separator`` (see the module docstring). Make it with :meth:`of`, so that
    every surface of one separator shares one model (one recaller, one set of listeners)."""

    def __init__(self, separator):
        self.sep = separator
        self.mixer = separator.mixer
        self.recaller = separator.recaller
        self._announce = Listeners()
        self._host_status: Callable[[], dict] | None = None
        self._surfaces: dict[str, Callable[[], dict[str, int]]] = {}
        self.space = AddressSpace(separator, {
            "get_bypass": lambda: self.mixer.bypass, "set_bypass": self._set_bypass,
            "reset": separator.request_reset, "recall": self.recall, "scenes": lambda: list(self.recaller.scenes),
        })
        self.mixer.add_listener(self._announce)

    @classmethod
    def of(cls, separator) -> "ControlModel":
        """The separator's model, made on first use."""
        model = getattr(separator, "_control_model", None)
        if model is None:
            model = cls(separator)
            separator._control_model = model
        return model

    # ------------------------------------------------------------------ names
    @property
    def addresses(self) -> list[str]:
        return list(self.space.addresses)

    def match(self, address: str) -> list[Endpoint]:
        """The endpoints an address or OSC pattern names (empty when none)."""
        return self.space.match(address)

    def refresh(self) -> None:
        """Rebuild the names (after effect chains or scenes changed)."""
        self.space.refresh()

    # ------------------------------------------------------------------ reading
    def get(self, address: str) -> Any:
        """The value at one address (mute/solo/bypass as int 0/1, gains and faders as float)."""
        eps = self.space.match(address)
        if len(eps) != 1 or eps[0].get is None:
            raise ControlError(f"{address}: not one readable control")
        return eps[0].get()

    def query(self, address: str) -> list[tuple[str, Any]]:
        """``(address, value)`` of every readable control an address or pattern names."""
        return [(ep.address, ep.get()) for ep in self.space.match(address) if ep.get is not None]

    def state(self) -> MixerState:
        return MixerState.snapshot(self.mixer)

    # ------------------------------------------------------------------ changing
    def set(self, address: str, *args) -> int:
        """Set every control an address or pattern names from ``args`` (as a message carries them), as one
        change; returns how many were set. A running scene fade is taken over first, unless this recalls
        a scene. Raises :class:`ControlError` (a ``SettingsError``) saying what is wrong."""
        eps = self.space.match(address)
        if not eps:
            raise ControlError(f"{address}: no such address (stems: {', '.join(self.mixer.stem_names)}; buses: "
                               f"{', '.join(self.mixer.bus_names)}; scenes: {', '.join(self.recaller.scenes) or 'none'})")
        settable = [ep for ep in eps if ep.set is not None]
        if not settable:
            raise ControlError(f"{address}: answers queries only")
        return self.set_endpoints(settable, args)

    def set_endpoints(self, endpoints: list[Endpoint], args) -> int:
        """Set ``endpoints`` (settable ones, as :meth:`match` found them) from ``args`` as one change: a
        running scene fade is taken over first unless they recall a scene; effect parameters, which the
        mixer does not announce, are announced here. Every surface's writes come through here."""
        if not all(ep.address.startswith("/scene/") for ep in endpoints):
            self.take_over()
        with self.mixer.batch():
            for ep in endpoints:
                ep.set(tuple(args))
        if any("/fx/" in ep.address for ep in endpoints):
            self._announce()
        return len(endpoints)

    def apply_state(self, state: MixerState) -> None:
        """Set a whole mixer state (only what differs, as one change), taking over from a fade."""
        self.take_over()
        state.apply(self.mixer)

    def recall(self, name: str, seconds: float = 0.0) -> None:
        """Recall a scene (with a fade of ``seconds``); replaces a running fade."""
        self.recaller.recall(name, seconds)

    @property
    def scenes(self) -> list[str]:
        return list(self.recaller.scenes)

    def take_over(self) -> None:
        """Stop a running scene fade where it is (a change from a surface follows)."""
        if self.recaller.fading:
            self.recaller.cancel()
            self.recaller.taken_over += 1

    def _set_bypass(self, on: bool) -> None:
        self.mixer.bypass = on

    # ------------------------------------------------------------------ change notification
    def add_listener(self, fn: Callable[[], None]) -> None:
        """Call ``fn()`` after every change, whoever made it; on the changing thread: quick, never blocking
        (set an event), and never from the audio callback."""
        self._announce.add(fn)

    def remove_listener(self, fn: Callable[[], None]) -> None:
        self._announce.remove(fn)

    def announce(self) -> None:
        """Tell every listener that something changed that the mixer does not announce (an effect
        parameter set by a surface without :meth:`set`)."""
        self._announce()

    # ------------------------------------------------------------------ status
    def set_host_status(self, fn: Callable[[], Any] | None) -> None:
        """What the host adds to the status: ``fn()`` gives a typed value with ``latency_ms``, ``seconds``,
        ``input_overflows`` and ``output_underflows`` attributes (a live session's
        :class:`bridge.live.status.LiveStatus`), or a mapping of those names."""
        self._host_status = fn

    def add_surface(self, label: str, counters: Callable[[], dict[str, int]]) -> None:
        """A surface's counters, shown in the status under ``label`` (``osc``, ``midi``, ``web``)."""
        self._surfaces[label] = counters

    def remove_surface(self, label: str) -> None:
        self._surfaces.pop(label, None)

    def status(self) -> Status:
        st = self.sep.engine.stats
        extra = self._host_status() if self._host_status is not None else None
        host = (extra.get if isinstance(extra, Mapping) else
                (lambda name, e=extra: getattr(e, name, None)))
        rtf = st["realtime_factor"]
        config = getattr(self.sep, "config", None)
        path = getattr(config, "path", None)
        xruns = None
        if host("input_overflows") is not None:
            xruns = int(host("input_overflows")) + int(host("output_underflows") or 0)
        latency_ms, seconds = host("latency_ms"), host("seconds")
        surfaces = {}
        for label, fn in list(self._surfaces.items()):
            try:
                surfaces[label] = dict(fn())
            except Exception:  # noqa: BLE001 - a surface that cannot say is left out
                continue
        return Status(latency_ms=float(st["latency_ms"] if latency_ms is None else latency_ms),
                      realtime_factor=float(rtf) if math.isfinite(rtf) else -1.0,
                      deadline_misses=int(st["deadline_misses"]),
                      model=os.path.basename(path) if path else type(self.sep.engine.model).__name__,
                      bypass=bool(self.mixer.bypass), xruns=xruns,
                      seconds=None if seconds is None else float(seconds), surfaces=surfaces)


__all__ = ["ControlModel", "ControlError", "Status", "SettingsError"]
