"""Recording a live session: the audio callback hands blocks over, a background thread writes them.

``DIR/input.wav`` is what entered the engine (at the model's rate), ``DIR/<bus>.wav`` every bus and
``DIR/stems/<stem>.wav`` every stem (after its effects), all 32-bit float WAV, plus
``DIR/session.json`` (see :mod:`bridge.live.session`). The buses and stems are ``latency_samples``
behind ``input.wav``: what the engine played for each input sample.

The hand-over is a single-producer single-consumer ring of preallocated slots: the callback copies
a block into the next free slot and bumps a counter; it never waits and allocates nothing. When
the writer falls behind (a slow disk) and no slot is free, the block is dropped and counted; the
next block that gets through carries the length of the gap, and the writer fills it with silence, so
every file keeps the session's timeline (a dropped block is a silent gap, never a shift). The counts
are reported at the end and in ``session.json``.

Files are written under temporary names (``.name.wav.partial``) and renamed when closed, so a file
with its final name is complete; :meth:`Recorder.close` closes and renames everything whatever
stopped the session (Ctrl-C, ``--seconds``, an error, a lost device).
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from typing import Sequence

import numpy as np
import soundfile as sf

from streamer.errors import AudioError
from streamer.outputs import make_dirs, remove_empty_dirs

log = logging.getLogger(__name__)

BUFFER_SECONDS = 4.0     # audio the ring holds before blocks are dropped
SESSION_FILE = "session.json"

# ring counters (int64): blocks handed over, blocks written, blocks dropped, frames dropped,
# the gap (frames) the next handed-over block must be preceded by
HANDED, TAKEN, DROPPED, DROPPED_FRAMES, GAP = range(5)


def _check_folder(folder: str) -> None:
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise AudioError(f"cannot record into {folder}: it is a file, not a folder")
    if os.path.isdir(folder):
        taken = [n for n in ("input.wav", SESSION_FILE) if os.path.exists(os.path.join(folder, n))]
        if taken:
            raise AudioError(f"{folder} already holds a recording ({', '.join(taken)}); choose a new folder "
                             "for this take")


class _Track:
    """One WAV file being written under a temporary name."""

    def __init__(self, path: str, rate: int, channels: int):
        self.path = path
        self.tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.partial")
        self.file = sf.SoundFile(self.tmp, "w", samplerate=rate, channels=channels, subtype="FLOAT", format="WAV")
        self.frames = 0

    def write(self, block: np.ndarray) -> None:
        self.file.write(block)
        self.frames += block.shape[0]

    def close(self) -> None:
        if not self.file.closed:
            self.file.close()
        if os.path.exists(self.tmp):
            os.replace(self.tmp, self.path)


class Recorder:
    """Records the input, the buses and the stems of a live session into ``folder``.

    ``push`` runs in the audio callback; ``start`` starts the writer thread; ``close`` drains the ring,
    closes and renames every file and returns the counters. ``max_frames`` is the largest block the
    callback will hand over.
    """

    def __init__(self, folder: str | os.PathLike, sample_rate: int, channels: int, buses: Sequence[str],
                 stems: Sequence[str], max_frames: int, buffer_seconds: float = BUFFER_SECONDS,
                 poll: float = 0.01):
        self.folder = os.fspath(folder)
        _check_folder(self.folder)
        self.sample_rate = int(sample_rate)
        self.channels = int(channels)
        self.buses = list(buses)
        self.stems = list(stems)
        self.max_frames = int(max_frames)
        self.poll = poll
        parts = 1 + len(self.buses) + len(self.stems)
        self.slots = max(4, int(np.ceil(buffer_seconds * self.sample_rate / max(1, self.max_frames))))
        self._data = np.zeros((self.slots, parts * self.channels, self.max_frames), np.float32)
        self._lengths = np.zeros(self.slots, np.int64)
        self._gaps = np.zeros(self.slots, np.int64)
        self.counters = np.zeros(5, np.int64)
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._made = make_dirs(os.path.join(self.folder, "stems"))
        self._tracks: list[_Track] = []
        names = [os.path.join(self.folder, f"{n}.wav") for n in ["input"] + self.buses]
        names += [os.path.join(self.folder, "stems", f"{s}.wav") for s in self.stems]
        try:
            for path in names:
                self._tracks.append(_Track(path, self.sample_rate, self.channels))
        except (OSError, sf.LibsndfileError) as exc:
            self.discard()
            raise AudioError(f"cannot record into {self.folder}: {getattr(exc, 'strerror', None) or exc}") from exc

    @property
    def paths(self) -> list[str]:
        return [t.path for t in self._tracks]

    # ------------------------------------------------------------------ audio side
    def push(self, dry_in: np.ndarray, buses: np.ndarray, stems: np.ndarray, n: int) -> None:
        """Hand over ``n`` frames: the engine's input (channels, >= n), buses (buses, channels, >= n) and
        stems (stems, channels, >= n). Never waits; a block with no free slot is dropped and counted."""
        c = self.counters
        if n <= 0:
            return
        if c[HANDED] - c[TAKEN] >= self.slots:
            c[DROPPED] += 1
            c[DROPPED_FRAMES] += n
            c[GAP] += n
            return
        slot = int(c[HANDED] % self.slots)
        d = self._data[slot]
        ch = self.channels
        d[:ch, :n] = dry_in[:, :n]
        row = ch
        for b in range(buses.shape[0]):
            d[row:row + ch, :n] = buses[b, :, :n]
            row += ch
        for s in range(stems.shape[0]):
            d[row:row + ch, :n] = stems[s, :, :n]
            row += ch
        self._lengths[slot] = n
        self._gaps[slot] = c[GAP]
        c[GAP] = 0
        c[HANDED] += 1  # last: the writer may take the slot from here on

    # ------------------------------------------------------------------ writer
    def start(self) -> "Recorder":
        self._thread = threading.Thread(target=self._run, name="stemstream-recorder", daemon=True)
        self._thread.start()
        return self

    def _write_gap(self, frames: int) -> None:
        zeros = np.zeros((min(frames, 65536), self.channels), np.float32)
        while frames > 0:
            k = min(frames, zeros.shape[0])
            for t in self._tracks:
                t.write(zeros[:k])
            frames -= k

    def _drain(self) -> None:
        c = self.counters
        while c[TAKEN] < c[HANDED]:
            slot = int(c[TAKEN] % self.slots)
            n = int(self._lengths[slot])
            if self._gaps[slot]:
                self._write_gap(int(self._gaps[slot]))
            block = self._data[slot, :, :n]
            for i, t in enumerate(self._tracks):
                t.write(block[i * self.channels:(i + 1) * self.channels].T)
            c[TAKEN] += 1

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._drain()
                time.sleep(self.poll)
            self._drain()
        except (OSError, sf.LibsndfileError, RuntimeError) as exc:
            self.error = f"recording stopped: {getattr(exc, 'strerror', None) or exc}"
            log.error("%s", self.error)

    # ------------------------------------------------------------------ end
    def close(self, timeout: float = 30.0) -> dict:
        """Stop the writer after it wrote everything handed over, close and rename every file (also when
        the writer failed: what it wrote stays readable), and return the counters."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        elif self.error is None:
            try:
                self._drain()
            except (OSError, sf.LibsndfileError, RuntimeError) as exc:
                self.error = f"recording stopped: {getattr(exc, 'strerror', None) or exc}"
        c = self.counters
        if self.error is None and c[GAP]:
            try:
                self._write_gap(int(c[GAP]))  # blocks dropped at the very end: keep the timeline
            except (OSError, sf.LibsndfileError, RuntimeError) as exc:
                self.error = f"recording stopped: {getattr(exc, 'strerror', None) or exc}"
        for t in self._tracks:
            try:
                t.close()
            except (OSError, RuntimeError) as exc:
                self.error = self.error or f"cannot close {t.path}: {exc}"
        return self.summary()

    def discard(self) -> None:
        """Remove everything this recorder created (a session that never started to play)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
        for t in self._tracks:
            try:
                if not t.file.closed:
                    t.file.close()
            except (OSError, RuntimeError):
                pass
            for path in (t.tmp, t.path):
                if os.path.exists(path):
                    os.remove(path)
        remove_empty_dirs(self._made)

    def summary(self) -> dict:
        c = self.counters
        return {"folder": self.folder, "frames": self._tracks[0].frames if self._tracks else 0,
                "dropped_blocks": int(c[DROPPED]), "dropped_frames": int(c[DROPPED_FRAMES]),
                "error": self.error}


def write_json(path: str, data: dict) -> None:
    """``data`` as JSON at ``path``, written under a temporary name and renamed."""
    tmp = os.path.join(os.path.dirname(path) or ".", f".{os.path.basename(path)}.partial")
    with open(tmp, "w") as fh:
        json.dump(data, fh, indent=2, default=float)
        fh.write("\n")
    os.replace(tmp, path)
