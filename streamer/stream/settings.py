"""The engine's settings: window, hop, look-ahead and crossfade, validated once; the latency presets;
and THE latency formula.

Timing model: every ``hop`` samples the model runs over the ``window`` samples that end
``lookahead`` samples after the hop region they finalise. A sample waits at most one hop for its
region's window to be complete, plus the look-ahead, so

    latency = look-ahead + hop (algorithmic) + compute allowance (processing, real-time mode only)

Everything that reports or plans a latency (the engine, evaluation, the CLI) takes it from here.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from ..errors import SettingsError

if TYPE_CHECKING:  # a type only: settings are computed from a config's numbers
    from ..msst.config import Config

MSST_CROSSFADE = "msst"


def check_lengths(window: int, hop: int, lookahead: int) -> None:
    """Window and hop >= 1, look-ahead >= 0, and the hop region plus its look-ahead inside the window."""
    if window < 1 or hop < 1 or lookahead < 0:
        raise SettingsError(f"window and hop must be >= 1 and lookahead >= 0 samples, got window={window}, "
                            f"hop={hop}, lookahead={lookahead}")
    if hop > window:
        raise SettingsError(f"hop ({hop}) cannot be longer than the window ({window})")
    if lookahead + hop > window:
        raise SettingsError(f"lookahead + hop ({lookahead} + {hop}) cannot exceed the window ({window}): the window "
                            "must hold the hop region and its look-ahead")


def check_crossfade(window: int, hop: int, lookahead: int, crossfade: int | str) -> None:
    """``"msst"`` needs lookahead = window - hop; a crossfade in samples fits in the look-ahead and the hop."""
    if crossfade == MSST_CROSSFADE:
        if lookahead != window - hop:
            raise SettingsError(f'crossfade="msst" needs lookahead = window - hop = {window - hop}, got {lookahead}')
        return
    if not _whole(crossfade):
        raise SettingsError(f"crossfade must be a whole number of samples or 'msst', got {crossfade!r}")
    x = int(crossfade)
    if x < 0:
        raise SettingsError(f"crossfade must be >= 0 samples or 'msst', got {crossfade}")
    if x > lookahead:
        raise SettingsError(f"crossfade ({x} samples) cannot be longer than the look-ahead ({lookahead}): the "
                            "fade-out of each window lies in its look-ahead")
    if x > hop:
        raise SettingsError(f"crossfade ({x} samples) cannot be longer than the hop ({hop})")


def _whole(value) -> bool:
    """An integer, or a float with an integer value (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    return math.isfinite(value) and int(value) == value


def default_crossfade(hop: int, lookahead: int, sample_rate: int) -> int:
    """10 ms, or less when the hop or the look-ahead is shorter (the crossfade must fit in both)."""
    return min(lookahead, hop, int(0.01 * sample_rate))


@dataclass(frozen=True)
class StreamSettings:
    """Window, hop and look-ahead in samples, and the crossfade (samples or "msst"); always valid."""

    window: int
    hop: int
    lookahead: int
    crossfade: int | str

    def __post_init__(self) -> None:
        for name in ("window", "hop", "lookahead"):
            value = getattr(self, name)
            if not _whole(value):
                raise SettingsError(f"{name} must be a whole number of samples, got {value!r}")
            object.__setattr__(self, name, int(value))
        if self.crossfade != MSST_CROSSFADE and _whole(self.crossfade):
            object.__setattr__(self, "crossfade", int(self.crossfade))
        check_lengths(self.window, self.hop, self.lookahead)
        check_crossfade(self.window, self.hop, self.lookahead, self.crossfade)

    @classmethod
    def make(cls, window: int, hop: int, lookahead: int, crossfade: int | str | None, sample_rate: int,
             ) -> "StreamSettings":
        """Settings from lengths in samples; ``crossfade=None`` takes :func:`default_crossfade`."""
        window, hop, lookahead = int(window), int(hop), int(lookahead)
        if crossfade is None:  # the lengths are checked (first) by __post_init__
            crossfade = default_crossfade(hop, lookahead, sample_rate)
        return cls(window, hop, lookahead, crossfade)

    # ------------------------------------------------------------------ THE latency formula
    @property
    def algorithmic_latency(self) -> int:
        """Look-ahead + hop: what the windowing itself costs, whatever the machine."""
        return self.lookahead + self.hop

    @property
    def default_allowance(self) -> int:
        """The compute allowance real-time mode gives each window unless told otherwise: one hop."""
        return self.hop

    def latency(self, compute_allowance: int = 0) -> int:
        """Total latency in samples with the given compute allowance (0 inline)."""
        return self.algorithmic_latency + compute_allowance

    @property
    def live_latency(self) -> int:
        """The latency of a live (real-time) run with the default allowance."""
        return self.latency(self.default_allowance)

    def latency_parts(self, compute_allowance: int = 0) -> dict[str, int]:
        """Latency in samples, by cause: look-ahead + hop is algorithmic, the allowance is processing."""
        return {"lookahead": self.lookahead, "hop": self.hop, "compute": compute_allowance,
                "algorithmic": self.algorithmic_latency, "processing": compute_allowance,
                "total": self.latency(compute_allowance)}

    def describe(self, sample_rate: int) -> str:
        ms = lambda n: f"{1000 * n / sample_rate:.0f} ms"  # noqa: E731
        fade = self.crossfade if self.crossfade == MSST_CROSSFADE else ms(self.crossfade)
        return (f"window {ms(self.window)}, hop {ms(self.hop)}, look-ahead {ms(self.lookahead)}, "
                f"crossfade {fade}")


# ---------------------------------------------------------------------------------------------- presets

def _round_to(n: float, multiple: int) -> int:
    return max(multiple, int(round(n / multiple)) * multiple)


def _offline_exact(chunk: int, num_overlap: int, stft_hop: int, rate: int) -> StreamSettings:
    hop = chunk // num_overlap
    return StreamSettings(chunk, hop, chunk - hop, MSST_CROSSFADE)


def _balanced(chunk: int, num_overlap: int, stft_hop: int, rate: int) -> StreamSettings:
    hop = _round_to(chunk / 8, stft_hop)
    return StreamSettings(chunk, hop, 2 * hop, min(hop, int(0.02 * rate)))


def _low(chunk: int, num_overlap: int, stft_hop: int, rate: int) -> StreamSettings:
    hop = _round_to(chunk / 16, stft_hop)
    return StreamSettings(chunk, hop, hop, min(hop, int(0.01 * rate)))


# name -> (settings from the model's chunk, one line for help texts)
PRESET_TABLE: dict[str, tuple[Callable[[int, int, int, int], StreamSettings], str]] = {
    "offline-exact": (_offline_exact, "window = chunk, hop = chunk / num_overlap, MSST fades: equals offline "
                                      "separation (latency = chunk)"),
    "balanced": (_balanced, "window = chunk, hop = chunk / 8, look-ahead 2 hops, 20 ms crossfade"),
    "low": (_low, "window = chunk, hop = chunk / 16, look-ahead 1 hop, 10 ms crossfade"),
}
PRESETS = tuple(PRESET_TABLE)
DEFAULT_PRESET = "balanced"


def preset_settings(name: str, config: "Config") -> StreamSettings:
    """Engine settings for a latency preset, relative to the model's trained chunk.

    ``offline-exact``: window = chunk, hop = chunk // num_overlap, look-ahead = window - hop and
    MSST's fades: the stream equals offline ``demix`` (latency = chunk).
    ``balanced``: window = chunk, hop = chunk / 8, look-ahead = 2 hops, 20 ms crossfade
    (latency 3 hops + allowance, 3/8 of the chunk).
    ``low``: window = chunk, hop = chunk / 16, look-ahead = 1 hop, 10 ms crossfade
    (latency 2 hops + allowance, 1/8 of the chunk); needs 16 windows per chunk of audio.
    Hops are rounded to the model's STFT hop.
    """
    if name not in PRESET_TABLE:
        raise SettingsError(f"unknown latency preset {name!r}; choose one of {', '.join(PRESETS)}")
    make, _ = PRESET_TABLE[name]
    return make(config.chunk_size, config.num_overlap, config.stft_hop, config.sample_rate)


def check_seconds(name: str, value: float, minimum: float = 0.0, maximum: float | None = None,
                  unit: str = "s") -> float:
    """A length a user gave (``unit`` "s" or "ms"): a finite number from ``minimum`` to ``maximum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise SettingsError(f"{name} must be a finite number of {'seconds' if unit == 's' else 'milliseconds'}, "
                            f"got {value!r}")
    if value < minimum:
        raise SettingsError(f"{name} must be >= {minimum:g} {unit}, got {value:g}")
    if maximum is not None and value > maximum:
        raise SettingsError(f"{name} {value:g} {unit} is beyond the limit of {maximum:g} {unit}")
    return float(value)


def seconds_to_samples(name: str, seconds: float, sample_rate: int, minimum: float = 0.0) -> int:
    """A length given in seconds (CLI, rig files) in samples; negative or non-finite values are refused."""
    return int(round(check_seconds(name, seconds, minimum) * sample_rate))


@dataclass(frozen=True)
class WorkerSettings:
    """Everything the inference worker needs, typed and frozen (it crosses into a worker process)."""

    stream: StreamSettings
    device: str
    precision: str
    channels: int
    model_stems: int        # outputs of the model
    stems_out: int          # stems the engine outputs (the residual may be an extra one)
    residual: int           # index of the residual stem, -1 for none, -2 spread (streamer.inference.residual)
    threads: int            # torch threads of a worker process
    allowance: int          # samples between a window's input arriving and its region playing
    cuda_graph: bool | None = None  # replay windows as a CUDA graph (None: streamer.inference.graphs' default)
    backend: str = "torch"          # torch | onnx | auto (see streamer.inference.runner.make_runner)
