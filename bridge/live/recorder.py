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
stopped the session (a signal, ``--seconds``, an error, a lost device).

What cannot be caught (SIGKILL, a crash, a power cut) still leaves readable files: the WAV files are
written by this module (32-bit float, a fixed 58-byte header) and, about once a second, the writer
thread flushes the data to the disk and then rewrites the header's sizes, so a header never claims
more than the file holds, even for a strict reader. The next run asked to record into that folder
recovers the take (sizes from what is on the disk, the files renamed, ``session.json`` marked
``"stopped_by": "killed"``) and refuses to record over it (:func:`check_folder`).

A full disk (or a quota, a file-size limit, a failing disk) stops the recording, never the show: the
files are cut to one common length, their headers made final, the reason said in words (``no space
left on /dev/sdb1 (mounted at /media/rec) after 12.3 s``) and kept for the summary and
``session.json``, which has space kept for it from the start (a hidden reserve file, released just
before the final ``session.json`` is written).

The engine replaces non-finite input samples (NaN, inf) with 0; ``input.wav`` records what entered the
engine, so the writer does the same and counts them.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import re
import struct
import threading
import time
from typing import Sequence

import numpy as np

from streamer.errors import AudioError
from streamer.outputs import make_dirs, remove_empty_dirs

log = logging.getLogger(__name__)

BUFFER_SECONDS = 4.0     # audio the ring holds before blocks are dropped
SYNC_SECONDS = 1.0       # how often the data is flushed to the disk and the headers' sizes rewritten
RESERVE_BYTES = 256 * 1024   # disk space kept for the final session.json (and the headers) on a full disk
SESSION_FILE = "session.json"
RESERVE_FILE = ".session.json.reserve"

# ring counters (int64): blocks handed over, blocks written, blocks dropped, frames dropped,
# the gap (frames) the next handed-over block must be preceded by
HANDED, TAKEN, DROPPED, DROPPED_FRAMES, GAP = range(5)

# the WAV header written here: RIFF, fmt (IEEE float, 18 bytes), fact (frames), data
_FMT_FLOAT = 3
_HEADER = 58
_RIFF_SIZE_AT, _FACT_AT, _DATA_SIZE_AT = 4, 46, 54
_WAV_LIMIT = 0xFFFFFFFF - (_HEADER - 8)       # the most data bytes a RIFF size can describe
_PARTIAL = re.compile(r"^\.(.+\.wav)\.partial$")
_datasync = getattr(os, "fdatasync", os.fsync)   # macOS has only fsync


def _tmp_name(path: str) -> str:
    return os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.partial")


def _header(rate: int, channels: int, data_bytes: int) -> bytes:
    align = 4 * channels
    return (b"RIFF" + struct.pack("<I", _HEADER - 8 + data_bytes) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHHH", 18, _FMT_FLOAT, channels, rate, rate * align, align, 32, 0)
            + b"fact" + struct.pack("<II", 4, data_bytes // align)
            + b"data" + struct.pack("<I", data_bytes))


class _Track:
    """One 32-bit float WAV file being written under a temporary name (unbuffered: what ``write``
    returned from is in the kernel, and survives the process)."""

    def __init__(self, path: str, rate: int, channels: int):
        self.path = path
        self.tmp = _tmp_name(path)
        self.rate, self.channels, self.align = rate, channels, 4 * channels
        self.data_bytes = 0          # written after the header (a failed write may leave part of a frame)
        self.fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o666)
        try:
            self._write_all(_header(rate, channels, 0))
        except OSError:
            self._close_fd()
            os.remove(self.tmp)
            raise

    @property
    def frames(self) -> int:
        return self.data_bytes // self.align

    @property
    def closed(self) -> bool:
        return self.fd < 0

    def _write_all(self, data) -> int:
        view = memoryview(data).cast("B")
        done = 0
        while done < len(view):
            done += os.write(self.fd, view[done:])
        return done

    def write(self, block: np.ndarray) -> None:
        """Append ``block`` (frames, channels)."""
        if self.fd < 0:
            raise OSError(errno.EBADF, "the file is closed")
        data = np.ascontiguousarray(block, dtype="<f4")
        if self.data_bytes + data.nbytes > _WAV_LIMIT:
            raise OSError(errno.EFBIG, "WAV files end at 4 GiB")
        view = memoryview(data).cast("B")
        done = 0
        try:
            while done < len(view):
                done += os.write(self.fd, view[done:])
        finally:
            self.data_bytes += done

    def sync(self) -> None:
        """Flush the data to the disk, then make the header describe it (never more than is there)."""
        if self.fd < 0:
            return
        frames_bytes = self.frames * self.align
        try:
            _datasync(self.fd)
        except OSError:
            pass   # a file system without it (or a failing disk: the next write says so)
        self.set_header(frames_bytes)

    def set_header(self, data_bytes: int) -> None:
        os.pwrite(self.fd, struct.pack("<I", _HEADER - 8 + data_bytes), _RIFF_SIZE_AT)
        os.pwrite(self.fd, struct.pack("<I", data_bytes // self.align), _FACT_AT)
        os.pwrite(self.fd, struct.pack("<I", data_bytes), _DATA_SIZE_AT)

    def cut(self, frames: int) -> None:
        """Keep the first ``frames`` frames (a full disk: every file ends at the same frame)."""
        if self.fd < 0:
            return
        frames = min(frames, self.frames)
        os.ftruncate(self.fd, _HEADER + frames * self.align)   # frees space: works on a full disk
        self.data_bytes = frames * self.align
        os.lseek(self.fd, 0, os.SEEK_END)

    def _close_fd(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass

    def close(self) -> None:
        """Final sizes in the header, then the file under its own name (renamed also when the header could
        not be written: the last one synced describes what it holds)."""
        failure = None
        if self.fd >= 0:
            try:
                if self.data_bytes % self.align:
                    self.cut(self.frames)
                self.set_header(self.frames * self.align)
            except OSError as exc:
                failure = exc
            self._close_fd()
        if os.path.exists(self.tmp):
            os.replace(self.tmp, self.path)
        if failure is not None:
            raise failure

    def discard(self) -> None:
        self._close_fd()
        for path in (self.tmp, self.path):
            if os.path.exists(path):
                os.remove(path)


# ---------------------------------------------------------------------- words for a failing disk
def mount_of(path: str) -> tuple[str, str]:
    """(device, mount point) of the file system holding ``path`` (from /proc/self/mounts where there is
    one; the mount point alone elsewhere)."""
    path = os.path.realpath(path)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    mount = path
    while mount != os.path.dirname(mount) and not os.path.ismount(mount):
        mount = os.path.dirname(mount)
    device = ""
    try:
        with open("/proc/self/mounts") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) >= 2 and parts[1].replace("\\040", " ") == mount:
                    device = parts[0]
    except OSError:
        pass
    return device, mount


def disk_words(exc: OSError, folder: str) -> str:
    """What went wrong writing into ``folder``, in words a sound engineer reads at a glance."""
    device, mount = mount_of(folder)
    where = f"{device} (mounted at {mount})" if device and device != mount else mount
    if exc.errno == errno.ENOSPC:
        return f"no space left on {where}"
    if exc.errno == errno.EDQUOT:
        return f"the disk quota is used up on {where}"
    if exc.errno == errno.EFBIG:
        return ("WAV files end at 4 GiB" if "4 GiB" in str(exc) else
                "the file size limit was reached (ulimit -f)")
    if exc.errno == errno.EIO:
        return f"input/output error on {where} (was the disk removed, or is it failing?)"
    if exc.errno == errno.EROFS:
        return f"{where} became read-only (a file system error?)"
    return f"{exc.strerror or exc} ({where})"


# ---------------------------------------------------------------------- a folder's earlier takes
def _fix_wav(path: str) -> tuple[int, int]:
    """Make the header of a WAV file that was never closed describe the whole frames it holds; returns
    (frames, sample rate). Works on this module's files and on the older libsndfile ones."""
    with open(path, "r+b") as fh:
        head = fh.read(65536)
        size = os.fstat(fh.fileno()).st_size
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            raise ValueError("not a WAV file")
        pos, align, rate, fact_at = 12, 0, 0, None
        while pos + 8 <= len(head):
            cid, n = head[pos:pos + 4], struct.unpack("<I", head[pos + 4:pos + 8])[0]
            if cid == b"fmt ":
                _, ch, rate, _, align = struct.unpack("<HHIIH", head[pos + 8:pos + 22])
            elif cid == b"fact":
                fact_at = pos + 8
            elif cid == b"data":
                if not align:
                    raise ValueError("no fmt chunk before the data")
                start = pos + 8
                frames = max(0, size - start) // align
                fh.truncate(start + frames * align)
                fh.seek(4)
                fh.write(struct.pack("<I", start + frames * align - 8))
                fh.seek(pos + 4)
                fh.write(struct.pack("<I", frames * align))
                if fact_at is not None:
                    fh.seek(fact_at)
                    fh.write(struct.pack("<I", frames))
                return frames, rate
            pos += 8 + n + (n & 1)
        raise ValueError("no data chunk")


def interrupted_files(folder: str) -> list[tuple[str, str]]:
    """(temporary file, final name) of every WAV file a recording in ``folder`` left unfinished."""
    found = []
    for sub in (folder, os.path.join(folder, "stems")):
        try:
            names = sorted(os.listdir(sub))
        except OSError:
            continue
        for name in names:
            m = _PARTIAL.match(name)
            if m:
                found.append((os.path.join(sub, name), os.path.join(sub, m.group(1))))
    return found


def recover_take(folder: str) -> tuple[list[str], float]:
    """Finish the take a killed run left in ``folder``: fix each file's sizes, give it its own name (a name
    already taken gets ``.recovered`` added: nothing is replaced), remove the leftovers of the run, and mark
    ``session.json`` (written when that run started) ``"stopped_by": "killed"``. Returns the files (relative
    to ``folder``) and the seconds recovered."""
    files, seconds = [], 0.0
    for tmp, final in interrupted_files(folder):
        try:
            frames, rate = _fix_wav(tmp)
        except (OSError, ValueError, struct.error):
            continue            # not one of ours: left as it is
        if os.path.exists(final):
            final = final[:-4] + ".recovered.wav"
        if os.path.exists(final):
            continue
        os.replace(tmp, final)
        files.append(os.path.relpath(final, folder))
        if rate:
            seconds = max(seconds, frames / rate)
    for name in (RESERVE_FILE, f".{SESSION_FILE}.partial"):
        try:
            os.remove(os.path.join(folder, name))
        except OSError:
            pass
    path = os.path.join(folder, SESSION_FILE)
    try:
        with open(path) as fh:
            session = json.load(fh)
    except (OSError, ValueError):
        session = None
    if isinstance(session, dict) and session.get("stopped_by") is None or files and session is None:
        session = dict(session or {})
        session.update(stopped_by="killed", recovered_seconds=round(seconds, 3),
                       error="the run that recorded this take ended without closing its files (killed, crashed "
                             "or the power was cut); a later run recovered them",
                       files=sorted(set(session.get("files") or []) | set(files) | {SESSION_FILE}))
        try:
            write_json(path, session)
        except OSError:
            pass
    return files, seconds


def check_folder(folder: str) -> None:
    """Refuse a folder that is a file or holds a take. A take a killed run left behind is recovered first
    (:func:`recover_take`), then refused like any other: a take is never recorded over."""
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise AudioError(f"cannot record into {folder}: it is a file, not a folder")
    if not os.path.isdir(folder):
        return
    unfinished = interrupted_files(folder)
    session = None
    try:
        with open(os.path.join(folder, SESSION_FILE)) as fh:
            session = json.load(fh)
    except (OSError, ValueError):
        pass
    if unfinished or (isinstance(session, dict) and "stopped_by" in session and session["stopped_by"] is None):
        files, seconds = recover_take(folder)
        shown = ", ".join(files[:4]) + (f" and {len(files) - 4} more" if len(files) > 4 else "")
        raise AudioError(f"{folder} holds an interrupted take (its run was killed before it closed the files); "
                         + (f"recovered {seconds:.1f} s in {shown}" if files else "its session.json is kept")
                         + "; choose a new folder for this take")
    taken = [n for n in ("input.wav", SESSION_FILE) if os.path.exists(os.path.join(folder, n))]
    if taken:
        raise AudioError(f"{folder} already holds a recording ({', '.join(taken)}); choose a new folder "
                         "for this take")


class Recorder:
    """Records the input, the buses and the stems of a live session into ``folder``.

    ``push`` runs in the audio callback; ``start`` starts the writer thread; ``close`` drains the ring,
    closes and renames every file and returns the counters. ``max_frames`` is the largest block the
    callback will hand over.
    """

    def __init__(self, folder: str | os.PathLike, sample_rate: int, channels: int, buses: Sequence[str],
                 stems: Sequence[str], max_frames: int, buffer_seconds: float = BUFFER_SECONDS,
                 poll: float = 0.01, sync_seconds: float = SYNC_SECONDS):
        self.folder = os.fspath(folder)
        check_folder(self.folder)
        self.sample_rate = int(sample_rate)
        self.channels = int(channels)
        self.buses = list(buses)
        self.stems = list(stems)
        self.max_frames = int(max_frames)
        self.poll = poll
        self.sync_seconds = sync_seconds
        parts = 1 + len(self.buses) + len(self.stems)
        self.slots = max(4, int(np.ceil(buffer_seconds * self.sample_rate / max(1, self.max_frames))))
        self._data = np.zeros((self.slots, parts * self.channels, self.max_frames), np.float32)
        self._lengths = np.zeros(self.slots, np.int64)
        self._gaps = np.zeros(self.slots, np.int64)
        self.counters = np.zeros(5, np.int64)
        self.error: str | None = None
        self.stopped = False            # the writer gave up (a full disk): the callback hands nothing over
        self.nonfinite = 0              # non-finite input samples written as 0 (as the engine took them)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._made = make_dirs(os.path.join(self.folder, "stems"))
        self._tracks: list[_Track] = []
        self._reserve = os.path.join(self.folder, RESERVE_FILE)
        self._wrote_session = False
        names = [os.path.join(self.folder, f"{n}.wav") for n in ["input"] + self.buses]
        names += [os.path.join(self.folder, "stems", f"{s}.wav") for s in self.stems]
        try:
            with open(self._reserve, "wb") as fh:
                fh.write(b"\0" * RESERVE_BYTES)     # real bytes: space a full disk cannot take back
            for path in names:
                self._tracks.append(_Track(path, self.sample_rate, self.channels))
        except OSError as exc:
            self.discard()
            raise AudioError(f"cannot record into {self.folder}: {disk_words(exc, self.folder)}") from exc

    @property
    def paths(self) -> list[str]:
        return [t.path for t in self._tracks]

    @property
    def frames(self) -> int:
        """Frames every file holds."""
        return min((t.frames for t in self._tracks), default=0)

    # ------------------------------------------------------------------ audio side
    def push(self, dry_in: np.ndarray, buses: np.ndarray, stems: np.ndarray, n: int) -> None:
        """Hand over ``n`` frames: the engine's input (channels, >= n), buses (buses, channels, >= n) and
        stems (stems, channels, >= n). Never waits; a block with no free slot is dropped and counted."""
        c = self.counters
        if n <= 0 or self.stopped:
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
        ch = self.channels
        while c[TAKEN] < c[HANDED]:
            slot = int(c[TAKEN] % self.slots)
            n = int(self._lengths[slot])
            if self._gaps[slot]:
                self._write_gap(int(self._gaps[slot]))
            block = self._data[slot, :, :n]
            dry = block[:ch]
            bad = ~np.isfinite(dry)
            if bad.any():      # as the engine took them
                self.nonfinite += int(bad.sum())
                dry[bad] = 0.0
            for i, t in enumerate(self._tracks):
                t.write(block[i * ch:(i + 1) * ch].T)
            c[TAKEN] += 1

    def _sync(self) -> None:
        for t in self._tracks:
            t.sync()

    def _run(self) -> None:
        try:
            next_sync = time.monotonic() + self.sync_seconds
            while not self._stop.is_set():
                self._drain()
                if time.monotonic() >= next_sync:
                    self._sync()
                    next_sync = time.monotonic() + self.sync_seconds
                time.sleep(self.poll)
            self._drain()
        except Exception as exc:  # noqa: BLE001 - an OSError above all; whatever it is, the show goes on
            self._fail(exc)

    def _fail(self, exc: Exception) -> None:
        """The writer cannot go on: every file is cut to the frames all of them hold, and the reason kept."""
        self.stopped = True
        common = self.frames
        for t in self._tracks:
            try:
                t.cut(common)
                t.set_header(common * t.align)
            except OSError:
                pass
        words = disk_words(exc, self.folder) if isinstance(exc, OSError) else f"{type(exc).__name__}: {exc}"
        self.error = (f"recording stopped: {words}, after {common / self.sample_rate:.1f} s "
                      f"recorded in {self.folder}; the show goes on")
        log.error("%s", self.error)

    # ------------------------------------------------------------------ end
    def close(self, timeout: float = 30.0) -> dict:
        """Stop the writer after it wrote everything handed over, close and rename every file (also when
        the writer failed: what it wrote stays readable), and return the counters."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        elif not self.stopped:
            try:
                self._drain()
            except OSError as exc:
                self._fail(exc)
        c = self.counters
        if not self.stopped and c[GAP]:
            try:
                self._write_gap(int(c[GAP]))  # blocks dropped at the very end: keep the timeline
            except OSError as exc:
                self._fail(exc)
        for t in self._tracks:
            try:
                t.close()
            except OSError as exc:
                self.error = self.error or f"cannot close {t.path}: {disk_words(exc, self.folder)}"
        return self.summary()

    def write_session(self, data: dict) -> str | None:
        """``session.json`` (the space kept for it released first); returns None, or why it could not be
        written (nothing half-written is left)."""
        try:
            os.remove(self._reserve)
        except OSError:
            pass
        path = os.path.join(self.folder, SESSION_FILE)
        try:
            write_json(path, data)
        except OSError as exc:
            return f"cannot write {path}: {disk_words(exc, self.folder)}"
        return None

    def write_start(self, data: dict) -> None:
        """``session.json`` as the show starts (``stopped_by`` null): what a take a killed run leaves
        behind is then known. Best effort: the final one follows."""
        try:
            write_json(os.path.join(self.folder, SESSION_FILE), data)
            self._wrote_session = True
        except OSError as exc:
            log.warning("cannot write %s in %s yet: %s", SESSION_FILE, self.folder, disk_words(exc, self.folder))

    def discard(self) -> None:
        """Remove everything this recorder created (a session that never started to play)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
        for t in self._tracks:
            try:
                t.discard()
            except OSError:
                pass
        for path in [self._reserve] + ([os.path.join(self.folder, SESSION_FILE)] if self._wrote_session else []):
            try:
                os.remove(path)
            except OSError:
                pass
        remove_empty_dirs(self._made)

    def summary(self) -> dict:
        c = self.counters
        frames = self.frames
        return {"folder": self.folder, "frames": frames, "seconds": frames / self.sample_rate,
                "dropped_blocks": int(c[DROPPED]), "dropped_frames": int(c[DROPPED_FRAMES]),
                "nonfinite_input": self.nonfinite, "error": self.error}


def write_json(path: str, data: dict) -> None:
    """``data`` as JSON at ``path``, written under a temporary name and renamed; nothing is left behind when
    it cannot be written (a full disk)."""
    tmp = os.path.join(os.path.dirname(path) or ".", f".{os.path.basename(path)}.partial")
    try:
        with open(tmp, "w") as fh:
            json.dump(data, fh, indent=2, default=float)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise
