"""Where the inference worker runs: inline (in the caller's ``process``), on a thread, or in a process.

Every host has the same face: ``start(timeout)`` (returns once the worker is warm and serving),
``stop()`` (within about two seconds, whatever the worker is doing), ``running``, ``pid``,
``crashed()`` and ``exit_cause()`` (for the supervisor), and ``worker`` (the in-process
:class:`WindowWorker`, None for a process).

A process worker is spawned with only small arguments (the shared ring's tensors, the frozen
:class:`~streamer.stream.settings.WorkerSettings` and one end of a pipe); the model follows through
the pipe as one shared block per dtype (``streamer.stream.share``), sent from a thread while the
parent watches the child. So a child that dies while starting (for example because it re-imported a
script without an ``if __name__ == "__main__":`` guard) ends start-up with one clear error instead of
a hang, and the file descriptors used do not grow with the number of tensors.
"""
from __future__ import annotations

import os
import signal
import threading
import time

import torch

from ..errors import SettingsError, WorkerError
from .ring import AudioSlot, SharedBuffers, WorkerSlot
from .settings import WorkerSettings
from .share import share_model, unshare_model
from .worker import WindowWorker, build_worker, serve_guarded

HOST_KINDS = ("inline", "thread", "process", "remote")
STOP_GRACE_SECONDS = 1.0   # how long stop() lets a worker finish its window before killing it
MAIN_GUARD_HINT = ("the worker process re-imports the script that started it: put the code that starts streaming "
                   "under `if __name__ == \"__main__\":` (or use worker=\"thread\")")


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

    @property
    def pid(self) -> int | None:
        return None

    def start(self, timeout: float = 120.0) -> None:
        pass

    def stop(self) -> None:
        pass

    def crashed(self) -> bool:
        return False

    def exit_cause(self) -> str:
        return ""

    def restart_stream(self) -> None:
        """The stream was reset: follow the ring's new generation from the first window on."""
        self.worker.generation = int(self.buffers.audio_state[AudioSlot.GENERATION])
        self.worker.reset()


class _ServingHost(InlineHost):
    """Shared start-up and health logic of the thread and process hosts."""

    _started = False  # start() succeeded and stop() was not called since

    def _wait_ready(self, timeout: float) -> None:
        b = self.buffers
        deadline = time.monotonic() + timeout
        while not b.worker_state[WorkerSlot.READY]:
            if b.worker_state[WorkerSlot.FAILED]:
                message = b.error_message()
                self.stop()
                raise WorkerError(message)
            if not self.running:
                cause = self.exit_cause()
                self.stop()
                raise WorkerError(cause)
            if time.monotonic() > deadline:
                self.stop()
                raise WorkerError(f"the inference worker did not start within {timeout:.0f} s")
            time.sleep(0.01)
        self._started = True

    def _reset_flags(self) -> None:
        b = self.buffers
        for slot in (WorkerSlot.STOP, WorkerSlot.READY, WorkerSlot.FAILED, WorkerSlot.STARTED):
            b.worker_state[slot] = 0

    def crashed(self) -> bool:
        """True when a worker that was serving has stopped without being asked to."""
        return self._started and (not self.running or bool(self.buffers.worker_state[WorkerSlot.FAILED]))

    def restart(self, timeout: float = 120.0) -> None:
        self.stop()
        self.start(timeout)


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

    def exit_cause(self) -> str:
        return self.buffers.error_message() or "the inference thread ended"

    def start(self, timeout: float = 120.0) -> None:
        if self.running:
            return
        self._reset_flags()
        if self.threads:
            torch.set_num_threads(self.threads)
        self.worker.generation = int(self.buffers.audio_state[AudioSlot.GENERATION])
        self.worker.reset()
        self._thread = threading.Thread(target=serve_guarded, args=(self.worker,), name="stemstream-inference",
                                        daemon=True)
        self._thread.start()
        self._wait_ready(timeout)

    def stop(self) -> None:
        self._started = False
        self.buffers.worker_state[WorkerSlot.STOP] = 1
        if self._thread is not None:
            # a thread cannot be killed: it gets the grace period plus a window's worth, then is left behind
            # as a daemon (it returns at its next STOP check)
            self._thread.join(timeout=2 * STOP_GRACE_SECONDS)
            self._thread = None


ORPHAN_CHECK_SECONDS = 0.25
WORKER_NICENESS = 5          # the worker process's CPU priority, below the audio's (nice 0)


def _exit_with_parent(parent: int) -> None:
    """A worker process must never outlive the program that started it, even one killed outright
    (SIGKILL runs no clean-up): a daemon thread notices that the parent is gone (the process was
    re-parented) within ``ORPHAN_CHECK_SECONDS`` and exits. (Linux's PR_SET_PDEATHSIG is not used: it
    fires when the parent *thread* ends, and the supervisor restarts workers from its own thread.)"""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(ORPHAN_CHECK_SECONDS)
        os._exit(0)

    if os.getppid() != parent:  # died before the death signal was armed
        os._exit(0)
    threading.Thread(target=watch, name="stemstream-orphan-watch", daemon=True).start()


def process_main(conn, tensors: dict[str, torch.Tensor], settings: WorkerSettings, parent: int | None = None) -> None:
    """Entry point of the worker process (spawned): receive the model, rebuild the worker, serve."""
    if parent is not None:
        _exit_with_parent(parent)
    try:
        # below the audio side and the audio server: when the CPU is short, a late window plays the
        # dry input (counted), which is better than an audio dropout
        os.nice(WORKER_NICENESS)
    except OSError:
        pass
    buffers = SharedBuffers.from_tensors(tensors)
    buffers.worker_state[WorkerSlot.STARTED] = 1
    try:
        if settings.threads:
            torch.set_num_threads(settings.threads)
        if not conn.poll(120):
            raise WorkerError("the model did not arrive from the parent process within 120 s")
        model = unshare_model(conn.recv())
        conn.close()
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
        self._shared = share_model(model)
        self._settings = settings
        self._process = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.is_alive()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def restart_stream(self) -> None:
        pass  # the worker process follows the ring's generation itself

    def exit_cause(self) -> str:
        message = self.buffers.error_message()
        if message:
            return message
        code = self._process.exitcode if self._process is not None else None
        if code is None:
            how = "is not running"
        elif code < 0:
            try:
                how = f"was killed by signal {signal.Signals(-code).name}"
            except ValueError:
                how = f"was killed by signal {-code}"
        else:
            how = f"exited with code {code}"
        if not self.buffers.worker_state[WorkerSlot.STARTED]:
            return f"the inference worker process {how} before it started; {MAIN_GUARD_HINT}"
        return f"the inference worker process {how}"

    def start(self, timeout: float = 120.0) -> None:
        if self.running:
            return
        self._reset_flags()
        ctx = torch.multiprocessing.get_context("spawn")
        parent_conn, child_conn = ctx.Pipe(duplex=False)
        self._process = ctx.Process(target=process_main, args=(parent_conn, self._tensors, self._settings, os.getpid()),
                                    name="stemstream-inference", daemon=True)
        try:
            self._process.start()
        except RuntimeError as exc:
            self._process = None
            child_conn.close()
            if "bootstrapping phase" in str(exc):
                raise WorkerError(MAIN_GUARD_HINT) from exc
            raise
        finally:
            parent_conn.close()  # the child's end: only the child holds it now, so a dead child breaks the pipe
        sender = threading.Thread(target=self._send, args=(child_conn,), name="stemstream-model-sender", daemon=True)
        sender.start()
        self._wait_ready(timeout)

    def _send(self, conn) -> None:
        try:
            conn.send(self._shared)
        except (OSError, EOFError):
            pass  # the child died before reading it: start() reports the death and its cause
        finally:
            conn.close()

    def stop(self) -> None:
        self._started = False
        self.buffers.worker_state[WorkerSlot.STOP] = 1
        process, self._process = self._process, None
        if process is None:
            return
        process.join(timeout=STOP_GRACE_SECONDS)
        if process.is_alive():
            process.kill()  # SIGKILL also ends a frozen (SIGSTOPped) process, which SIGTERM would not
            process.join(timeout=STOP_GRACE_SECONDS)


def make_host(kind: str, buffers: SharedBuffers, tensors: dict[str, torch.Tensor], model,
              settings: WorkerSettings, threads: int | None = None, remote=None, residual: str | None = None):
    """The host of ``kind`` ("inline", "thread", "process" or "remote"); in-process workers are built (and
    warmed up) here, a process worker when it starts. ``threads``: torch threads for a thread host (a
    process worker uses ``settings.threads``). "remote": ``remote.make_host(buffers, settings, residual)``
    (``streamer.remote.RemoteLink``: the windows run on a separation service)."""
    if kind == "remote":
        return remote.make_host(buffers, settings, residual)
    if kind == "inline":
        return InlineHost(buffers, model, settings)
    if kind == "thread":
        return ThreadHost(buffers, model, settings, threads)
    if kind == "process":
        return ProcessHost(buffers, tensors, model, settings)
    raise SettingsError(f"unknown worker host {kind!r}; one of {', '.join(HOST_KINDS)}")
