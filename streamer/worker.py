"""The inference side of the streaming engine: run the model on each due window, publish results.

The same :class:`WindowWorker` runs inline (``realtime=False``: ``process`` computes every due
window before returning), on a thread, or in a separate process. It shares only flat arrays with
the audio side: the input ring (written by the audio side), the output ring and hop tags (written
here) and two int64 state arrays, each written by one side only. Nothing here can make the audio
side wait.
"""
from __future__ import annotations

import logging
import os
import time
import traceback
from dataclasses import dataclass

import numpy as np
import torch

from .demix import autocast_context, model_stems_output
from .overlap import OverlapAdd
from .rtkernels import FED, GENERATION, TAG_SHIFT
from .rtkernels import CUR_HOP as AUDIO_CUR_HOP

log = logging.getLogger(__name__)

# worker_state layout (int64, written by the worker only, except STOP which the owner sets)
WINDOWS, LATE, SKIPPED, NONFINITE_OUT, READY, STOP, TIMES, FAILED = range(8)
WORKER_STATE_SIZE = 8
TIMES_CAPACITY = 4096
ERROR_BYTES = 2048


@dataclass
class SharedBuffers:
    """Flat arrays shared by the audio side and the worker (numpy views of torch storage)."""

    in_ring: np.ndarray      # (channels, cap_in) float32
    out_ring: np.ndarray     # (stems, channels, num_slots * hop) float32
    hop_tag: np.ndarray      # (num_slots,) int64
    audio_state: np.ndarray  # see rtkernels
    gain: np.ndarray         # (1,) float32: separated vs dry mix on the audio side
    worker_state: np.ndarray  # see WINDOWS...FAILED
    times: np.ndarray        # (TIMES_CAPACITY,) float64 seconds per window, a ring
    error: np.ndarray        # (ERROR_BYTES,) uint8: the worker's error message, NUL-padded

    @classmethod
    def allocate(cls, stems: int, channels: int, cap_in: int, num_slots: int, hop: int, shared: bool):
        def make(shape, dtype):
            t = torch.zeros(shape, dtype=dtype)
            return t.share_memory_() if shared else t

        tensors = dict(
            in_ring=make((channels, cap_in), torch.float32),
            out_ring=make((stems, channels, num_slots * hop), torch.float32),
            hop_tag=make((num_slots,), torch.int64),
            audio_state=make((8,), torch.int64),
            gain=make((1,), torch.float32),
            worker_state=make((WORKER_STATE_SIZE,), torch.int64),
            times=make((TIMES_CAPACITY,), torch.float64),
            error=make((ERROR_BYTES,), torch.uint8),
        )
        return cls.from_tensors(tensors), tensors

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> "SharedBuffers":
        return cls(**{k: v.numpy() for k, v in tensors.items()})

    def error_message(self) -> str | None:
        if not self.worker_state[FAILED]:
            return None
        return bytes(self.error).rstrip(b"\0").decode("utf-8", "replace") or "worker failed"

    def set_error(self, message: str) -> None:
        data = message.encode("utf-8")[: ERROR_BYTES - 1]
        self.error[:] = 0
        self.error[: len(data)] = np.frombuffer(data, np.uint8)
        self.worker_state[FAILED] = 1


class WindowRunner:
    """Runs the model on one window: (channels, window) numpy -> (stems, channels, window) numpy.

    On CUDA the window goes through a pinned host buffer with an asynchronous copy and the model
    runs under bf16/fp16 autocast (the model keeps its STFT and masks in fp32).
    """

    def __init__(self, model: torch.nn.Module, channels: int, window: int, device: torch.device,
                 precision: str):
        self.model = model
        self.device = device
        self.precision = precision
        self.window = window
        pin = device.type == "cuda"
        self.host = torch.zeros((1, channels, window), dtype=torch.float32, pin_memory=pin)
        self.host_np = self.host.numpy()

    def __call__(self, window: np.ndarray) -> np.ndarray:
        self.host_np[0] = window
        with torch.inference_mode(), autocast_context(self.device, self.precision):
            x = self.host.to(self.device, non_blocking=True)
            out = self.model(x)
        return model_stems_output(out, self.window)[0].cpu().numpy()


class WindowWorker:
    """Computes windows and publishes finished hop regions into the shared output ring."""

    def __init__(self, buffers: SharedBuffers, runner: WindowRunner, overlap: OverlapAdd, window: int, hop: int,
                 allowance: int = 0):
        self.b = buffers
        self.allowance = allowance  # samples between a window's input arriving and its region playing
        self.runner = runner
        self.overlap = overlap
        self.window, self.hop = window, hop
        self.num_slots = buffers.hop_tag.shape[0]
        self.win = np.zeros((buffers.in_ring.shape[0], window), np.float32)
        self.next_end = hop
        self.generation = int(buffers.audio_state[GENERATION])

    def reset(self) -> None:
        self.overlap.reset()
        self.next_end = self.hop

    def _read_window(self, end: int) -> bool:
        """Copy input [end - window, end) out of the ring; False if the audio side overwrote it meanwhile."""
        ring = self.b.in_ring
        cap = ring.shape[1]
        start = end - self.window
        lead = max(0, -start)  # before the stream started: silence
        self.win[:, :lead] = 0
        pos = np.arange(start + lead, end) % cap
        self.win[:, lead:] = ring[:, pos]
        return int(self.b.audio_state[FED]) - (start + lead) <= cap

    def run_window(self, end: int, generation: int) -> bool:
        """Compute the window ending at ``end`` and publish its hop region. True if published."""
        if not self._read_window(end):
            return False
        t0 = time.perf_counter()
        out = self.runner(self.win)
        took = time.perf_counter() - t0
        before = self.overlap.nonfinite
        region = self.overlap.add(out, self.win)
        self.b.worker_state[NONFINITE_OUT] += self.overlap.nonfinite - before
        k = end // self.hop - 1  # region k = [k*hop - lookahead, (k+1)*hop - lookahead)
        slot = k % self.num_slots
        if int(self.b.audio_state[GENERATION]) != generation:
            return False  # reset() while we computed: the result belongs to the old stream
        self.b.out_ring[:, :, slot * self.hop:(slot + 1) * self.hop] = region
        self.b.hop_tag[slot] = (generation << TAG_SHIFT) | k  # data first, then the tag
        n = int(self.b.worker_state[TIMES])
        self.b.times[n % TIMES_CAPACITY] = took
        self.b.worker_state[TIMES] = n + 1
        self.b.worker_state[WINDOWS] += 1
        if int(self.b.audio_state[AUDIO_CUR_HOP]) >= k:
            self.b.worker_state[LATE] += 1  # playback already entered this region on the dry fallback
        return True

    def run_due(self) -> int:
        """Inline mode: compute every window whose input has fully arrived, in order."""
        ran = 0
        fed = int(self.b.audio_state[FED])
        while fed >= self.next_end:
            self.run_window(self.next_end, self.generation)
            self.next_end += self.hop
            ran += 1
        return ran

    def serve(self, poll: float = 0.0005) -> None:
        """Real-time loop: run due windows in order, skipping those whose region already started playing."""
        b = self.b
        b.worker_state[READY] = 1
        while not b.worker_state[STOP]:
            gen = int(b.audio_state[GENERATION])
            if gen != self.generation:
                self.generation = gen
                self.reset()
            fed = int(b.audio_state[FED])
            if fed < self.next_end:
                time.sleep(poll)
                continue
            # the region of the window ending at e plays from when the input reaches e + allowance: a window
            # past that point can only be late, so jump to the oldest one that can still make it
            newest = (fed // self.hop) * self.hop
            target = min(newest, -(-(fed - self.allowance) // self.hop) * self.hop)
            if target > self.next_end:
                b.worker_state[SKIPPED] += (target - self.next_end) // self.hop
                self.overlap.shift(target - self.next_end)
                self.next_end = target
            self.run_window(self.next_end, gen)
            self.next_end += self.hop


def serve_guarded(worker: WindowWorker) -> None:
    """Run the loop; on an exception, record it (the audio side keeps playing the dry fallback)."""
    try:
        worker.serve()
    except Exception as exc:  # noqa: BLE001 - any failure must reach the owner, not kill the audio
        message = f"inference worker stopped: {type(exc).__name__}: {exc}"
        log.error("%s\n%s", message, traceback.format_exc())
        worker.b.set_error(message)


def process_main(tensors: dict[str, torch.Tensor], model: torch.nn.Module, settings: dict) -> None:
    """Entry point of the worker process (spawned): rebuild the worker around the shared arrays."""
    buffers = SharedBuffers.from_tensors(tensors)
    try:
        threads = settings.get("threads")
        if threads:
            torch.set_num_threads(threads)
        worker = build_worker(buffers, model, settings)
        warm_up_runner(worker.runner, settings["model_stems"], settings["channels"], settings["window"])
    except Exception as exc:  # noqa: BLE001
        buffers.set_error(f"inference worker could not start: {type(exc).__name__}: {exc}")
        return
    serve_guarded(worker)


def warm_up_runner(runner: WindowRunner, stems: int, channels: int, window: int) -> None:
    """Two windows of silence before going live; the first also checks the model's output shape."""
    out = runner(np.zeros((channels, window), np.float32))
    if out.shape != (stems, channels, window):
        raise ValueError(f"the model returned stems of shape {out.shape} for one window, expected "
                         f"{(stems, channels, window)} ({stems} stems, {channels} channels)")
    runner(np.zeros((channels, window), np.float32))


def build_worker(buffers: SharedBuffers, model, s: dict) -> WindowWorker:
    """The worker for ``model`` (an nn.Module is moved to the device and put in eval mode; any other
    callable is used as it is)."""
    device = torch.device(s["device"])
    if isinstance(model, torch.nn.Module):
        model = model.to(device).eval()
    runner = WindowRunner(model, s["channels"], s["window"], device, s["precision"])
    overlap = OverlapAdd(s["model_stems"], s["stems_out"], s["channels"], s["window"], s["hop"], s["lookahead"],
                         s["weights"], s["residual"])
    return WindowWorker(buffers, runner, overlap, s["window"], s["hop"], s.get("allowance", 0))


def default_worker_threads() -> int:
    """Torch threads for a worker process: leave one core to the audio side."""
    return max(1, (os.cpu_count() or 2) - 1)
