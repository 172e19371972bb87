"""The inference side of the streaming engine: run the model on each due window, publish results.

The same :class:`WindowWorker` runs inline (``process`` computes every due window before
returning), on a thread or in a separate process (see ``streamer.stream.host``). It shares only the
flat arrays of ``streamer.stream.ring`` with the audio side; nothing here can make the audio side wait.
"""
from __future__ import annotations

import logging
import time
import traceback

import numpy as np

from ..inference.runner import WindowRunner, make_runner
from .overlap import OverlapAdd, window_weights
from .ring import AudioSlot, SharedBuffers, WorkerSlot
from .settings import WorkerSettings

log = logging.getLogger(__name__)


def skip_target(fed: int, next_end: int, hop: int, allowance: int) -> int:
    """The end of the next window a real-time worker should compute.

    The region of the window ending at e plays from when the input reaches e + ``allowance``, so a
    window whose region already started playing can only be late: jump to the oldest window that
    can still make it, but never past the newest window whose input has fully arrived (``fed``).
    Returns ``next_end`` when no window needs skipping.
    """
    newest = (fed // hop) * hop
    oldest_in_time = -(-(fed - allowance) // hop) * hop
    return max(next_end, min(newest, oldest_in_time))


class WindowWorker:
    """Computes windows and publishes finished hop regions into the shared output ring."""

    def __init__(self, buffers: SharedBuffers, runner: WindowRunner, overlap: OverlapAdd, window: int, hop: int,
                 allowance: int = 0):
        self.b = buffers
        self.allowance = allowance  # samples between a window's input arriving and its region playing
        self.runner = runner
        self.overlap = overlap
        self.window, self.hop = window, hop
        self.num_slots = buffers.num_slots
        self.win = np.zeros((buffers.in_ring.shape[0], window), np.float32)
        self.next_end = hop
        self.generation = int(buffers.audio_state[AudioSlot.GENERATION])

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
        return int(self.b.audio_state[AudioSlot.FED]) - (start + lead) <= cap

    def run_window(self, end: int, generation: int) -> bool:
        """Compute the window ending at ``end`` and publish its hop region. True if published."""
        if not self._read_window(end):
            return False
        b = self.b
        t0 = time.perf_counter()
        out = self.runner(self.win)
        took = time.perf_counter() - t0
        before = self.overlap.nonfinite
        region = self.overlap.add(out, self.win)
        b.worker_state[WorkerSlot.NONFINITE_OUT] += self.overlap.nonfinite - before
        k = end // self.hop - 1  # region k = [k*hop - lookahead, (k+1)*hop - lookahead)
        slot = k % self.num_slots
        if int(b.audio_state[AudioSlot.GENERATION]) != generation:
            return False  # reset() while we computed: the result belongs to the old stream
        b.out_ring[:, :, slot * self.hop:(slot + 1) * self.hop] = region
        b.hop_tag[slot] = b.tag(k)  # data first, then the tag
        b.record_time(took)
        b.worker_state[WorkerSlot.WINDOWS] += 1
        if int(b.audio_state[AudioSlot.CUR_HOP]) >= k:
            b.worker_state[WorkerSlot.LATE] += 1  # playback already entered this region on the dry fallback
        return True

    def run_due(self) -> int:
        """Inline mode: compute every window whose input has fully arrived, in order."""
        ran = 0
        fed = int(self.b.audio_state[AudioSlot.FED])
        while fed >= self.next_end:
            self.run_window(self.next_end, self.generation)
            self.next_end += self.hop
            ran += 1
        return ran

    def serve(self, poll: float = 0.0005) -> None:
        """Real-time loop: run due windows in order, skipping those whose region already started playing."""
        b = self.b
        b.worker_state[WorkerSlot.READY] = 1
        while not b.worker_state[WorkerSlot.STOP]:
            gen = int(b.audio_state[AudioSlot.GENERATION])
            if gen != self.generation:
                self.generation = gen
                self.reset()
            fed = int(b.audio_state[AudioSlot.FED])
            if fed < self.next_end:
                time.sleep(poll)
                continue
            target = skip_target(fed, self.next_end, self.hop, self.allowance)
            if target > self.next_end:
                b.worker_state[WorkerSlot.SKIPPED] += (target - self.next_end) // self.hop
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


def build_worker(buffers: SharedBuffers, model, s: WorkerSettings) -> WindowWorker:
    """The worker for ``model`` under settings ``s``, warmed up (two windows of silence)."""
    st = s.stream
    runner = make_runner(model, st.window, device=s.device, precision=s.precision, backend=s.backend,
                         channels=s.channels, cuda_graph=s.cuda_graph, threads=s.threads)
    buffers.worker_state[WorkerSlot.GRAPHED] = int(runner.graphed)
    buffers.worker_state[WorkerSlot.ONNX] = int(runner.backend == "onnx")
    weights = window_weights(st.window, st.hop, st.lookahead, st.crossfade)
    overlap = OverlapAdd(s.model_stems, s.stems_out, s.channels, st.window, st.hop, st.lookahead, weights, s.residual)
    runner.warm_up(s.model_stems)
    return WindowWorker(buffers, runner, overlap, st.window, st.hop, s.allowance)
