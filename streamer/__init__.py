"""stemstream's model side: Roformer models, the MSST format, offline and streaming separation.

Packages, one concern each (imports run down this list, never up; ``lab`` is tooling that runtime
code never imports):

* ``streamer.models``: BS-RoFormer and Mel-Band RoFormer in pure torch;
* ``streamer.msst``: MSST YAML configs, checkpoints, building a model from a config;
* ``streamer.inference``: device/precision rules, :func:`load_model`, the window runner, ``demix``;
* ``streamer.stream``: the real-time engine (settings, ring, kernels, overlap-add, worker, hosts);
* ``streamer.lab``: generated songs, training, metrics, evaluation, benchmarks;
* ``streamer.audio``, ``streamer.errors``, ``streamer.assets``: audio files, errors, bundled files.

This module is the public API; the names below are stable.
"""
import importlib

from .errors import (AudioError, CheckpointError, ConfigError, SettingsError, StemstreamError,
                     WorkerError)

# the rest of the public names are imported on first use (PEP 562): the errors and the light modules
# do not pull in torch for a process that does not need it (the terminal mixer's, `stemstream devices`)
_LAZY = {
    "demix": ".inference.demix", "demix_tta": ".inference.demix",
    "LoadedModel": ".inference.loader", "load_model": ".inference.loader", "make_runner": ".inference.runner",
    "BSRoformer": ".models.roformer", "MelBandRoformer": ".models.roformer",
    "build_model": ".msst.build",
    "load_checkpoint": ".msst.checkpoint", "read_state_dict": ".msst.checkpoint",
    "Config": ".msst.config", "load_config": ".msst.config",
    "StreamEngine": ".stream.engine",
    "PRESETS": ".stream.settings", "StreamSettings": ".stream.settings", "preset_settings": ".stream.settings",
}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "AudioError",
    "BSRoformer",
    "CheckpointError",
    "Config",
    "ConfigError",
    "LoadedModel",
    "MelBandRoformer",
    "PRESETS",
    "SettingsError",
    "StemstreamError",
    "StreamEngine",
    "StreamSettings",
    "WorkerError",
    "build_model",
    "demix",
    "demix_tta",
    "load_checkpoint",
    "load_config",
    "load_model",
    "make_runner",
    "preset_settings",
    "read_state_dict",
]
