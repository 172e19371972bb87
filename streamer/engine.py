"""The streaming engine: a Roformer over a live stream, with exact latency and a never-blocking mode.

Audio arrives in blocks of any size. Every ``hop`` samples the model runs over the ``window``
samples that end ``lookahead`` samples after the hop region they finalise; the windows' outputs
are crossfaded (overlap-add normalised by the summed weights, as offline ``demix`` does) so there
are no seams. Output is the stems of the input delayed by exactly ``latency_samples``:

* inline (``realtime=False``): latency = lookahead + hop; ``process`` runs due windows itself.
* real time (``realtime=True``): latency = lookahead + hop + compute allowance; ``process`` only
  copies audio in and out of rings (numba kernels, no allocation, no waiting) while a worker
  thread or process runs the model. A result that misses its deadline is dropped: that hop plays
  the dry delayed input (in the residual stem, or split equally over the stems), the miss is
  counted, and separation fades back in over ``fade_ms``.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from . import rtkernels as rt
from .config import Config
from .overlap import window_weights
from .worker import (FAILED, LATE, NONFINITE_OUT, READY, SKIPPED, STOP, TIMES, TIMES_CAPACITY, WINDOWS,
                     SharedBuffers, WindowWorker, build_worker, default_worker_threads,
                     process_main, serve_guarded, warm_up_runner)

log = logging.getLogger(__name__)

PRESETS = ("offline-exact", "balanced", "low")


@dataclass(frozen=True)
class StreamSettings:
    """Window, hop and look-ahead in samples, and the crossfade (samples or "msst")."""

    window: int
    hop: int
    lookahead: int
    crossfade: int | str

    def describe(self, sample_rate: int) -> str:
        ms = lambda n: f"{1000 * n / sample_rate:.0f} ms"  # noqa: E731
        fade = self.crossfade if self.crossfade == "msst" else ms(self.crossfade)
        return (f"window {ms(self.window)}, hop {ms(self.hop)}, look-ahead {ms(self.lookahead)}, "
                f"crossfade {fade}")


def default_crossfade(hop: int, lookahead: int, sample_rate: int) -> int:
    """10 ms, or less when the hop or the look-ahead is shorter (the crossfade must fit in both)."""
    return min(lookahead, hop, int(0.01 * sample_rate))


def _round_to(n: float, multiple: int) -> int:
    return max(multiple, int(round(n / multiple)) * multiple)


def preset_settings(name: str, config: Config) -> StreamSettings:
    """Engine settings for a latency preset, relative to the model's trained chunk.

    ``offline-exact``: window = chunk, hop = chunk // num_overlap, look-ahead = window - hop and
    MSST's fades: the stream equals offline ``demix`` (latency = chunk).
    ``balanced``: window = chunk, hop = chunk / 8, look-ahead = 2 hops, 20 ms crossfade
    (latency 3 hops + allowance, 3/8 of the chunk).
    ``low``: window = chunk, hop = chunk / 16, look-ahead = 1 hop, 10 ms crossfade
    (latency 2 hops + allowance, 1/8 of the chunk); needs 16 windows per chunk of audio.
    Hops are rounded to the model's STFT hop.
    """
    chunk, stft_hop, rate = config.chunk_size, config.stft_hop, config.sample_rate
    if name == "offline-exact":
        hop = chunk // config.num_overlap
        return StreamSettings(chunk, hop, chunk - hop, "msst")
    if name == "balanced":
        hop = _round_to(chunk / 8, stft_hop)
        return StreamSettings(chunk, hop, 2 * hop, min(hop, int(0.02 * rate)))
    if name == "low":
        hop = _round_to(chunk / 16, stft_hop)
        return StreamSettings(chunk, hop, hop, min(hop, int(0.01 * rate)))
    raise ValueError(f"unknown latency preset {name!r}; choose one of {', '.join(PRESETS)}")


class StreamEngine:
    """Separates a stream block by block. See the module docstring for the timing model.

    Args:
        model: a separation model, (batch, channels, samples) -> (batch, stems, channels, samples).
        stems: names of the model's outputs, in order.
        sample_rate: the stream's rate. It must be the model's rate (``model.audio_sample_rate``
            when the model was built from a config); resample before the engine otherwise.
        window, hop, lookahead: in samples; hop <= window and lookahead + hop <= window.
        crossfade: samples of crossfade between neighbouring windows (<= lookahead and <= hop), or
            "msst" for MSST's offline fades (needs lookahead = window - hop). Default: 10 ms,
            limited by the look-ahead and hop.
        residual: a stem name. That stem becomes the delayed input minus the other stems (a name
            that is not a model output is added as an extra stem), so the stems always sum to the
            delayed input.
        device, precision: where the model runs ("cpu", "cuda", ...; default: the model's device)
            and in what precision ("fp32"; on CUDA "bf16" (default) or "fp16" autocast).
        realtime: run inference on a worker and never wait for it.
        worker: "thread" or "process" (real-time mode only). See the README for the measurement
            behind the default.
        compute_allowance: real-time mode: samples of extra latency that give each window time to
            compute (default: one hop). It must exceed the inference time plus one audio block.
        fade_ms: real-time mode: how fast separation fades back in after a missed hop.
        threads: torch CPU threads for the worker process (default: all cores but one).
    """

    def __init__(self, model: torch.nn.Module, stems: Sequence[str], sample_rate: int, window: int, hop: int,
                 lookahead: int, crossfade: int | str | None = None, residual: str | None = None,
                 device: str | torch.device | None = None, precision: str | None = None, realtime: bool = False,
                 worker: str = "process", compute_allowance: int | None = None, fade_ms: float = 5.0,
                 threads: int | None = None, channels: int | None = None):
        self.model = model
        self.model_stems = [str(s) for s in stems]
        if not self.model_stems or len(set(self.model_stems)) != len(self.model_stems):
            raise ValueError(f"stems must be distinct names, one per model output, got {list(stems)}")
        self.sample_rate = int(sample_rate)
        model_rate = getattr(model, "audio_sample_rate", None)
        if model_rate is not None and int(model_rate) != self.sample_rate:
            raise ValueError(f"the model runs at {model_rate} Hz but the stream is {self.sample_rate} Hz: resample "
                             f"the stream to {model_rate} Hz (bridge.StemSeparator does this for you)")
        window, hop, lookahead = int(window), int(hop), int(lookahead)
        if window < 1 or hop < 1 or lookahead < 0:
            raise ValueError(f"window and hop must be >= 1 and lookahead >= 0 samples, got window={window}, "
                             f"hop={hop}, lookahead={lookahead}")
        if hop > window:
            raise ValueError(f"hop ({hop}) cannot be longer than the window ({window})")
        if lookahead + hop > window:
            raise ValueError(f"lookahead + hop ({lookahead} + {hop}) cannot exceed the window ({window}): the window "
                             "must hold the hop region and its look-ahead")
        if crossfade is None:
            crossfade = default_crossfade(hop, lookahead, self.sample_rate)
        self.settings = StreamSettings(window, hop, lookahead, crossfade)
        self.weights = window_weights(window, hop, lookahead, crossfade)
        self.window, self.hop, self.lookahead = window, hop, lookahead

        self.stems = list(self.model_stems)
        if residual is not None:
            if residual not in self.stems:
                self.stems.append(residual)
            self.residual_index = self.stems.index(residual)
        else:
            self.residual_index = -1
        self.residual = residual
        self.channels = int(channels or getattr(model, "audio_channels", 2))

        self.realtime = bool(realtime)
        if worker not in ("thread", "process"):
            raise ValueError(f"worker must be 'thread' or 'process', got {worker!r}")
        self.worker_kind = worker
        if compute_allowance is None:
            compute_allowance = hop if self.realtime else 0
        if compute_allowance < 0:
            raise ValueError(f"compute_allowance must be >= 0 samples, got {compute_allowance}")
        self.compute_allowance = int(compute_allowance) if self.realtime else 0
        self.latency_samples = lookahead + hop + self.compute_allowance
        self.fade_step = np.float32(1.0 / max(1.0, fade_ms * 1e-3 * self.sample_rate))

        param = next(model.parameters(), None) if isinstance(model, torch.nn.Module) else None
        self.device = torch.device(device) if device is not None else (param.device if param is not None
                                                                      else torch.device("cpu"))
        if precision is None:
            precision = "bf16" if self.device.type == "cuda" else "fp32"
        if precision not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"precision must be fp32, bf16 or fp16, got {precision!r}")
        if self.device.type != "cuda" and precision != "fp32":
            log.warning("precision %s only applies on CUDA; running fp32 on %s", precision, self.device)
            precision = "fp32"
        self.precision = precision
        self.threads = threads

        # ring sizes: the input ring holds a window plus the latency plus one sub-block of slack
        self._max_block = max(256, hop)
        self._cap_in = window + self.latency_samples + 2 * self._max_block
        num_slots = 4 + math.ceil((self.latency_samples + self._max_block) / hop)
        shared = self.realtime and worker == "process"
        self.buffers, self._tensors = SharedBuffers.allocate(len(self.stems), self.channels, self._cap_in, num_slots,
                                                             hop, shared)
        self._worker_settings = dict(
            device=str(self.device), precision=self.precision, channels=self.channels, window=window, hop=hop,
            lookahead=lookahead, weights=self.weights, residual=self.residual_index, stems_out=len(self.stems),
            model_stems=len(self.model_stems), threads=threads or default_worker_threads(),
            allowance=self.compute_allowance,
        )
        self._clear()
        self.reset_stats()
        self._inline: WindowWorker | None = None
        self._thread: threading.Thread | None = None
        self._process = None
        rt.warm_up()
        if not (self.realtime and worker == "process"):
            self._inline = build_worker(self.buffers, model, self._worker_settings)
            self.model = self._inline.runner.model
            warm_up_runner(self._inline.runner, len(self.model_stems), self.channels, self.window)

    # ------------------------------------------------------------------ set-up helpers
    @classmethod
    def from_config(cls, config: Config, model: torch.nn.Module, preset: str = "balanced", **kwargs) -> "StreamEngine":
        """An engine for a model built from ``config``, with a latency preset's settings.

        Keyword arguments (window, hop, lookahead, crossfade, residual, realtime, ...) override the preset.
        """
        s = preset_settings(preset, config)
        opts = dict(window=s.window, hop=s.hop, lookahead=s.lookahead, crossfade=s.crossfade)
        opts.update(kwargs)
        return cls(model, config.stems, config.sample_rate, channels=config.channels, **opts)

    def _clear(self) -> None:
        b = self.buffers
        b.hop_tag[:] = -1
        st = b.audio_state
        st[rt.FED] = st[rt.OUT_POS] = 0
        st[rt.CUR_HOP] = -1
        st[rt.CUR_OK] = 0
        b.gain[0] = 1.0

    # ------------------------------------------------------------------ properties
    @property
    def latency_parts(self) -> dict[str, int]:
        """Latency in samples, by cause: look-ahead + hop is algorithmic, the allowance is processing."""
        return {"lookahead": self.lookahead, "hop": self.hop, "compute": self.compute_allowance,
                "algorithmic": self.lookahead + self.hop, "processing": self.compute_allowance,
                "total": self.latency_samples}

    @property
    def latency_seconds(self) -> float:
        return self.latency_samples / self.sample_rate

    @property
    def running(self) -> bool:
        if self._thread is not None:
            return self._thread.is_alive()
        return self._process is not None and self._process.is_alive()

    @property
    def stats(self) -> dict:
        """Counters and timings. Safe to read from any thread while streaming."""
        b = self.buffers
        n = int(b.worker_state[TIMES])
        times = b.times[: min(n, TIMES_CAPACITY)].copy() if n else np.zeros(0)
        hop_s = self.hop / self.sample_rate
        med = float(np.median(times)) if times.size else float("nan")
        return {
            "hops": int(b.worker_state[WINDOWS]),
            "infer_ms_median": med * 1e3,
            "infer_ms_p99": float(np.percentile(times, 99)) * 1e3 if times.size else float("nan"),
            "infer_ms_max": float(times.max()) * 1e3 if times.size else float("nan"),
            "realtime_factor": med / hop_s if times.size else float("nan"),
            "deadline_misses": int(b.audio_state[rt.MISSES]),
            "late_results": int(b.worker_state[LATE]),
            "skipped_windows": int(b.worker_state[SKIPPED]),
            "nonfinite_input": int(b.audio_state[rt.NONFINITE]),
            "nonfinite_output": int(b.worker_state[NONFINITE_OUT]),
            "latency_ms": 1000 * self.latency_seconds,
            "error": b.error_message(),
        }

    # ------------------------------------------------------------------ worker lifetime
    def start(self, timeout: float = 120.0) -> "StreamEngine":
        """Start the real-time worker (no-op inline or when already running). Waits until it is warm."""
        if not self.realtime or self.running:
            return self
        b = self.buffers
        b.worker_state[STOP] = 0
        b.worker_state[READY] = 0
        b.worker_state[FAILED] = 0
        if self.worker_kind == "thread":
            if self.threads:
                torch.set_num_threads(self.threads)
            self._inline.generation = int(b.audio_state[rt.GENERATION])
            self._thread = threading.Thread(target=serve_guarded, args=(self._inline,), name="stemstream-inference",
                                            daemon=True)
            self._thread.start()
        else:
            ctx = torch.multiprocessing.get_context("spawn")
            self._process = ctx.Process(target=process_main, args=(self._tensors, self.model, self._worker_settings),
                                        name="stemstream-inference", daemon=True)
            try:
                self._process.start()
            except RuntimeError as exc:
                self._process = None
                if "bootstrapping phase" in str(exc):
                    raise RuntimeError(
                        "the process worker starts a fresh Python that re-imports your script: put the code that "
                        "starts streaming under `if __name__ == \"__main__\":`, or use worker=\"thread\"") from None
                raise
        deadline = time.monotonic() + timeout
        while not b.worker_state[READY]:
            if b.worker_state[FAILED]:
                self.stop()
                raise RuntimeError(b.error_message())
            if not self.running or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the inference worker did not start" +
                                   (f" within {timeout:.0f} s" if self.running else ""))
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Stop the worker. Harmless when not started or already stopped."""
        self.buffers.worker_state[STOP] = 1
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        if self._process is not None:
            self._process.join(timeout=30)
            if self._process.is_alive():
                self._process.terminate()
                self._process.join(timeout=5)
            self._process = None

    def __enter__(self) -> "StreamEngine":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __del__(self):
        try:
            self.stop()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    # ------------------------------------------------------------------ audio side
    def _check_block(self, block: np.ndarray, sample_rate: float | None) -> np.ndarray:
        if sample_rate is not None and int(round(sample_rate)) != self.sample_rate:
            raise ValueError(f"block sample rate {sample_rate} Hz differs from the engine's {self.sample_rate} Hz; "
                             "resample it first")
        if not isinstance(block, np.ndarray):
            block = np.asarray(block)
        if block.ndim == 1 and self.channels == 1:
            block = block[None]
        if block.ndim != 2 or block.shape[0] != self.channels:
            raise ValueError(f"expected a block of shape ({self.channels}, frames), got {block.shape}")
        if block.dtype != np.float32:
            if block.dtype == np.float64:
                block = block.astype(np.float32)  # allocates: pass float32 on a real-time path
            else:
                raise TypeError(f"audio blocks must be float32 (or float64), got {block.dtype}")
        return block

    def process(self, block: np.ndarray, sample_rate: float | None = None) -> np.ndarray:
        """Feed ``block`` (channels, n); returns (stems, channels, n): the stems ``latency_samples`` ago."""
        block = self._check_block(block, sample_rate)
        out = np.empty((len(self.stems), self.channels, block.shape[1]), np.float32)
        self._process_into(block, out)
        return out

    def separate(self, audio: np.ndarray, block: int = 4096) -> np.ndarray:
        """A whole recording fed in ``block``-frame pieces, then flushed: (stems, channels, n) aligned
        with ``audio`` (the latency removed). The engine is reset afterwards."""
        outs = [self.process(audio[:, i:i + block]) for i in range(0, audio.shape[1], block)]
        outs.append(self.flush())
        return np.concatenate(outs, axis=-1)[..., self.latency_samples:self.latency_samples + audio.shape[1]]

    def process_into(self, block: np.ndarray, out: np.ndarray, dry: np.ndarray | None = None) -> None:
        """``process`` without allocating: writes into ``out`` (stems, channels, n) float32, and into
        ``dry`` (channels, n) the input delayed by the same latency (what the stems came from)."""
        block = self._check_block(block, None)
        if out.shape != (len(self.stems), self.channels, block.shape[1]) or out.dtype != np.float32:
            raise ValueError(f"out must be float32 of shape {(len(self.stems), self.channels, block.shape[1])}")
        if dry is not None and (dry.shape != block.shape or dry.dtype != np.float32):
            raise ValueError(f"dry must be float32 of shape {block.shape}")
        self._process_into(block, out, dry)

    def _process_into(self, block: np.ndarray, out: np.ndarray, dry: np.ndarray | None = None) -> None:
        n = block.shape[1]
        pos = 0
        while pos < n:
            size = min(n - pos, self._max_block)
            if not self.realtime:  # stop at each window end so due windows run before their input is overwritten
                size = min(size, self._inline.next_end - int(self.buffers.audio_state[rt.FED]))
            self._write(block[:, pos:pos + size])
            if not self.realtime:
                self._inline.run_due()
            if dry is not None:
                b = self.buffers
                rt.read_dry(dry[:, pos:pos + size], b.in_ring, b.audio_state[rt.OUT_POS], self.latency_samples)
            self._read(out[:, :, pos:pos + size])
            pos += size

    def _write(self, sub: np.ndarray) -> None:
        b = self.buffers
        st = b.audio_state
        st[rt.NONFINITE] += rt.write_input(sub, b.in_ring, st[rt.FED])
        st[rt.FED] += sub.shape[1]

    def _read(self, out: np.ndarray) -> None:
        b = self.buffers
        rt.read_output(out, b.out_ring, b.hop_tag, b.in_ring, b.audio_state, b.gain, self.latency_samples, self.hop,
                       self.lookahead, b.hop_tag.shape[0], self.residual_index, self.fade_step)

    def flush(self, timeout: float = 60.0) -> np.ndarray:
        """The last ``latency_samples`` of output (feeding silence), then reset for a new stream.

        In real-time mode this waits for the worker to finish each remaining hop (up to ``timeout``
        seconds in all) instead of falling back to dry audio.
        """
        total = self.latency_samples
        out = np.zeros((len(self.stems), self.channels, total), np.float32)
        if not (self.realtime and self.running):
            if total:
                self._process_into(np.zeros((self.channels, total), np.float32), out)
            self.reset()
            return out
        b = self.buffers
        st = b.audio_state
        zeros = np.zeros((self.channels, self.hop), np.float32)
        deadline = time.monotonic() + timeout
        pos = 0
        while pos < total:
            # one window end at a time, and only once the worker is done with the windows already due,
            # so it is never more than one window behind (it would skip windows then)
            fed = int(st[rt.FED])
            self._wait_for_region(fed // self.hop - 1, deadline)
            size = min(self.hop - fed % self.hop, total - pos)
            self._write(zeros[:, :size])
            last = fed + size - 1 - self.latency_samples  # the last input sample this step plays
            self._wait_for_region((last + self.lookahead) // self.hop, deadline)
            self._read(out[:, :, pos:pos + size])
            pos += size
        self.reset()
        return out

    def _wait_for_region(self, k: int, deadline: float) -> None:
        """Wait (flush only) until hop region ``k`` is published, the worker failed or time is up."""
        if k < 0:
            return
        b = self.buffers
        tag = (int(b.audio_state[rt.GENERATION]) << rt.TAG_SHIFT) | k
        while (int(b.hop_tag[k % b.hop_tag.shape[0]]) != tag and time.monotonic() < deadline
               and not b.worker_state[FAILED] and self.running):
            time.sleep(0.001)

    def reset_stats(self) -> None:
        """Zero the counters and timings in ``stats`` (they otherwise run from construction on)."""
        b = self.buffers
        b.audio_state[rt.MISSES] = b.audio_state[rt.NONFINITE] = 0
        for i in (WINDOWS, LATE, SKIPPED, TIMES, NONFINITE_OUT):
            b.worker_state[i] = 0

    def reset(self) -> None:
        """Forget the stream: clear the rings and the overlap-add state. Settings stay, and so do
        the counters in ``stats`` (see ``reset_stats``)."""
        b = self.buffers
        self._clear()
        b.audio_state[rt.GENERATION] += 1  # after clearing, so a worker never mixes old input into the new stream
        if self._inline is not None and not self.running:
            self._inline.generation = int(b.audio_state[rt.GENERATION])
            self._inline.reset()
