"""Turning a :class:`~streamer.msst.config.Config` into a model."""
from __future__ import annotations

import torch

from ..errors import ConfigError
from ..models.roformer import model_class
from .config import Config


def build_model(config: Config, device: str | torch.device | None = None) -> torch.nn.Module:
    """A randomly initialised model for ``config``, in eval mode (load weights with load_checkpoint)."""
    cls = model_class(config.model_type)
    try:
        if device is not None and str(device) == "meta":
            with torch.device("meta"):
                model = cls(**config.model)
        else:
            model = cls(**config.model)
            if device is not None:
                model = model.to(device)
    except (TypeError, ValueError, AssertionError) as exc:
        raise ConfigError(f"{config.path or 'config'}: cannot build {config.model_type}: {exc}") from exc
    model.audio_sample_rate = config.sample_rate  # the rate its audio must have (checked by StreamEngine)
    return model.eval()
