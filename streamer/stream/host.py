"""Where the inference worker runs: inline (in the caller's ``process``), on a thread, or in a process.

Every host has the same face: ``start(timeout)`` (returns once the worker is warm and serving),
``stop()``, ``running``, and ``worker`` (the in-process :class:`WindowWorker`, None for a process).
A process worker is spawned with the shared ring's tensors, the model and the frozen
:class:`~streamer.stream.settings.WorkerSettings`, and rebuilds its worker around them.
"""
from __future__ import annotations

import os
import threading
import time

import torch

from ..errors import SettingsError, WorkerError
from .ring import AudioSlot, SharedBuffers, WorkerSlot
from .settings import WorkerSettings
from .worker import WindowWorker, build_worker, serve_guarded

HOST_KINDS = ("inline", "thread", "process")


def default_worker_threads() -> int:
    """Torch threads for a worker process: leave one core to the audio side."""
    return max(1, (os.cpu_count() or 2) - 1)


class InlineHost:
    """The worker lives in the caller's thread: ``process`` runs due windows itself. Nothing to start."""

    kind = "inline"

    def __init__(self, buffers: SharedBuffers, model, settings: WorkerSettings):
        self.buffers = buffers
        self.worker: WindowWorker | None = build_worker(buffers, model, settings)

    @property
    def running(self) -> bool:
        return False

    def start(self, timeout: float = 120.0) -> None:
        pass

    def stop(self) -> None:
        pass

    def restart_stream(self) -> None:
        """The stream was reset: follow the ring's new generation from the first window on."""
        self.worker.generation = int(self.buffers.audio_state[AudioSlot.GENERATION])
        self.worker.reset()


class _ServingHost(InlineHost):
    """Shared start-up wait of the thread and process hosts."""

    def _wait_ready(self, timeout: float) -> None:
        b = self.buffers
        deadline = time.monotonic() + timeout
        while not b.worker_state[WorkerSlot.READY]:
            if b.worker_state[WorkerSlot.FAILED]:
                self.stop()
                raise WorkerError(b.error_message())
            if not self.running or time.monotonic() > deadline:
                alive = self.running
                self.stop()
                raise WorkerError("the inference worker did not start" + (f" within {timeout:.0f} s" if alive else ""))
            time.sleep(0.01)

    def _reset_flags(self) -> None:
        b = self.buffers
        b.worker_state[WorkerSlot.STOP] = 0
        b.worker_state[WorkerSlot.READY] = 0
        b.worker_state[WorkerSlot.FAILED] = 0


class ThreadHost(_ServingHost):
    """The worker on a daemon thread of this process (it shares the GIL with the audio side)."""

    kind = "thread"

    def __init__(self, buffers: SharedBuffers, model, settings: WorkerSettings, threads: int | None = None):
        super().__init__(buffers, model, settings)
        self.threads = threads  # torch threads of this process, set at start() only when asked for
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, timeout: float = 120.0) -> None:
        if self.running:
            return
        self._reset_flags()
        if self.threads:
            torch.set_num_threads(self.threads)
        self.worker.generation = int(self.buffers.audio_state[AudioSlot.GENERATION])
        self._thread = threading.Thread(target=serve_guarded, args=(self.worker,), name="stemstream-inference",
                                        daemon=True)
        self._thread.start()
        self._wait_ready(timeout)

    def stop(self) -> None:
        self.buffers.worker_state[WorkerSlot.STOP] = 1
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None


def process_main(tensors: dict[str, torch.Tensor], model, settings: WorkerSettings) -> None:
    """Entry point of the worker process (spawned): rebuild the worker around the shared arrays."""
    buffers = SharedBuffers.from_tensors(tensors)
    try:
        if settings.threads:
            torch.set_num_threads(settings.threads)
        worker = build_worker(buffers, model, settings)
    except Exception as exc:  # noqa: BLE001
        buffers.set_error(f"inference worker could not start: {type(exc).__name__}: {exc}")
        return
    serve_guarded(worker)


class ProcessHost(_ServingHost):
    """The worker in a spawned process: the audio side's process keeps its GIL to itself."""

    kind = "process"

    def __init__(self, buffers: SharedBuffers, tensors: dict[str, torch.Tensor], model, settings: WorkerSettings):
        self.buffers = buffers
        self.worker = None
        self._tensors = tensors
        self._model = model
        self._settings = settings
        self._process = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.is_alive()

    def restart_stream(self) -> None:
        pass  # the worker process follows the ring's generation itself

    def start(self, timeout: float = 120.0) -> None:
        if self.running:
            return
        self._reset_flags()
        ctx = torch.multiprocessing.get_context("spawn")
        self._process = ctx.Process(target=process_main, args=(self._tensors, self._model, self._settings),
                                    name="stemstream-inference", daemon=True)
        try:
            self._process.start()
        except RuntimeError as exc:
            self._process = None
            if "bootstrapping phase" in str(exc):
                raise WorkerError(
                    "the process worker starts a fresh Python that re-imports your script: put the code that "
                    "starts streaming under `if __name__ == \"__main__\":`, or use worker=\"thread\"") from exc
            raise
        self._wait_ready(timeout)

    def stop(self) -> None:
        self.buffers.worker_state[WorkerSlot.STOP] = 1
        if self._process is not None:
            self._process.join(timeout=30)
            if self._process.is_alive():
                self._process.terminate()
                self._process.join(timeout=5)
            self._process = None


def make_host(kind: str, buffers: SharedBuffers, tensors: dict[str, torch.Tensor], model,
              settings: WorkerSettings, threads: int | None = None) -> InlineHost | ThreadHost | ProcessHost:
    """The host of ``kind`` ("inline", "thread" or "process"); in-process workers are built (and warmed
    up) here, a process worker when it starts. ``threads``: torch threads for a thread host (a
    process worker uses ``settings.threads``)."""
    if kind == "inline":
        return InlineHost(buffers, model, settings)
    if kind == "thread":
        return ThreadHost(buffers, model, settings, threads)
    if kind == "process":
        return ProcessHost(buffers, tensors, model, settings)
    raise SettingsError(f"unknown worker host {kind!r}; one of {', '.join(HOST_KINDS)}")
