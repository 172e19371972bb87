"""Exceptions raised by stemstream. Each carries a message meant to be shown to the user as is."""


class StemstreamError(Exception):
    """Base class: a problem with the user's input, reported as one clear line."""


class ConfigError(StemstreamError, ValueError):
    """A model/YAML configuration that cannot be used."""


class CheckpointError(StemstreamError):
    """A checkpoint that cannot be read or does not fit the model."""


class AudioError(StemstreamError):
    """Audio that cannot be read, written or processed."""
