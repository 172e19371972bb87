"""Control surfaces of a live session: OSC, MIDI, the browser mixer; each one a :class:`Surface`.

A surface has a ``label`` (what the terminal mixer's status, the summary and ``session.json`` show, e.g.
``"osc: udp://127.0.0.1:9000"``), ``start()`` (opens its ports; a mistake raises a ``SettingsError`` that
the CLI prints as one ``error:`` line), ``close()`` (idempotent) and ``counters()`` (``name -> int``: messages,
errors, drops; shown in ``/engine/status`` under the surface's short name). Every surface acts on the
separator's one control model (:class:`bridge.control.model.ControlModel`), so they behave the same.

``LiveSession.add_surface(surface)`` starts one at once (so that a port that cannot be opened is an
error before the show starts), registers its counters on the control model under its short name (the
label's part before ``:``, or its ``name`` attribute; a second one of a kind gets ``2`` added: ``midi2``) and closes it when the session ends; :class:`Surfaces`
is that list. :class:`OSCSurface` is OSC (:class:`bridge.control.server.OSCControl`) as a surface.
"""
from __future__ import annotations

import logging
from typing import Callable, Protocol, Sequence, runtime_checkable

log = logging.getLogger(__name__)


@runtime_checkable
class Surface(Protocol):
    """What the live session needs of a control surface (see the module docstring)."""

    label: str

    def start(self) -> None: ...

    def close(self) -> None: ...

    def counters(self) -> dict[str, int]: ...


def short_name(surface) -> str:
    """The surface's name in the status (``osc``, ``midi``): its ``name`` attribute, else its label up to ``:``."""
    name = getattr(surface, "name", None)
    if isinstance(name, str) and name:
        return name
    return str(surface.label).split(":", 1)[0].strip() or type(surface).__name__.lower()


class Surfaces:
    """The started surfaces of one session, in the order added: counters registered on the control model
    ``model`` (anything with ``add_surface(name, fn)``/``remove_surface(name)``), closed in reverse order."""

    def __init__(self, model):
        self.model = model
        self.items: list = []
        self.names: list[str] = []           # each surface's name in the status (unique: midi, midi2, ...)
        self.closed = False

    def add(self, surface):
        if self.closed:
            raise RuntimeError("the session has ended: no surface can be added")
        missing = [attr for attr in ("label", "start", "close", "counters") if not hasattr(surface, attr)]
        if missing:
            raise TypeError(f"{type(surface).__name__} is not a control surface: it has no {', '.join(missing)}")
        surface.start()                      # raises (a port that cannot be opened): nothing registered
        name, k = short_name(surface), 1
        while (name if k == 1 else f"{name}{k}") in self.names:   # two controllers: midi, midi2
            k += 1
        self.items.append(surface)
        self.names.append(name if k == 1 else f"{name}{k}")
        self.model.add_surface(self.names[-1], surface.counters)
        return surface

    @property
    def labels(self) -> list[str]:
        return [str(s.label) for s in self.items]

    def report(self) -> list[dict]:
        """``[{"label": ..., "counters": {...}}]`` of every surface (a surface that cannot say: no counters)."""
        out = []
        for s in self.items:
            try:
                counters = {str(k): int(v) for k, v in dict(s.counters()).items()}
            except Exception:  # noqa: BLE001 - informative only
                counters = {}
            out.append({"label": str(s.label), "counters": counters})
        return out

    def close(self) -> list[str | None]:
        """Close every surface, the last added first (the rest still close when one fails); returns, in the
        order added, None or what went wrong closing each, in words."""
        if self.closed:
            return [None] * len(self.items)
        self.closed = True
        failures: dict[int, str] = {}
        for i, s in reversed(list(enumerate(self.items))):
            try:
                self.model.remove_surface(self.names[i])
            except Exception:  # noqa: BLE001
                pass
            try:
                s.close()
            except Exception as exc:  # noqa: BLE001 - one surface's fault never keeps the others open
                failures[i] = f"closing {s.label} failed: {type(exc).__name__}: {exc}"
                log.warning("closing %s failed: %s", s.label, exc)
        return [failures.get(i) for i in range(len(self.items))]


class OSCSurface:
    """OSC control of a separator (:class:`bridge.control.server.OSCControl`) as a :class:`Surface`: the
    server starts (binds its port) in :meth:`start`. ``status``: the host's status function (the live
    session's), as ``OSCControl`` takes it."""

    name = "osc"

    def __init__(self, separator, port: int, host: str = "127.0.0.1", allow: Sequence[str] = (),
                 tcp: bool = False, status: Callable | None = None):
        self.sep = separator
        self.options = dict(port=port, host=host, allow=list(allow), tcp=tcp, status=status)
        self.control = None

    def start(self) -> None:
        if self.control is None:
            from bridge.control.server import OSCControl

            self.control = OSCControl(self.sep, **self.options)

    @property
    def endpoints(self) -> list[str]:
        return self.control.endpoints if self.control is not None else []

    @property
    def label(self) -> str:
        where = ", ".join(self.endpoints) or f"port {self.options['port']} (not started)"
        return f"osc: {where}"

    def counters(self) -> dict[str, int]:
        return self.control.surface_counters() if self.control is not None else {}

    def close(self) -> None:
        if self.control is not None:
            self.control.close()
