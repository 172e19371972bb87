"""stemstream's user side: everything facing a user or another program.

* ``bridge.plugin``: ``StemSeparator`` (pedalboard's plugin contract), ``Chain``, the channel-layout
  rule, rig files;
* ``bridge.mix``: the stem mixer (buses, fader law, mute/solo, meters) and per-stem effect chains;
* ``bridge.live``: live audio (devices, the callback path, recording, the terminal mixer, sessions);
* ``bridge.control``: ``OSCControl``, OSC remote control with meters and state feedback;
* ``bridge.cli``: the ``stemstream`` command.

Imports run one way: ``bridge`` uses ``streamer``, never the reverse.
"""
import importlib

# the public names, imported on first use (PEP 562), so that a process that needs only a light part
# (the terminal mixer's process, `stemstream devices`) does not load torch
_PUBLIC = {"Chain": ".plugin.chain", "StemMixer": ".mix.mixer", "StemSeparator": ".plugin.separator",
           "OSCControl": ".control.server"}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
