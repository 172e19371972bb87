"""stemstream's model side: Roformer models, MSST configs and checkpoints, offline separation."""
from .build import build_model
from .checkpoint import load_checkpoint, read_state_dict
from .config import Config, load_config
from .demix import demix, demix_tta
from .engine import PRESETS, StreamEngine, StreamSettings, preset_settings
from .errors import AudioError, CheckpointError, ConfigError, StemstreamError
from .roformer import BSRoformer, MelBandRoformer

__all__ = [
    "AudioError",
    "BSRoformer",
    "CheckpointError",
    "Config",
    "ConfigError",
    "MelBandRoformer",
    "PRESETS",
    "StemstreamError",
    "StreamEngine",
    "StreamSettings",
    "build_model",
    "demix",
    "demix_tta",
    "load_checkpoint",
    "load_config",
    "preset_settings",
    "read_state_dict",
]
