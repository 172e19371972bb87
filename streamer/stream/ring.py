"""The flat arrays the audio side and the inference worker share, and their one slot layout.

Each array is written by one side only (``STOP`` excepted, which the owner sets):

* ``in_ring`` (channels, cap_in) float32: the input, written by the audio side at absolute sample
  positions modulo its capacity;
* ``out_ring`` (stems, channels, num_slots * hop) float32 and ``hop_tag`` (num_slots,) int64: finished
  hop regions, written by the worker; hop region k lives in slot k % num_slots and is valid when its
  tag is ``(generation << TAG_SHIFT) | k`` (the data is written before the tag);
* ``audio_state`` (:class:`AudioSlot`) and ``gain`` (1,): the audio side's counters and fade;
* ``worker_state`` (:class:`WorkerSlot`), ``times`` (seconds per window, a ring) and ``error`` (the
  worker's message, NUL-padded): the worker's.

The arrays are numpy views of torch storage, shared memory when the worker is another process.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum

import numpy as np
import torch


class AudioSlot(IntEnum):
    """``audio_state`` (int64, written by the audio side only)."""

    FED = 0          # samples written into the input ring (absolute count since reset)
    OUT_POS = 1      # output samples produced (absolute count since reset)
    CUR_HOP = 2      # index of the hop region being played, -1 before the first one
    CUR_OK = 3       # 1 when that hop's separation was ready when playback reached it
    MISSES = 4       # hops played from the dry fallback because their result was not ready
    NONFINITE = 5    # NaN/inf input samples replaced by 0
    GENERATION = 6   # bumped by reset(); results of an older generation are ignored


class WorkerSlot(IntEnum):
    """``worker_state`` (int64, written by the worker only, except STOP which the owner sets)."""

    WINDOWS = 0       # windows computed and published
    LATE = 1          # results published after playback had entered their region
    SKIPPED = 2       # windows skipped because they could only be late
    NONFINITE_OUT = 3  # NaN/inf model output samples replaced by 0
    READY = 4         # 1 once the worker is warm and serving
    STOP = 5          # set by the owner: the worker should return
    TIMES = 6         # windows timed so far (``times`` holds the last TIMES_CAPACITY)
    FAILED = 7        # 1 when the worker stopped with an error (see ``error``)
    GRAPHED = 8       # 1 when the worker replays windows as a CUDA graph
    STARTED = 9       # 1 once stemstream's worker code runs (a process that dies before did not get that far)
    ONNX = 10         # 1 when the model core runs in ONNX Runtime (backend "onnx"), 0 with torch


AUDIO_STATE_SIZE = len(AudioSlot) + 1  # one spare slot
WORKER_STATE_SIZE = len(WorkerSlot)
TIMES_CAPACITY = 4096
ERROR_BYTES = 2048
# A published hop's tag is (generation << TAG_SHIFT) | hop index, so stale results never match.
TAG_SHIFT = 40


def ring_sizes(window: int, hop: int, latency: int) -> tuple[int, int, int]:
    """(max sub-block, input capacity, output slots) for these settings.

    The audio side works in sub-blocks of at most ``max(256, hop)`` samples; the input ring holds a
    window plus the latency plus two sub-blocks of slack, and the output ring enough hop slots to
    cover the latency and a sub-block with four to spare.
    """
    max_block = max(256, hop)
    cap_in = window + latency + 2 * max_block
    num_slots = 4 + math.ceil((latency + max_block) / hop)
    return max_block, cap_in, num_slots


@dataclass
class SharedBuffers:
    """Flat arrays shared by the audio side and the worker (numpy views of torch storage)."""

    in_ring: np.ndarray       # (channels, cap_in) float32
    out_ring: np.ndarray      # (stems, channels, num_slots * hop) float32
    hop_tag: np.ndarray       # (num_slots,) int64
    audio_state: np.ndarray   # AudioSlot
    gain: np.ndarray          # (1,) float32: separated vs dry mix on the audio side
    worker_state: np.ndarray  # WorkerSlot
    times: np.ndarray         # (TIMES_CAPACITY,) float64 seconds per window, a ring
    error: np.ndarray         # (ERROR_BYTES,) uint8: the worker's error message, NUL-padded

    @classmethod
    def allocate(cls, stems: int, channels: int, cap_in: int, num_slots: int, hop: int, shared: bool):
        """New zeroed buffers and the torch tensors behind them (to hand to a worker process)."""
        def make(shape, dtype):
            t = torch.zeros(shape, dtype=dtype)
            return t.share_memory_() if shared else t

        tensors = dict(
            in_ring=make((channels, cap_in), torch.float32),
            out_ring=make((stems, channels, num_slots * hop), torch.float32),
            hop_tag=make((num_slots,), torch.int64),
            audio_state=make((AUDIO_STATE_SIZE,), torch.int64),
            gain=make((1,), torch.float32),
            worker_state=make((WORKER_STATE_SIZE,), torch.int64),
            times=make((TIMES_CAPACITY,), torch.float64),
            error=make((ERROR_BYTES,), torch.uint8),
        )
        return cls.from_tensors(tensors), tensors

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> "SharedBuffers":
        return cls(**{k: v.numpy() for k, v in tensors.items()})

    @property
    def num_slots(self) -> int:
        return self.hop_tag.shape[0]

    def clear_stream(self) -> None:
        """Forget the stream's audio: no hop published, nothing fed or played, full separation."""
        self.hop_tag[:] = -1
        st = self.audio_state
        st[AudioSlot.FED] = st[AudioSlot.OUT_POS] = 0
        st[AudioSlot.CUR_HOP] = -1
        st[AudioSlot.CUR_OK] = 0
        self.gain[0] = 1.0

    def clear_counters(self) -> None:
        """Zero the counters and timings both sides keep."""
        self.audio_state[AudioSlot.MISSES] = self.audio_state[AudioSlot.NONFINITE] = 0
        for slot in (WorkerSlot.WINDOWS, WorkerSlot.LATE, WorkerSlot.SKIPPED, WorkerSlot.TIMES,
                     WorkerSlot.NONFINITE_OUT):
            self.worker_state[slot] = 0

    def tag(self, k: int) -> int:
        """The tag hop region ``k`` of the current generation has once published."""
        return (int(self.audio_state[AudioSlot.GENERATION]) << TAG_SHIFT) | k

    def is_published(self, k: int) -> bool:
        return int(self.hop_tag[k % self.num_slots]) == self.tag(k)

    def window_times(self) -> np.ndarray:
        """Seconds per window of the most recent windows (at most TIMES_CAPACITY)."""
        n = int(self.worker_state[WorkerSlot.TIMES])
        return self.times[: min(n, TIMES_CAPACITY)].copy() if n else np.zeros(0)

    def record_time(self, seconds: float) -> None:
        n = int(self.worker_state[WorkerSlot.TIMES])
        self.times[n % TIMES_CAPACITY] = seconds
        self.worker_state[WorkerSlot.TIMES] = n + 1

    def error_message(self) -> str | None:
        if not self.worker_state[WorkerSlot.FAILED]:
            return None
        return bytes(self.error).rstrip(b"\0").decode("utf-8", "replace") or "worker failed"

    def set_error(self, message: str) -> None:
        data = message.encode("utf-8")[: ERROR_BYTES - 1]
        self.error[:] = 0
        self.error[: len(data)] = np.frombuffer(data, np.uint8)
        self.worker_state[WorkerSlot.FAILED] = 1
