"""Loading a model in one call: config + checkpoint + device + precision.

The command line, ``bridge.StemSeparator`` and rig files all load models through :func:`load_model`,
so a model is found, checked, placed and given its precision the same way everywhere.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from ..errors import SettingsError
from ..msst.build import build_model
from ..msst.checkpoint import load_checkpoint
from ..msst.config import Config, load_config
from .precision import resolve_device, resolve_precision


@dataclass
class LoadedModel:
    """A model ready to run, with the config it came from and where and how it runs."""

    config: Config
    model: torch.nn.Module
    device: torch.device
    precision: str
    checkpoint: str | None = None

    @property
    def trained(self) -> bool:
        """False when no checkpoint was loaded (random weights)."""
        return self.checkpoint is not None

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


def load_model(config: Config | str | os.PathLike, checkpoint: str | os.PathLike | None = None, *,
               device: str | torch.device | None = None, precision: str | None = "auto", trust: bool = False,
               model_type: str | None = None, seed: int | None = None) -> LoadedModel:
    """Build the model of ``config`` (a :class:`Config` or the path of an MSST YAML), load ``checkpoint``
    (random weights without one), move it to ``device`` and resolve its precision.

    ``device``: None keeps the model on the CPU (engines move it where they run it), ``"auto"`` picks
    CUDA when present. ``precision``: ``auto``/fp32/bf16/fp16, resolved for the device with the config's
    ``use_amp``. ``trust``: allow a pickled checkpoint to run code while loading (only the person
    running the program may opt in, never a file). ``seed``: seeds torch before the random
    initialisation, so random-weight models are reproducible.
    """
    if not isinstance(trust, bool):  # a string such as "false" from a file must never mean trust
        raise SettingsError(f"trust must be True or False, got {trust!r}")
    if not isinstance(config, Config):
        config = load_config(config, model_type=model_type)
    where = resolve_device(device if device is not None else "cpu")
    if seed is not None:
        torch.manual_seed(seed)
    model = build_model(config)
    path = None
    if checkpoint is not None:
        path = os.fspath(checkpoint)
        load_checkpoint(model, path, trust=trust)
    model = model.to(where)
    return LoadedModel(config, model, where, resolve_precision(precision, where, config.use_amp), path)
