"""stemstream's user side: pedalboard-compatible separator, stem mixer, chains, command line."""
from .chain import Chain
from .mixer import StemMixer
from .separator import StemSeparator

__all__ = ["Chain", "StemMixer", "StemSeparator"]
