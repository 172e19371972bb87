"""Exceptions raised by stemstream. Each carries a message meant to be shown to the user as is.

Every error a user can cause (a bad file, config, checkpoint, setting or rig) is a
:class:`StemstreamError`; the command line turns each into one ``error:`` line. Subclasses that
stand for a bad value also subclass ``ValueError`` (and a wrong audio dtype ``TypeError``), so
Python callers that catch the built-in types keep working.
"""


class StemstreamError(Exception):
    """Base class: a problem with the user's input, reported as one clear line."""


class ConfigError(StemstreamError, ValueError):
    """A model/YAML configuration that cannot be used."""


class CheckpointError(StemstreamError):
    """A checkpoint that cannot be read or does not fit the model."""


class AudioError(StemstreamError, ValueError):
    """Audio that cannot be read, written or processed (a file, or a block of the wrong shape)."""


class AudioTypeError(AudioError, TypeError):
    """Audio of a sample type that cannot be processed (only float32 and float64 can)."""


class SettingsError(StemstreamError, ValueError):
    """Settings that cannot work together: engine lengths, latency presets, devices, precisions, controls."""


class WorkerError(StemstreamError, RuntimeError):
    """The inference worker could not start or stopped with an error."""
