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
from .errors import (AudioError, CheckpointError, ConfigError, SettingsError, StemstreamError,
                     WorkerError)
from .inference.demix import demix, demix_tta
from .inference.loader import LoadedModel, load_model
from .models.roformer import BSRoformer, MelBandRoformer
from .msst.build import build_model
from .msst.checkpoint import load_checkpoint, read_state_dict
from .msst.config import Config, load_config
from .stream.engine import StreamEngine
from .stream.settings import PRESETS, StreamSettings, preset_settings

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
    "preset_settings",
    "read_state_dict",
]
