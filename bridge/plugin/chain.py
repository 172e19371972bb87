"""``Chain``: pedalboard's native plugins and stemstream's processors in one sequence.

Consecutive native plugins run together as one real ``pedalboard.Pedalboard``; our processors (any
object with pedalboard's ``process(input_array, sample_rate, buffer_size, reset)`` contract) run in
between. One-shot calls (``reset=True``) come out aligned with the input because every stage
compensates its own latency; streaming calls (``reset=False``) return fewer samples at first, as
pedalboard's latent plugins do, so concatenated outputs line up with the input. As inside a native
pedalboard chain, a latent stemstream stage passes its delayed output on at full length (its
``process_delayed``) and the chain withholds the total at its end, so the plugins after it always
get full blocks (a shorter first block would make pedalboard re-prepare them and lose their state).

Layout: like a native ``Pedalboard``, the chain decides each block's layout once, by pedalboard's rule
(``bridge.plugin.layout``, remembered across one-shot and streaming calls alike, forgotten by
``reset()``), and refuses an undecidable block before any stage runs. Every stage is called for every
block (empty blocks included), so each stage's own remembered layout stays in step with the chain's.
"""
from __future__ import annotations

import contextlib
from typing import Iterable

import numpy as np

from streamer.errors import AudioTypeError

from .layout import FIRST, MONO, ChannelLayout

_DTYPE_ERROR = "Pedalboard only supports 32-bit and 64-bit floating point audio for processing."


def _is_native(plugin) -> bool:
    try:
        import pedalboard
    except ImportError:  # pragma: no cover - pedalboard is a dependency
        return False
    return isinstance(plugin, pedalboard.Plugin)


class Chain:
    """A sequence of pedalboard plugins and stemstream processors with pedalboard's call contract."""

    is_effect = True
    is_instrument = False

    def __init__(self, plugins: Iterable):
        import pedalboard

        self.plugins = list(plugins)
        for p in self.plugins:
            if not (_is_native(p) or callable(getattr(p, "process", None))):
                raise TypeError(f"Chain takes pedalboard plugins or objects with process(), got {type(p).__name__}")
        self._stages: list = []
        group: list = []
        for p in self.plugins:
            if _is_native(p):
                group.append(p)
                continue
            if group:
                self._stages.append(pedalboard.Pedalboard(group))
                group = []
            self._stages.append(p)
        if group:
            self._stages.append(pedalboard.Pedalboard(group))
        self._emitted = 0
        self._layout = ChannelLayout()

    @property
    def reported_latency_samples(self) -> int:
        """Sum of the stages' reported latencies (built-in pedalboard plugins report none)."""
        total = 0
        for stage in self._stages:
            if hasattr(stage, "__iter__") and _is_native(stage):
                total += sum(int(getattr(p, "reported_latency_samples", 0) or 0) for p in stage)
            else:
                total += int(getattr(stage, "reported_latency_samples", 0) or 0)
        return total

    def reset(self) -> None:
        for stage in self._stages:
            stage.reset()
        self._emitted = 0
        self._layout.reset()

    def process(self, input_array, sample_rate: float, buffer_size: int = 8192, reset: bool = True) -> np.ndarray:
        x = np.asarray(input_array)
        if x.dtype not in (np.float32, np.float64):
            raise AudioTypeError(_DTYPE_ERROR)
        layout = self._layout.decide(x.shape)  # as pedalboard: decided (or refused) once for the whole chain
        if reset:
            self._emitted = 0
            for i, stage in enumerate(self._stages):
                with self._in_step(i, x.shape, layout, sample_rate, buffer_size, reset):
                    x = stage.process(x, sample_rate, buffer_size=buffer_size, reset=True)
            return np.asarray(x, np.float32)
        time_axis = 1 if layout == FIRST else 0
        delayed = 0
        for i, stage in enumerate(self._stages):
            with self._in_step(i, x.shape, layout, sample_rate, buffer_size, reset):
                if hasattr(stage, "process_delayed"):
                    x = stage.process_delayed(x, sample_rate, buffer_size=buffer_size)
                    delayed += int(stage.reported_latency_samples)
                else:
                    x = stage.process(x, sample_rate, buffer_size=buffer_size, reset=False)
        x = np.asarray(x, np.float32)
        n = x.shape[time_axis] if x.ndim > 1 else x.shape[0]
        withheld = max(0, delayed - self._emitted)
        self._emitted += n
        cut = min(withheld, n)
        if x.ndim == 1:
            return x[cut:]
        return x[:, cut:] if time_axis == 1 else x[cut:]

    @contextlib.contextmanager
    def _in_step(self, index: int, shape: tuple[int, ...], layout: str, sample_rate: float, buffer_size: int,
                 reset: bool):
        """Run stage ``index``; if it raises, show the later stages (which did not get the block) an empty
        block of the same layout and channel count, so that the layout and channel count each of them
        remembers stay those of the chain (as in a native Pedalboard, where only the chain decides), then
        raise the stage's error."""
        try:
            yield
        except Exception:
            channels = ChannelLayout.channel_count(shape, layout)
            if channels > 0:
                empty = np.zeros((0,) if layout == MONO else ((channels, 0) if layout == FIRST else (0, channels)),
                                 np.float32)
                for stage in self._stages[index + 1:]:
                    try:
                        if not reset and hasattr(stage, "process_delayed"):
                            stage.process_delayed(empty, sample_rate, buffer_size=buffer_size)
                        else:
                            stage.process(empty, sample_rate, buffer_size=buffer_size, reset=reset)
                    except Exception:  # noqa: BLE001 - the first stage's error is the one reported
                        break
            raise

    __call__ = process

    def __len__(self) -> int:
        return len(self.plugins)

    def __getitem__(self, i):
        return self.plugins[i]

    def __repr__(self) -> str:
        return f"Chain([{', '.join(type(p).__name__ for p in self.plugins)}])"
