"""``StreamEngine``: a Roformer over a live stream, with exact latency and a never-blocking mode.

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

The engine is a facade: ``settings`` validates the lengths and owns the latency formula, ``ring``
the shared arrays and their slot layout, ``kernels`` the audio side, ``worker`` the inference side
and ``host`` where that runs.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

from ..errors import AudioError, AudioTypeError, SettingsError
from ..inference.precision import resolve_precision
from ..inference.residual import output_stems
from ..inference.runner import BACKENDS, model_device
from . import kernels as rt
from .host import default_worker_threads, make_host
from .supervisor import DEFAULT_MAX_RESTARTS, Supervisor
from .ring import AudioSlot, SharedBuffers, WorkerSlot, ring_sizes
from .settings import DEFAULT_PRESET, StreamSettings, WorkerSettings, preset_settings

if TYPE_CHECKING:
    from ..msst.config import Config

WORKER_KINDS = ("thread", "process", "remote")


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
        residual: a stem name: that stem becomes the delayed input minus the other stems (a name
            that is not a model output is added as an extra stem); or "spread": every stem gets an
            equal share of the delayed input minus the stems' sum. Either way the stems always sum
            to the delayed input. None (default): the model's stems as they are.
        device, precision: where the model runs ("cpu", "cuda", ...; default: the model's device)
            and in what precision ("fp32"; on CUDA "bf16" (default) or "fp16" autocast).
        realtime: run inference on a worker and never wait for it.
        worker: "thread" or "process" (real-time mode only). See the README for the measurement
            behind the default. "remote": the windows run on a separation service, ``remote`` says
            which (``streamer.remote.RemoteLink``; ``model`` may then be None).
        compute_allowance: real-time mode: samples of extra latency that give each window time to
            compute (default: one hop). It must exceed the inference time plus one audio block.
        fade_ms: real-time mode: how fast separation fades back in after a missed hop.
        threads: torch CPU threads for the worker (default for a process: all cores but one).
        cuda_graph: on CUDA, replay each window as a CUDA graph (None: the default of
            ``streamer.inference.graphs``); ``stats["cuda_graph"]`` tells whether it is in use.
        backend: ``"torch"`` (default), ``"onnx"`` (the model core in ONNX Runtime, CPU fp32) or
            ``"auto"`` (the faster of the two on this machine); see ``streamer.make_runner``.
            ``stats["backend"]`` tells which runs.
        max_restarts: real-time mode: how often a worker that died is restarted (see
            ``streamer.stream.supervisor``); the audio plays the dry input meanwhile.
        remote: with ``worker="remote"``: an object whose ``make_host(buffers, worker_settings,
            residual)`` makes the host (``streamer.remote.RemoteLink``).
    """

    def __init__(self, model: torch.nn.Module, stems: Sequence[str], sample_rate: int, window: int, hop: int,
                 lookahead: int, crossfade: int | str | None = None, residual: str | None = None,
                 device: str | torch.device | None = None, precision: str | None = None, realtime: bool = False,
                 worker: str = "process", compute_allowance: int | None = None, fade_ms: float = 5.0,
                 threads: int | None = None, channels: int | None = None, cuda_graph: bool | None = None,
                 backend: str = "torch",
                 max_restarts: int = DEFAULT_MAX_RESTARTS, remote=None):
        self.model = model
        self.model_stems = [str(s) for s in stems]
        if not self.model_stems or len(set(self.model_stems)) != len(self.model_stems):
            raise SettingsError(f"stems must be distinct names, one per model output, got {list(stems)}")
        self.sample_rate = int(sample_rate)
        model_rate = getattr(model, "audio_sample_rate", None)
        if model_rate is not None and int(model_rate) != self.sample_rate:
            raise SettingsError(f"the model runs at {model_rate} Hz but the stream is {self.sample_rate} Hz: "
                                f"resample the stream to {model_rate} Hz (bridge.StemSeparator does this for you)")
        self.settings = StreamSettings.make(window, hop, lookahead, crossfade, self.sample_rate)
        self.window, self.hop, self.lookahead = self.settings.window, self.settings.hop, self.settings.lookahead

        self.stems, self.residual_index = output_stems(self.model_stems, residual)
        self.residual = residual
        self.channels = int(channels or getattr(model, "audio_channels", 2))

        self.realtime = bool(realtime)
        if backend not in BACKENDS:
            raise SettingsError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        if worker not in WORKER_KINDS:
            raise SettingsError(f"worker must be 'thread', 'process' or 'remote', got {worker!r}")
        if (worker == "remote") != (remote is not None) or (remote is not None and not self.realtime):
            raise SettingsError("a remote worker needs realtime=True, worker='remote' and remote= (the service)")
        self.worker_kind = worker
        if compute_allowance is None:
            compute_allowance = self.settings.default_allowance if self.realtime else 0
        if compute_allowance < 0:
            raise SettingsError(f"compute_allowance must be >= 0 samples, got {compute_allowance}")
        self.compute_allowance = int(compute_allowance) if self.realtime else 0
        self.latency_samples = self.settings.latency(self.compute_allowance)
        self.fade_step = np.float32(1.0 / max(1.0, fade_ms * 1e-3 * self.sample_rate))

        self.device = torch.device(device) if device is not None else model_device(model)
        self.precision = resolve_precision(precision, self.device)
        self.threads = threads

        self._max_block, cap_in, num_slots = ring_sizes(self.window, self.hop, self.latency_samples)
        host_kind = worker if self.realtime else "inline"
        self.buffers, tensors = SharedBuffers.allocate(len(self.stems), self.channels, cap_in, num_slots, self.hop,
                                                       shared=host_kind == "process")
        self.worker_settings = WorkerSettings(
            stream=self.settings, device=str(self.device), precision=self.precision, channels=self.channels,
            model_stems=len(self.model_stems), stems_out=len(self.stems), residual=self.residual_index,
            threads=threads or default_worker_threads(), allowance=self.compute_allowance, cuda_graph=cuda_graph,
            backend=backend)
        self.buffers.clear_stream()
        self.buffers.clear_counters()
        rt.warm_up()
        self._host = make_host(host_kind, self.buffers, tensors, model, self.worker_settings, threads, remote=remote,
                               residual=residual)
        if self._host.worker is not None:
            self.model = self._host.worker.runner.model  # moved to the device
        if max_restarts < 0:
            raise SettingsError(f"max_restarts must be >= 0, got {max_restarts}")
        # poll several times per hop, so a dead worker is noticed within one hop
        self._supervisor = Supervisor(self._host, min(0.05, self.hop / self.sample_rate / 4), max_restarts)

    # ------------------------------------------------------------------ set-up helpers
    @classmethod
    def from_config(cls, config: "Config", model: torch.nn.Module, preset: str = DEFAULT_PRESET,
                    **kwargs) -> "StreamEngine":
        """An engine for a model built from ``config``, with a latency preset's settings.

        Keyword arguments (window, hop, lookahead, crossfade, residual, realtime, ...) override the preset.
        """
        s = preset_settings(preset, config)
        opts = dict(window=s.window, hop=s.hop, lookahead=s.lookahead, crossfade=s.crossfade)
        opts.update(kwargs)
        return cls(model, config.stems, config.sample_rate, channels=config.channels, **opts)

    # ------------------------------------------------------------------ properties
    @property
    def latency_parts(self) -> dict[str, int]:
        """Latency in samples, by cause: look-ahead + hop is algorithmic, the allowance is processing."""
        return self.settings.latency_parts(self.compute_allowance)

    @property
    def latency_seconds(self) -> float:
        return self.latency_samples / self.sample_rate

    @property
    def running(self) -> bool:
        return self._host.running

    @property
    def worker_pid(self) -> int | None:
        """The worker process's id (process worker only, while it runs)."""
        return self._host.pid if self._host.running else None

    @property
    def stats(self) -> dict:
        """Counters and timings. Safe to read from any thread while streaming."""
        b = self.buffers
        times = b.window_times()
        hop_s = self.hop / self.sample_rate
        med = float(np.median(times)) if times.size else float("nan")
        return {
            "hops": int(b.worker_state[WorkerSlot.WINDOWS]),
            "infer_ms_median": med * 1e3,
            "infer_ms_p99": float(np.percentile(times, 99)) * 1e3 if times.size else float("nan"),
            "infer_ms_max": float(times.max()) * 1e3 if times.size else float("nan"),
            "realtime_factor": med / hop_s if times.size else float("nan"),
            "deadline_misses": int(b.audio_state[AudioSlot.MISSES]),
            "late_results": int(b.worker_state[WorkerSlot.LATE]),
            "skipped_windows": int(b.worker_state[WorkerSlot.SKIPPED]),
            "nonfinite_input": int(b.audio_state[AudioSlot.NONFINITE]),
            "nonfinite_output": int(b.worker_state[WorkerSlot.NONFINITE_OUT]),
            "latency_ms": 1000 * self.latency_seconds,
            "cuda_graph": bool(b.worker_state[WorkerSlot.GRAPHED]),
            "backend": "onnx" if b.worker_state[WorkerSlot.ONNX] else "torch",
            "worker_deaths": self._supervisor.deaths,
            "worker_restarts": self._supervisor.restarts,
            "worker_given_up": self._supervisor.given_up,
            "error": b.error_message() or self._supervisor.last_cause,
            **({"remote": self._host.remote_stats()} if hasattr(self._host, "remote_stats") else {}),
        }

    # ------------------------------------------------------------------ worker lifetime
    def start(self, timeout: float = 120.0) -> "StreamEngine":
        """Start the real-time worker (no-op inline or when already running). Waits until it is warm,
        then a supervisor watches it (see ``max_restarts``)."""
        if not self.realtime:
            return self
        with self._supervisor.lock:
            self._host.start(timeout)
        self._supervisor.start_timeout = timeout
        self._supervisor.start()
        return self

    def stop(self) -> None:
        """Stop the worker within about two seconds (a worker that does not answer is killed). Harmless
        when not started or already stopped."""
        supervisor = getattr(self, "_supervisor", None)
        if supervisor is None:
            return
        supervisor.stop()
        with supervisor.lock:
            self._host.stop()

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
            raise AudioError(f"block sample rate {sample_rate} Hz differs from the engine's {self.sample_rate} Hz; "
                             "resample it first")
        if not isinstance(block, np.ndarray):
            block = np.asarray(block)
        if block.ndim == 1 and self.channels == 1:
            block = block[None]
        if block.ndim != 2 or block.shape[0] != self.channels:
            raise AudioError(f"expected a block of shape ({self.channels}, frames), got {block.shape}")
        if block.dtype != np.float32:
            if block.dtype == np.float64:
                block = block.astype(np.float32)  # allocates: pass float32 on a real-time path
            else:
                raise AudioTypeError(f"audio blocks must be float32 (or float64), got {block.dtype}")
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
        if block < 1:
            raise SettingsError(f"block must be >= 1 frame, got {block}")
        outs = [self.process(audio[:, i:i + block]) for i in range(0, audio.shape[1], block)]
        outs.append(self.flush())
        return np.concatenate(outs, axis=-1)[..., self.latency_samples:self.latency_samples + audio.shape[1]]

    def process_into(self, block: np.ndarray, out: np.ndarray, dry: np.ndarray | None = None) -> None:
        """``process`` without allocating: writes into ``out`` (stems, channels, n) float32, and into
        ``dry`` (channels, n) the input delayed by the same latency (what the stems came from)."""
        block = self._check_block(block, None)
        if out.shape != (len(self.stems), self.channels, block.shape[1]) or out.dtype != np.float32:
            raise AudioError(f"out must be float32 of shape {(len(self.stems), self.channels, block.shape[1])}")
        if dry is not None and (dry.shape != block.shape or dry.dtype != np.float32):
            raise AudioError(f"dry must be float32 of shape {block.shape}")
        self._process_into(block, out, dry)

    def _process_into(self, block: np.ndarray, out: np.ndarray, dry: np.ndarray | None = None) -> None:
        n = block.shape[1]
        inline = self._host.worker if not self.realtime else None
        b = self.buffers
        pos = 0
        while pos < n:
            size = min(n - pos, self._max_block)
            if inline is not None:  # stop at each window end so due windows run before their input is overwritten
                size = min(size, inline.next_end - int(b.audio_state[AudioSlot.FED]))
            self._write(block[:, pos:pos + size])
            if inline is not None:
                inline.run_due()
            if dry is not None:
                rt.read_dry(dry[:, pos:pos + size], b.in_ring, b.audio_state[AudioSlot.OUT_POS], self.latency_samples)
            self._read(out[:, :, pos:pos + size])
            pos += size

    def _write(self, sub: np.ndarray) -> None:
        b = self.buffers
        st = b.audio_state
        st[AudioSlot.NONFINITE] += rt.write_input(sub, b.in_ring, st[AudioSlot.FED])
        st[AudioSlot.FED] += sub.shape[1]

    def _read(self, out: np.ndarray) -> None:
        b = self.buffers
        rt.read_output(out, b.out_ring, b.hop_tag, b.in_ring, b.audio_state, b.gain, self.latency_samples, self.hop,
                       self.lookahead, b.num_slots, self.residual_index, self.fade_step)

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
        st = self.buffers.audio_state
        zeros = np.zeros((self.channels, self.hop), np.float32)
        deadline = time.monotonic() + timeout
        pos = 0
        while pos < total:
            # one window end at a time, and only once the worker is done with the windows already due,
            # so it is never more than one window behind (it would skip windows then)
            fed = int(st[AudioSlot.FED])
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
        while (not b.is_published(k) and time.monotonic() < deadline
               and not b.worker_state[WorkerSlot.FAILED] and self.running):
            time.sleep(0.001)

    def reset_stats(self) -> None:
        """Zero the counters and timings in ``stats`` (they otherwise run from construction on)."""
        self.buffers.clear_counters()

    def reset(self) -> None:
        """Forget the stream: clear the rings and the overlap-add state. Settings stay, and so do
        the counters in ``stats`` (see ``reset_stats``)."""
        b = self.buffers
        b.clear_stream()
        # bumped after clearing, so a worker never mixes old input into the new stream
        b.audio_state[AudioSlot.GENERATION] += 1
        if not self.running:
            self._host.restart_stream()

